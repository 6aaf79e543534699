"""ZO-SignSGD (Liu, Chen, Chen & Hong, ICLR 2019): the sign of a zero-order gradient estimate.

Pseudocode (Liu et al. 2019, Algorithm 1, unconstrained, with the estimate this
library uses)::

    for t = 0, 1, ..., T - 1:
        draw q directions z^{t,1..q} ~ N(0, I_d); draw xi^t
        g_hat^t = (1/q) sum_j  (f^(x^t + tau z^{t,j}, xi^t) - f^(x^t - tau z^{t,j}, xi^t)) / (2 tau) * z^{t,j}
        x^{t+1} = x^t - gamma * sign(g_hat^t)            (coordinate-wise, sign(0) = 0)

Symbols -> arguments

===============  =============================================================
paper            code
===============  =============================================================
delta_k (step)   ``step(..., gamma=)``
mu (smoothing)   ``step(..., tau=)``
q (directions)   ``step(..., queries=)``, default 1 (one estimate per step, 2 calls)
b (mini-batch)   the ``oracle`` (one xi^t per iteration)
u_{i,j}          ``z`` (Gaussian, regenerated from one seed per query)
===============  =============================================================

Citation: S. Liu, P.-Y. Chen, X. Chen, M. Hong, "signSGD via Zeroth-Order Oracle",
ICLR 2019.

Deviations
----------
* Estimator: Liu et al. use the forward difference with directions uniform on the
  unit sphere, ``(d / mu) (f(x + mu u) - f(x)) u``. This module uses the two-point
  central Gaussian estimate (MeZO's), as the ZO-Bench of Zhang et al. (2024,
  arXiv:2402.11592) does for its ZO-SignSGD and as the paper's ZO-SGD does. The sign
  removes the positive factor ``d`` and the radial part of ``z`` only to first order
  in ``tau``, so this is an interpretation, stated here.
* ``queries = 1`` by default (one estimate per step, 2 oracle calls); ``queries = q``
  averages q estimates on the same xi^t (2q calls), their ``q``.

Lists of tensors (a model's parameters, :mod:`zotheory.algorithms._lists`): one estimate
over the whole list (``z`` regenerated tensor by tensor from the step's seed), then per
tensor the update and the move, with that tensor's ``gamma`` / ``weight_decay`` when they
are given per tensor. ``restore`` is the estimator's (``"saved"``: bitwise; ``"regenerate"``:
MeZO's walk, no copy); ``weight_decay`` is MeZO's decoupled weight decay in the move.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import torch

from .._checks import check_int_at_least
from ..estimates import DirectionEstimate
from typing import Any

from .._checks import check_positive
from . import _lists
from ._zo_common import (
    ParamSpec,
    check_batch_dims,
    check_direction_step,
    dense_direction,
    draw_seed,
    move,
    require_generator,
)

__all__ = ["ZOSignSGDState", "init", "update", "step"]


@dataclass
class ZOSignSGDState:
    param: ParamSpec
    step: int = 0
    batch_dims: int = 0


def init(x: torch.Tensor | Sequence[torch.Tensor], *, batch_dims: int = 0) -> Any:
    if _lists.is_list(x):
        return _lists.init_states(x, init)
    check_batch_dims(x, batch_dims)
    return ZOSignSGDState(param=ParamSpec.of(x), step=0, batch_dims=batch_dims)


def update(
    estimate: DirectionEstimate | Sequence[DirectionEstimate],
    state: ZOSignSGDState,
    *,
    inplace: bool = False,
) -> tuple[torch.Tensor, ZOSignSGDState]:
    """``sign(mean_j g_j z_j)`` over the ``q`` estimates given (one estimate: q = 1)."""
    estimates = [estimate] if isinstance(estimate, DirectionEstimate) else list(estimate)
    if not estimates:
        raise ValueError("estimate must be a DirectionEstimate or a non-empty sequence of them")
    g_hat = dense_direction(estimates[0], state.param).clone()
    for e in estimates[1:]:
        g_hat += dense_direction(e, state.param)
    g_hat /= len(estimates)
    return torch.sign(g_hat), dataclasses.replace(state, step=state.step + 1)


def step(
    x: torch.Tensor | Sequence[torch.Tensor],
    oracle,
    state: Any,
    *,
    gamma: float | torch.Tensor | Sequence[float],
    tau: float | torch.Tensor,
    generator: torch.Generator | None = None,
    queries: int = 1,
    restore: str = "saved",
    weight_decay: float | torch.Tensor | Sequence[float] = 0.0,
    batch_dims: int = 0,
    seed: int | Sequence[int] | None = None,
    z: torch.Tensor | Sequence[torch.Tensor] | None = None,
    inplace: bool = True,
) -> Any:
    """One ZO-SignSGD iteration (2 * queries oracle calls); ``x`` moved in place.

    Explicit draws: ``seed`` (an int for ``queries=1`` or ``queries`` ints) or ``z``
    (a tensor for ``queries=1`` or ``queries`` tensors). Otherwise ``queries`` seeds
    are drawn from ``generator``, in order.
    """
    from .. import estimators

    listed = _lists.is_list(x)
    if listed:
        x, state, gamma, decay = _lists.prologue(x, state, gamma, weight_decay, batch_dims)
        check_positive("tau", tau)
    else:
        check_direction_step(x, state, gamma, tau, batch_dims, weight_decay)
    q = check_int_at_least("queries", queries, 1)
    if seed is not None and z is not None:
        raise ValueError("give at most one of seed and z")
    seeds: list[int | None]
    zs: list[torch.Tensor | None]
    if z is not None:
        zs = [z] if isinstance(z, torch.Tensor) else list(z)
        seeds = [None] * len(zs)
    elif seed is not None:
        seeds = [int(seed)] if isinstance(seed, int) else [int(s) for s in seed]
        zs = [None] * len(seeds)
    else:
        gen = require_generator(generator, "seed or z")
        seeds = [draw_seed(gen) for _ in range(q)]
        zs = [None] * q
    if len(seeds) != q:
        raise ValueError(f"queries={q} needs {q} explicit seeds or directions, got {len(seeds)}")
    closure = _lists.closure_of(oracle, x)
    ests = [
        estimators.gaussian_two_point(x, closure, tau, seed=s, z=zz, batch_dims=batch_dims, restore=restore)
        for s, zz in zip(seeds, zs)
    ]
    if listed:
        return _lists.apply_directions(
            x, state, ests, lambda i, t, e, s: (t, *update(e, s, inplace=True)),
            gamma=gamma, weight_decay=decay, elementwise=True)
    direction, new_state = update(ests, state, inplace=inplace)
    move(x, gamma, direction, batch_dims, weight_decay)
    return new_state
