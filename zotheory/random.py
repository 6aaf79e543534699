"""Explicit random draws: generators and coordinate sampling.

Library code never touches the global RNG: every draw comes from a
``torch.Generator`` passed in (see ``docs/architecture.md``, "Randomness").

* :func:`make_generator` -- a seeded generator on a device.
* :func:`sample_coordinates` -- ``k`` distinct flat indices per run, uniformly.
  For ``k == 1`` it is *exactly* ``torch.randint(0, numel, (*batch_shape, 1),
  generator=generator, device=device)``: the literal reference loops draw the
  same way, so fast and literal code consume the same stream.

  For ``k > 1`` it uses a deterministic rejection scheme that never materialises
  a permutation of ``numel`` (``numel`` may be ~1e8): draw ``k`` indices
  uniformly with replacement, then repeatedly redraw every position that repeats
  a value held by an earlier position, until the ``k`` values are distinct.
  The scheme decides what to redraw from positions and equalities only, so it
  commutes with any relabelling of ``{0, ..., numel - 1}``; the resulting set is
  therefore uniform over the ``k``-subsets and each index is marginally uniform.
  When ``2k > numel`` rejection would be slow (coupon collecting), so the indices
  are the first ``k`` entries of an argsort of ``numel`` float64 uniform keys
  (a uniformly random ordered ``k``-subset; here ``numel < 2k`` is small).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from ._checks import check_int_at_least

__all__ = ["make_generator", "sample_coordinates"]

_MAX_SEED = 2**64 - 1


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed`` (an integer in [0, 2**64))."""
    seed = check_int_at_least("seed", seed, 0)
    if seed > _MAX_SEED:
        raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def _check_batch_shape(batch_shape: Sequence[int]) -> tuple[int, ...]:
    try:
        shape = tuple(batch_shape)
    except TypeError:
        raise ValueError(f"batch_shape must be a tuple of integers >= 0, got {batch_shape!r}") from None
    out = []
    for n in shape:
        out.append(check_int_at_least("batch_shape entries", n, 0))
    return tuple(out)


def sample_coordinates(
    numel: int,
    k: int,
    generator: torch.Generator,
    batch_shape: Sequence[int] = (),
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """``k`` distinct indices in ``[0, numel)`` per run, drawn uniformly from ``generator``.

    Returns a ``LongTensor`` of shape ``(*batch_shape, k)``; each of the
    ``prod(batch_shape)`` rows holds ``k`` distinct indices (a uniform ``k``-subset,
    see the module docstring for the scheme). ``k == 1`` is exactly
    ``torch.randint(0, numel, (*batch_shape, 1), generator=generator, device=device)``.
    Same generator state -> same indices.
    """
    numel = check_int_at_least("numel", numel, 1)
    k = check_int_at_least("k", k, 1)
    if k > numel:
        raise ValueError(f"k must be in [1, numel={numel}], got {k}")
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    batch_shape = _check_batch_shape(batch_shape)

    if k == 1:
        return torch.randint(0, numel, (*batch_shape, 1), generator=generator, device=device)

    runs = math.prod(batch_shape)
    if 2 * k > numel:
        # Dense regime (numel < 2k is small): random float64 keys, ties practically impossible.
        keys = torch.rand((runs, numel), generator=generator, device=device, dtype=torch.float64)
        idx = keys.argsort(dim=-1, stable=True)[:, :k]
        return idx.reshape(*batch_shape, k)

    idx = torch.randint(0, numel, (runs, k), generator=generator, device=device)
    while True:
        # A position is a duplicate when an earlier position (stable sort keeps
        # position order among equal values) holds the same value.
        ordered, order = idx.sort(dim=-1, stable=True)
        dup_sorted = torch.zeros_like(ordered, dtype=torch.bool)
        dup_sorted[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
        dup = torch.zeros_like(dup_sorted).scatter_(1, order, dup_sorted)
        n_dup = int(dup.sum())
        if n_dup == 0:
            break
        idx[dup] = torch.randint(0, numel, (n_dup,), generator=generator, device=device)
    return idx.reshape(*batch_shape, k)
