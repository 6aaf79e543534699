"""Shared pytest fixtures."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for the whole module, restored afterwards.

    Used by the modules that compare bits with subprocesses or torchrun workers (which run on
    one thread: a matmul's reduction is split by thread count, so 2 threads give other bits)
    and by those running many tiny matmuls (faster and steadier on one thread on a shared
    machine). Modules opt in with ``pytestmark = [..., pytest.mark.usefixtures("one_thread")]``.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
