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
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..estimates import DirectionEstimate
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


def init(x: torch.Tensor, *, batch_dims: int = 0) -> ZOSGDState:
    check_batch_dims(x, batch_dims)
    return ZOSGDState(param=ParamSpec.of(x), step=0, batch_dims=batch_dims)


def update(
    estimate: DirectionEstimate, state: ZOSGDState, *, inplace: bool = False
) -> tuple[torch.Tensor, ZOSGDState]:
    """Direction ``g z`` (the estimate itself); the state only counts steps."""
    direction = dense_direction(estimate, state.param)
    return direction, dataclasses.replace(state, step=state.step + 1)


def step(
    x: torch.Tensor,
    oracle,
    state: ZOSGDState,
    *,
    gamma: float | torch.Tensor,
    tau: float | torch.Tensor,
    generator: torch.Generator | None = None,
    batch_dims: int = 0,
    seed: int | None = None,
    z: torch.Tensor | None = None,
    inplace: bool = True,
) -> ZOSGDState:
    """One ZO-SGD iteration on ``x`` (moved in place); 2 oracle calls."""
    from .. import estimators

    check_direction_step(x, state, gamma, tau, batch_dims)
    seed = direction_draw(generator, seed, z)
    estimate = estimators.gaussian_two_point(
        x, lambda: oracle.value(x), tau, seed=seed, z=z, batch_dims=batch_dims
    )
    direction, new_state = update(estimate, state, inplace=inplace)
    move(x, gamma, direction, batch_dims)
    return new_state
