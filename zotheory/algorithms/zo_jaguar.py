"""ZO-Jaguar: seed 004's earlier variant (row perturbation, sign * tau memory). Not Algorithm 1.

Pseudocode (seed 004, "Algorithm 1 Zeroth-Order Jaguar (ZO-Jaguar)")::

    Parameters: smoothing parameter tau, step size gamma, number of iterations T.
    Initialization: generate X^0 ~ N(0, I_{n x d})
    for t in 1, ..., T:
        Generate i ~ U[1, n]
        z_+ = X^t;  (z_+)_i = X^t_i + tau * 1^d        (the whole row i moved by +tau)
        z_- = X^t;  (z_-)_i = X^t_i - tau * 1^d
        grad^{t+1} = grad^t                              (persistent estimate)
        (grad^{t+1})_i = sign(f(z_+) - f(z_-)) * tau * 1^d
        X^{t+1} = X^t - gamma * grad^{t+1}

Symbols -> arguments

==============  ==============================================================
seed 004        code
==============  ==============================================================
X (n x d)       ``x`` of shape ``(*batch, n, d)``
i               the row drawn by ``estimators.jaguar_row`` (``step(..., row=)``)
tau             ``step(..., tau=)`` / ``update(..., tau=)``
gamma           ``step(..., gamma=)``
grad^t          ``ZOJaguarState.estimate`` (dense, shape of ``x``; starts at 0)
==============  ==============================================================

Source: the earlier draft of the paper (seed 004; E. Petrov, G. Evseev, A. Veprikov,
A. Beznosikov). Kept as a named variant: it differs from Algorithm 1 (a whole row
per step, no momentum average, the *sign* of the difference times ``tau`` is stored).

Note on scale: every stored entry has magnitude ``tau`` (or 0), so each step moves
every touched entry by ``gamma * tau``: ``gamma`` and ``tau`` act only through their
product on the step length (``tau`` additionally sets the finite-difference width).

Deviations
----------
None in the update. The pseudocode's ``X^0 ~ N(0, I)`` is the problem's starting
point, chosen by the caller (the kernel takes any ``x``). ``sign(f_+ - f_-)`` is
taken of the estimator's value ``(f_+ - f_-) / (2 tau)``, which has the same sign.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from .._checks import check_choice, check_positive
from ..estimates import COORDINATE_MODES, CoordinateEstimate
from ._zo_common import batch_shape, check_batch_dims, move, per_run, require_generator

__all__ = ["ZOJaguarState", "init", "update", "step"]


@dataclass
class ZOJaguarState:
    estimate: torch.Tensor  # grad^t, shape of x
    step: int = 0
    batch_dims: int = 0


def init(x: torch.Tensor, *, batch_dims: int = 0) -> ZOJaguarState:
    """``grad^0 = 0``; ``x`` must be ``(*batch, n, d)``."""
    check_batch_dims(x, batch_dims, min_event_dims=2)
    if x.ndim - batch_dims != 2:
        raise ValueError(
            f"x must have 2 dimensions (n, d) after {batch_dims} batch dimension(s), "
            f"got shape {tuple(x.shape)}"
        )
    dtype = torch.promote_types(x.dtype, torch.float32)
    return ZOJaguarState(torch.zeros(x.shape, dtype=dtype, device=x.device), 0, batch_dims)


def update(
    estimate: CoordinateEstimate,
    state: ZOJaguarState,
    *,
    tau: float | torch.Tensor,
    inplace: bool = False,
) -> tuple[torch.Tensor, ZOJaguarState]:
    """Write ``sign(value) * tau`` at the estimate's indices; the direction is the whole
    persistent estimate. The returned direction *is* ``new_state.estimate`` (not a copy):
    do not modify it."""
    if not isinstance(estimate, CoordinateEstimate):
        raise ValueError(f"estimate must be a CoordinateEstimate, got {type(estimate).__name__}")
    check_choice("estimate.mode", estimate.mode, COORDINATE_MODES)
    check_positive("tau", tau)
    buf = state.estimate if inplace else state.estimate.clone()
    batch = batch_shape(buf, state.batch_dims)
    flat = buf.view(*batch, -1)
    idx = estimate.indices
    if idx.shape[:-1] != torch.Size(batch):
        raise ValueError(
            f"estimate.indices must have shape (*batch_shape, k) with batch_shape={batch}, "
            f"got {tuple(idx.shape)}"
        )
    t = per_run("tau", tau, batch, 1, flat)
    flat.scatter_(-1, idx, torch.sign(estimate.values.to(flat.dtype)) * t)
    return buf, dataclasses.replace(state, estimate=buf, step=state.step + 1)


def step(
    x: torch.Tensor,
    oracle,
    state: ZOJaguarState,
    *,
    gamma: float | torch.Tensor,
    tau: float | torch.Tensor,
    generator: torch.Generator | None = None,
    batch_dims: int = 0,
    row: torch.Tensor | int | None = None,
    inplace: bool = True,
) -> ZOJaguarState:
    """One ZO-Jaguar iteration (2 oracle calls); ``x`` moved in place."""
    from .. import estimators

    check_batch_dims(x, batch_dims, min_event_dims=2)
    if state.estimate.shape != x.shape or state.batch_dims != batch_dims:
        raise ValueError(
            f"state does not match x: estimate shape {tuple(state.estimate.shape)} with "
            f"batch_dims={state.batch_dims}, x shape {tuple(x.shape)} with batch_dims={batch_dims}"
        )
    check_positive("gamma", gamma)
    check_positive("tau", tau)
    if row is None:
        require_generator(generator, "row")
    est = estimators.jaguar_row(
        x, lambda: oracle.value(x), tau, generator=generator, row=row, batch_dims=batch_dims
    )
    direction, new_state = update(est, state, tau=tau, inplace=inplace)
    move(x, gamma, direction, batch_dims)
    return new_state
