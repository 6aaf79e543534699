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

Lists of tensors (a model's parameters, :mod:`zotheory.algorithms._lists`): one row among
all the rows of all the tensors (``estimators.jaguar_row`` over the list: a tensor of rank
>= 2 has ``shape[0]`` rows, a vector is one row), written into that tensor's persistent
estimate; every tensor then moves by its own estimate (``gamma`` / ``weight_decay`` per
tensor when given so). State: one buffer the size of each tensor.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from typing import Any, Sequence

import torch

from .._checks import check_choice, check_nonnegative, check_positive
from ..estimates import COORDINATE_MODES, CoordinateEstimate, split_coordinates
from . import _lists
from ._zo_common import batch_shape, check_batch_dims, move, per_run, require_generator

__all__ = ["ZOJaguarState", "init", "update", "step"]


@dataclass
class ZOJaguarState:
    estimate: torch.Tensor  # grad^t, shape of x
    step: int = 0
    batch_dims: int = 0


def init(x: torch.Tensor | Sequence[torch.Tensor], *, batch_dims: int = 0) -> Any:
    """``grad^0 = 0``; ``x`` must be ``(*batch, n, d)`` (a list: any shapes, one state each)."""
    if _lists.is_list(x):
        return _lists.init_states(x, lambda t: ZOJaguarState(
            torch.zeros(t.shape, dtype=torch.promote_types(t.dtype, torch.float32), device=t.device), 0, 0))
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
    x: torch.Tensor | Sequence[torch.Tensor],
    oracle,
    state: Any,
    *,
    gamma: float | torch.Tensor | Sequence[float],
    tau: float | torch.Tensor,
    generator: torch.Generator | None = None,
    weight_decay: float | torch.Tensor | Sequence[float] = 0.0,
    batch_dims: int = 0,
    row: torch.Tensor | int | None = None,
    inplace: bool = True,
) -> Any:
    """One ZO-Jaguar iteration (2 oracle calls); ``x`` (a tensor or a list) moved in place."""
    from .. import estimators

    if _lists.is_list(x):
        xs, states, gammas, decay = _lists.prologue(x, state, gamma, weight_decay, batch_dims)
        check_positive("tau", tau)
        if row is None:
            require_generator(generator, "row")
        est = estimators.jaguar_row(xs, _lists.closure_of(oracle, xs), tau, generator=generator, row=row)
        out = []
        for i, piece in enumerate(split_coordinates(est, [t.numel() for t in xs])):
            s = states[i]
            if piece is None:  # no write: the direction is the persistent estimate as it is
                direction, s = s.estimate, dataclasses.replace(s, step=s.step + 1)
            else:
                direction, s = update(piece, s, tau=tau, inplace=True)
            move(xs[i], gammas[i], direction, 0, decay[i])
            out.append(s)
        return out

    check_batch_dims(x, batch_dims, min_event_dims=2)
    if state.estimate.shape != x.shape or state.batch_dims != batch_dims:
        raise ValueError(
            f"state does not match x: estimate shape {tuple(state.estimate.shape)} with "
            f"batch_dims={state.batch_dims}, x shape {tuple(x.shape)} with batch_dims={batch_dims}"
        )
    check_positive("gamma", gamma)
    check_positive("tau", tau)
    check_nonnegative("weight_decay", weight_decay)
    if row is None:
        require_generator(generator, "row")
    est = estimators.jaguar_row(
        x, _lists.closure_of(oracle, x), tau, generator=generator, row=row, batch_dims=batch_dims
    )
    direction, new_state = update(est, state, tau=tau, inplace=inplace)
    move(x, gamma, direction, batch_dims, weight_decay)
    return new_state
