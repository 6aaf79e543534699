"""ZO-SGD (MeZO): SGD on the two-point Gaussian estimate.

Pseudocode (Ghadimi & Lan 2013, in the two-point central form MeZO uses)::

    for t = 0, 1, ..., T - 1:
        draw z^t ~ N(0, I_d) (MeZO: draw a seed s_t and regenerate z^t from it); draw xi^t
        g^t = ( f^(x^t + tau z^t, xi^t) - f^(x^t - tau z^t, xi^t) ) / (2 tau)     (a scalar)
        x^{t+1} = x^t - gamma * g^t z^t

Symbols -> arguments

==========  ================================================================
paper       code
==========  ================================================================
gamma       ``step(..., gamma=)`` (number or per-run tensor)
tau (eps)   ``step(..., tau=)``, > 0 (MeZO calls it epsilon)
z^t         regenerated from ``seed`` (drawn with ``_zo_common.draw_seed(generator)``,
            one draw per step) or given as ``z=``
g^t         ``DirectionEstimate.scale``
==========  ================================================================

Citations: S. Ghadimi, G. Lan, "Stochastic First- and Zeroth-Order Methods for
Nonconvex Stochastic Programming", SIAM J. Optim. 23(4), 2013; S. Malladi, T. Gao,
E. Nichani, A. Damian, J. D. Lee, D. Chen, S. Arora, "Fine-Tuning Language Models
with Just Forward Passes" (MeZO), NeurIPS 2023.

Deviations
----------
None. (Ghadimi & Lan's RSGF uses the forward difference ``(f(x + mu u) - f(x)) / mu``;
the two-point central form with Gaussian ``z`` is MeZO's, which is the ZO-SGD of the
paper's experiments. Parameters are restored from saved values, not by MeZO's
``+tau z, -2 tau z, +tau z``, which is bitwise only in exact arithmetic.) The direction
``g z`` is materialised once per step (MeZO fuses restore and update in one pass; the
result is the same).

Random stream: per step one seed ``s = draw_seed(generator)``, then ``z`` from
:func:`zotheory.directions.generate_directions` for that seed; the literal
:func:`zotheory.reference.zo_sgd.run` draws the same way.

Lists of tensors (a model's parameters, :mod:`zotheory.algorithms._lists`): one estimate
over the whole list (``z`` regenerated tensor by tensor from the step's seed), then per
tensor the update and the move, with that tensor's ``gamma`` / ``weight_decay`` when they
are given per tensor. ``restore`` is the estimator's (``"saved"``: bitwise; ``"regenerate"``:
MeZO's walk, no copy); ``weight_decay`` is MeZO's decoupled weight decay in the move.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from .._checks import check_positive
from ..estimates import DirectionEstimate
from typing import Any, Sequence

from . import _lists
from ._zo_common import (
    ParamSpec,
    check_batch_dims,
    check_direction_step,
    dense_direction,
    direction_draw,
    move,
)

__all__ = ["ZOSGDState", "init", "update", "step"]


@dataclass
class ZOSGDState:
    """No buffers: ``param`` (shape/dtype for regenerating ``z``), ``step``, ``batch_dims``."""

    param: ParamSpec
    step: int = 0
    batch_dims: int = 0


def init(x: torch.Tensor | Sequence[torch.Tensor], *, batch_dims: int = 0) -> Any:
    if _lists.is_list(x):
        return _lists.init_states(x, init)
    check_batch_dims(x, batch_dims)
    return ZOSGDState(param=ParamSpec.of(x), step=0, batch_dims=batch_dims)


def update(
    estimate: DirectionEstimate, state: ZOSGDState, *, inplace: bool = False
) -> tuple[torch.Tensor, ZOSGDState]:
    """Direction ``g z`` (the estimate itself); the state only counts steps."""
    direction = dense_direction(estimate, state.param)
    return direction, dataclasses.replace(state, step=state.step + 1)


def step(
    x: torch.Tensor | Sequence[torch.Tensor],
    oracle,
    state: Any,
    *,
    gamma: float | torch.Tensor | Sequence[float],
    tau: float | torch.Tensor,
    generator: torch.Generator | None = None,
    restore: str = "saved",
    weight_decay: float | torch.Tensor | Sequence[float] = 0.0,
    batch_dims: int = 0,
    seed: int | None = None,
    z: torch.Tensor | Sequence[torch.Tensor] | None = None,
    inplace: bool = True,
) -> Any:
    """One ZO-SGD iteration on ``x`` (a tensor or a list, moved in place); 2 oracle calls."""
    from .. import estimators

    if _lists.is_list(x):
        xs, states, gammas, decay = _lists.prologue(x, state, gamma, weight_decay, batch_dims)
        check_positive("tau", tau)
        seed = direction_draw(generator, seed, z)
        est = estimators.gaussian_two_point(xs, _lists.closure_of(oracle, xs), tau, seed=seed, z=z, restore=restore)
        return _lists.apply_directions(
            xs, states, [est], lambda i, t, e, s: (t, *update(e[0], s, inplace=True)),
            gamma=gammas, weight_decay=decay, elementwise=True)
    check_direction_step(x, state, gamma, tau, batch_dims, weight_decay)
    seed = direction_draw(generator, seed, z)
    estimate = estimators.gaussian_two_point(
        x, _lists.closure_of(oracle, x), tau, seed=seed, z=z, batch_dims=batch_dims, restore=restore
    )
    direction, new_state = update(estimate, state, inplace=inplace)
    move(x, gamma, direction, batch_dims, weight_decay)
    return new_state
