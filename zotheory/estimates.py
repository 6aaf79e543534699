"""What an estimator returns: the objects that flow from estimators into update rules.

Two shapes of zero-order information exist in this library:

* :class:`CoordinateEstimate` -- finite-difference values at sampled coordinates
  (JAGUAR's single coordinate, k coordinates, the authors' block mode, seed 004's
  row mode). Nothing dense is stored: ``indices`` and ``values`` only.
* :class:`DirectionEstimate` -- a scalar times a random direction ``z`` (Gaussian
  two-point / MeZO, sphere, Rademacher, forward difference, Forward-Grad).
  ``z`` is regenerated from ``seed`` (the MeZO seed trick) and never stored,
  unless a caller supplied it explicitly (tests, or the batched synthetic runner).

Index convention
----------------
``indices`` are *flat* indices into the parameter's event space: for a single
tensor of shape ``(*batch, *event)`` they index ``x.reshape(*batch, -1)`` along
the last dimension; for a list of tensors they index the concatenation of the
tensors' flattenings, in list order (use :func:`split_coordinates` to map them
back to per-tensor indices).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

COORDINATE_MODES = ("coordinate", "block", "row")
DIRECTION_DISTRIBUTIONS = ("gaussian", "sphere", "rademacher")


@dataclass(frozen=True)
class CoordinateEstimate:
    """Finite-difference values at sampled coordinates.

    Attributes
    ----------
    indices:
        ``LongTensor`` of shape ``(*batch, k)``: flat coordinate indices (see module doc).
    values:
        Tensor of shape ``(*batch, k)``: the estimate of ``partial_i f`` at each index.
        In ``coordinate`` mode each entry is its own central difference
        ``(f(x + tau e_i) - f(x - tau e_i)) / (2 tau)``; in ``block`` and ``row``
        mode every entry holds the same scalar (one joint perturbation).
    mode:
        ``"coordinate"``, ``"block"`` or ``"row"``.
    oracle_calls:
        Number of oracle evaluations spent (per run, for batched estimates).
    """

    indices: torch.Tensor
    values: torch.Tensor
    mode: str = "coordinate"
    oracle_calls: int = 2

    @property
    def k(self) -> int:
        return int(self.indices.shape[-1])


@dataclass(frozen=True)
class DirectionEstimate:
    """``scale * z`` for a random direction ``z``.

    Attributes
    ----------
    scale:
        Tensor of shape ``batch`` (``()`` for one run): the scalar multiplying ``z``,
        e.g. ``(f(x + tau z) - f(x - tau z)) / (2 tau)`` for the Gaussian two-point
        estimate, ``d * (...)`` for the sphere estimate, the jvp value for Forward-Grad.
    distribution:
        ``"gaussian"``, ``"sphere"`` or ``"rademacher"``.
    seed:
        Seed from which ``z`` is regenerated (MeZO's trick), or ``None`` when ``z``
        was supplied explicitly.
    z:
        The explicit direction (a tensor, or a tuple of tensors for a parameter list)
        when it was supplied by the caller; ``None`` when it is regenerated from ``seed``.
    batch_dims:
        Number of leading batch dimensions of the parameter the estimate is for.
    oracle_calls:
        Oracle evaluations spent (per run).
    """

    scale: torch.Tensor
    distribution: str = "gaussian"
    seed: int | None = None
    z: torch.Tensor | tuple[torch.Tensor, ...] | None = None
    batch_dims: int = 0
    oracle_calls: int = 2

    def directions(self, like: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The direction ``z``, one tensor per parameter in ``like`` (regenerated if seeded)."""
        from .directions import generate_directions

        params = [like] if isinstance(like, torch.Tensor) else list(like)
        if self.z is not None:
            return [self.z] if isinstance(self.z, torch.Tensor) else list(self.z)
        if self.seed is None:
            raise ValueError("DirectionEstimate has neither seed nor z")
        return generate_directions(params, self.seed, self.distribution, batch_dims=self.batch_dims)

    def dense(self, like: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The estimate ``scale * z`` materialised, one tensor per parameter."""
        params = [like] if isinstance(like, torch.Tensor) else list(like)
        out = []
        for z in self.directions(params):
            s = self.scale.to(z.dtype).reshape(self.scale.shape + (1,) * (z.ndim - self.scale.ndim))
            out.append(s * z)
        return out


def group_by_tensor(flat: torch.Tensor, numels: Sequence[int]) -> list[tuple[int, torch.Tensor]]:
    """``[(p, positions), ...]``: for every tensor ``p`` that global flat indices ``flat`` (1-D,
    each in ``[0, sum(numels))``) fall in, the positions in ``flat`` of its indices, in input
    order, tensors in list order.

    One stable sort by owning tensor, then slices: ``O(k log k)`` for ``k`` indices instead of
    a mask per tensor (``O(tensors x k)``; a model has 1e2..1e3 tensors).
    """
    ends = torch.tensor([int(n) for n in numels], dtype=torch.long, device=flat.device).cumsum(0)
    owner = torch.searchsorted(ends, flat.long(), right=True)  # skips empty tensors (equal ends)
    if flat.numel() == 1:
        return [(int(owner[0]), torch.zeros(1, dtype=torch.long, device=flat.device))]
    order = torch.argsort(owner, stable=True)
    counts = torch.bincount(owner, minlength=len(numels)).tolist()
    groups, lo = [], 0
    for p, n in enumerate(counts):
        if n:
            groups.append((p, order[lo : lo + n]))
            lo += n
    return groups


def split_coordinates(
    estimate: CoordinateEstimate, numels: Sequence[int]
) -> list[CoordinateEstimate | None]:
    """Map a list-level coordinate estimate to one estimate per tensor.

    ``numels`` are the element counts of the tensors, in list order. Entry ``p``
    of the result holds the coordinates that fall in tensor ``p`` (indices local
    to that tensor's flattening) or ``None`` when none do. Only unbatched
    estimates (``indices.ndim == 1``) can be split.
    """
    if estimate.indices.ndim != 1:
        raise ValueError(
            f"split_coordinates needs an unbatched estimate, got indices of shape "
            f"{tuple(estimate.indices.shape)}"
        )
    offsets = [0]
    for n in numels:
        offsets.append(offsets[-1] + int(n))
    out: list[CoordinateEstimate | None] = [None] * len(numels)
    idx, values = estimate.indices, estimate.values
    keep = (idx >= 0) & (idx < offsets[-1])  # indices outside every tensor belong to none
    if not bool(keep.all()):
        idx, values = idx[keep], values[keep]
    if idx.numel() == 0:
        return out
    for p, pos in group_by_tensor(idx, numels):
        out[p] = CoordinateEstimate(
            indices=idx[pos] - offsets[p],
            values=values[pos],  # a copy: no result aliases the estimate
            mode=estimate.mode,
            oracle_calls=estimate.oracle_calls,
        )
    return out
