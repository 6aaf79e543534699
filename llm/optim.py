"""Moved to :mod:`zotheory.optim` (the optimizers belong to the core; they import no transformers).

This module re-exports it so that ``from zotheory.llm.optim import ZOSGD`` keeps working.
"""

from zotheory.optim import *  # noqa: F401,F403
from zotheory.optim import __all__  # noqa: F401
