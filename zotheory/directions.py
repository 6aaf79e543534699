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

:func:`iter_direction_chunks` yields the same (unbatched) direction in flat pieces:
a large Gaussian tensor on the CPU is drawn in pieces of :data:`CHUNK` entries,
bitwise the whole draw, so a consumer that works piece by piece never holds one
tensor's worth of ``z``.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch

from ._checks import check_choice, check_int_at_least
from .estimates import DIRECTION_DISTRIBUTIONS

__all__ = ["generate_directions", "iter_directions", "iter_direction_chunks", "chunk_bounds", "CHUNK",
           "DIRECTION_DISTRIBUTIONS"]

# Entries per chunk of :func:`iter_direction_chunks` (4 MiB of float32).
CHUNK = 1 << 20


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


def _raw_pieces(
    params: list[torch.Tensor], seed: int, distribution: str, chunk: int | None = None
) -> Iterator[tuple[int, int, int, torch.Tensor]]:
    """Unnormalised draws from a fresh seeded generator: ``(index, lo, hi, z)`` in list order.

    ``z`` is the whole tensor (shape of the parameter, ``lo = 0, hi = numel``) unless
    ``chunk`` is given and the tensor is a large Gaussian one on the CPU: then flat pieces
    of :func:`chunk_bounds` (see :func:`iter_direction_chunks`).
    """
    device = params[0].device
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed))
    for i, p in enumerate(params):
        dtype = torch.promote_types(p.dtype, torch.float32)
        if chunk is not None and p.device == device and _chunkable(p, distribution, chunk):
            for lo, hi in chunk_bounds(p.numel(), chunk):
                yield i, lo, hi, torch.randn(hi - lo, generator=generator, device=device, dtype=dtype)
            continue
        if distribution == "rademacher":
            z = torch.randint(0, 2, p.shape, generator=generator, device=device, dtype=dtype)
            z.mul_(2).sub_(1)
        else:  # gaussian, and the sphere before normalisation
            z = torch.randn(p.shape, generator=generator, device=device, dtype=dtype)
        yield i, 0, p.numel(), (z if p.device == device else z.to(p.device))


def _raw(params: list[torch.Tensor], seed: int, distribution: str) -> Iterator[torch.Tensor]:
    """Unnormalised draws, one tensor per parameter, from a fresh seeded generator."""
    for _, _, _, z in _raw_pieces(params, seed, distribution):
        yield z


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


def chunk_bounds(numel: int, chunk: int | None = None) -> list[tuple[int, int]]:
    """``[(lo, hi), ...]`` covering ``range(numel)``: sizes a multiple of 16, the last one >= 16.

    Those are the pieces in which a CPU Gaussian draw can be made without changing a bit
    (see :func:`iter_direction_chunks`); a tensor of at most ``chunk`` entries is one piece.
    """
    chunk = max(16, (int(CHUNK if chunk is None else chunk) // 16) * 16)
    out = []
    lo = 0
    while lo < numel:
        hi = min(numel, lo + chunk)
        if hi < numel and numel - hi < 16:
            hi = numel
        out.append((lo, hi))
        lo = hi
    return out


def _chunkable(p: torch.Tensor, distribution: str, chunk: int) -> bool:
    return distribution == "gaussian" and p.device.type == "cpu" and p.numel() > chunk


def iter_direction_chunks(
    params: torch.Tensor | Sequence[torch.Tensor],
    seed: int,
    distribution: str,
    *,
    chunk: int | None = None,
) -> Iterator[tuple[int, int, int, torch.Tensor]]:
    """The direction of :func:`iter_directions` (unbatched), as ``(index, lo, hi, z_flat)`` pieces.

    ``z_flat`` holds entries ``lo:hi`` of ``z[index].reshape(-1)``, bitwise the same
    values :func:`iter_directions` gives, with peak memory one piece instead of one
    tensor. Gaussian tensors on the CPU of more than ``chunk`` entries are drawn piece by
    piece (:func:`chunk_bounds`): PyTorch's CPU ``normal_`` fills one uniform per entry in
    order and transforms blocks of 16 (recomputing the last 16 when the size is not a
    multiple of 16), so consecutive draws of such pieces from one generator are the
    draw of the whole tensor (``tests/test_bench_llm.py`` checks it). Every other
    tensor (other distributions, other devices, small tensors) is one piece, drawn
    whole. Each piece is a fresh tensor the caller may overwrite. ``chunk`` defaults to
    the module's :data:`CHUNK` at call time.
    """
    params_list, _ = _check(params, seed, distribution, 0)
    chunk = CHUNK if chunk is None else check_int_at_least("chunk", chunk, 16)
    if distribution == "sphere":
        for i, z in enumerate(iter_directions(params_list, seed, distribution)):
            yield i, 0, z.numel(), z.reshape(-1)
        return
    for i, lo, hi, z in _raw_pieces(params_list, seed, distribution, chunk):
        yield i, lo, hi, z.reshape(-1)
