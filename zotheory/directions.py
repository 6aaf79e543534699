"""Random directions regenerated from an integer seed (MeZO's seed trick).

A direction ``z`` for a list of parameter tensors is drawn from a *fresh*
``torch.Generator(device).manual_seed(seed)``, one tensor after another in list
order, so the same seed gives bitwise-identical tensors on every call (same
device, same dtypes). That is what lets the estimators and update rules never
store ``z``: they keep the seed and regenerate.

Distributions (``z`` has the dtype ``torch.promote_types(p.dtype, torch.float32)``):

* ``"gaussian"``: ``z ~ N(0, I)``, so ``E[z z^T] = I``.
* ``"rademacher"``: ``z`` uniform on ``{-1, +1}^d``, so ``E[z z^T] = I``.
* ``"sphere"``: ``z`` uniform on the unit sphere of the *whole* event space
  (all tensors together): Gaussian draws divided by their joint l2 norm, so
  ``E[z z^T] = I / d`` with ``d`` the total event numel. With ``batch_dims``
  leading batch dimensions the norm is taken per batch entry (per run).

With ``batch_dims > 0`` the tensors are drawn whole, ``(*batch, *event)`` at
once: run ``b`` of a batched draw is *not* the single-run draw with the same
seed (tests that compare batched and single runs pass ``z`` explicitly).
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch

from ._checks import check_choice, check_int_at_least
from .estimates import DIRECTION_DISTRIBUTIONS

__all__ = ["generate_directions", "iter_directions", "DIRECTION_DISTRIBUTIONS"]


def _check(
    params: torch.Tensor | Sequence[torch.Tensor], seed: int, distribution: str, batch_dims: int
) -> tuple[list[torch.Tensor], int]:
    params_list = [params] if isinstance(params, torch.Tensor) else list(params)
    if not params_list:
        raise ValueError("params must hold at least one tensor")
    for p in params_list:
        if not isinstance(p, torch.Tensor):
            raise ValueError(f"params must be tensors, got {type(p).__name__}")
    check_int_at_least("seed", seed, 0)
    check_choice("distribution", distribution, DIRECTION_DISTRIBUTIONS)
    batch_dims = check_int_at_least("batch_dims", batch_dims, 0)
    batch_shape = tuple(params_list[0].shape[:batch_dims])
    for p in params_list:
        if p.ndim < batch_dims or tuple(p.shape[:batch_dims]) != batch_shape:
            raise ValueError(
                f"batch_dims={batch_dims}: every tensor needs the leading shape {batch_shape}, "
                f"got {tuple(p.shape)}"
            )
    return params_list, batch_dims


def _raw(params: list[torch.Tensor], seed: int, distribution: str) -> Iterator[torch.Tensor]:
    """Unnormalised draws, one tensor per parameter, from a fresh seeded generator."""
    device = params[0].device
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed))
    for p in params:
        dtype = torch.promote_types(p.dtype, torch.float32)
        if distribution == "rademacher":
            z = torch.randint(0, 2, p.shape, generator=generator, device=device, dtype=dtype)
            z.mul_(2).sub_(1)
        else:  # gaussian, and the sphere before normalisation
            z = torch.randn(p.shape, generator=generator, device=device, dtype=dtype)
        yield z if p.device == device else z.to(p.device)


def iter_directions(
    params: torch.Tensor | Sequence[torch.Tensor],
    seed: int,
    distribution: str,
    *,
    batch_dims: int = 0,
) -> Iterator[torch.Tensor]:
    """Yield ``z`` one tensor at a time (peak memory: one tensor's worth of ``z``).

    Identical, tensor by tensor, to :func:`generate_directions`. For ``"sphere"``
    the draws are generated twice: once to accumulate the joint norm, once to yield.
    """
    params_list, batch_dims = _check(params, seed, distribution, batch_dims)
    if distribution != "sphere":
        yield from _raw(params_list, seed, distribution)
        return
    batch_shape = tuple(params_list[0].shape[:batch_dims])
    sq = torch.zeros(batch_shape, dtype=torch.float64, device=params_list[0].device)
    for z in _raw(params_list, seed, "gaussian"):
        sq = sq + z.reshape(*batch_shape, -1).double().pow(2).sum(-1).to(sq.device)
    norm = sq.sqrt()
    for z in _raw(params_list, seed, "gaussian"):
        n = norm.to(device=z.device, dtype=z.dtype)
        yield z / n.reshape(batch_shape + (1,) * (z.ndim - batch_dims))


def generate_directions(
    params: torch.Tensor | Sequence[torch.Tensor],
    seed: int,
    distribution: str,
    *,
    batch_dims: int = 0,
) -> list[torch.Tensor]:
    """The direction ``z`` for ``params`` (one tensor per parameter, same shapes).

    ``z`` is drawn from ``torch.Generator(device).manual_seed(seed)`` (``device``
    of the first tensor) in list order, in dtype ``promote_types(p.dtype, float32)``.
    ``distribution`` is one of ``"gaussian"``, ``"rademacher"``, ``"sphere"``
    (see the module docstring). Same seed -> bitwise-identical tensors.
    """
    return list(iter_directions(params, seed, distribution, batch_dims=batch_dims))
