"""Argument validation shared by every public function.

User input is checked with these helpers, never with ``assert``: each raises
``ValueError`` naming the offending argument, the value it got and the valid
range, e.g. ``ValueError: beta must be in [0, 1), got 1.0``.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Iterable

import torch


def _is_real(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        if value.numel() == 1:
            return repr(value.item())
        v = value.detach().double()
        return f"a tensor with values in [{v.min().item():g}, {v.max().item():g}]"
    return repr(value)


def _as_values(name: str, value: object) -> torch.Tensor:
    """Hyperparameters may be Python numbers or real tensors (one value per batched run)."""
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bool or value.is_complex() or value.numel() == 0:
            raise ValueError(f"{name} must be a real number or a non-empty real tensor, got {value!r}")
        return value.detach().double()
    if not _is_real(value):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    return torch.tensor(float(value), dtype=torch.float64)


def check_positive(name: str, value: object) -> object:
    """``value`` (a number, or a tensor of per-run values) must be finite and > 0."""
    v = _as_values(name, value)
    if not bool(torch.isfinite(v).all()) or not bool((v > 0).all()):
        raise ValueError(f"{name} must be a finite number > 0, got {_describe(value)}")
    return value


def check_nonnegative(name: str, value: object) -> object:
    """``value`` (a number, or a tensor of per-run values) must be finite and >= 0."""
    v = _as_values(name, value)
    if not bool(torch.isfinite(v).all()) or not bool((v >= 0).all()):
        raise ValueError(f"{name} must be a finite number >= 0, got {_describe(value)}")
    return value


def check_in_range(
    name: str,
    value: object,
    low: float,
    high: float,
    *,
    low_closed: bool = True,
    high_closed: bool = False,
) -> object:
    """``value`` (a number, or a tensor of per-run values) must lie in the interval."""
    interval = f"{'[' if low_closed else '('}{low:g}, {high:g}{']' if high_closed else ')'}"
    v = _as_values(name, value)
    if not bool(torch.isfinite(v).all()):
        raise ValueError(f"{name} must be a finite number in {interval}, got {_describe(value)}")
    ok_low = (v >= low) if low_closed else (v > low)
    ok_high = (v <= high) if high_closed else (v < high)
    if not bool((ok_low & ok_high).all()):
        raise ValueError(f"{name} must be in {interval}, got {_describe(value)}")
    return value


def check_int_at_least(name: str, value: object, low: int) -> int:
    """``value`` must be an integer >= ``low`` (bools are rejected)."""
    if not isinstance(value, Integral) or isinstance(value, bool) or int(value) < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def check_choice(name: str, value: object, choices: Iterable[str]) -> str:
    """``value`` must be one of ``choices``; the message lists them."""
    options = sorted(choices)
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return str(value)


def check_tensor_rank(name: str, tensor: torch.Tensor, rank: int, *, batch_dims: int = 0) -> None:
    """``tensor`` must have exactly ``rank`` non-batch dimensions."""
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    got = tensor.ndim - batch_dims
    if got != rank:
        raise ValueError(
            f"{name} must have {rank} dimension(s) after {batch_dims} batch dimension(s), "
            f"got shape {tuple(tensor.shape)}"
        )
