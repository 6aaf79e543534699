"""Bit-level tensor comparison for the tests (imported as ``from bitwise import ...``; pytest puts
``tests/`` on ``sys.path``)."""

from __future__ import annotations

import torch

#: The integer dtype of each float dtype's width: a float tensor viewed as it compares bit patterns.
INT_VIEW = {torch.float64: torch.int64, torch.float32: torch.int32, torch.bfloat16: torch.int16,
            torch.float16: torch.int16}


def bits(t: torch.Tensor) -> torch.Tensor:
    """A copy of ``t``'s bit patterns (so -0.0 != 0.0 and equal NaNs compare equal); an
    integer tensor (a sparse momentum's indices) as it is."""
    t = t.detach().clone()
    return t if not t.is_floating_point() else t.view(INT_VIEW[t.dtype])


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(bits(a), bits(b))
