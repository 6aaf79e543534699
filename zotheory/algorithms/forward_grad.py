"""Forward-Grad (Baydin et al. 2022): SGD on the forward gradient ``<grad f(x), z> z``.

Pseudocode (Baydin, Pearlmutter, Syme, Wood & Torr 2022, Algorithm 1)::

    for t = 0, 1, ..., T - 1:
        draw z^t ~ N(0, I); draw xi^t
        d^t = <grad f(x^t, xi^t), z^t>          (one forward-mode jvp, no backprop)
        g^t = d^t z^t                           (the forward gradient, unbiased)
        x^{t+1} = x^t - gamma g^t

Symbols -> arguments

==========  ===============================================================
paper       code
==========  ===============================================================
eta         ``step(..., gamma=)``
v (dir.)    ``z`` (Gaussian, regenerated from one seed per step, or ``z=``)
d           ``DirectionEstimate.scale`` (``estimators.forward_grad``)
f           ``fn(x) = oracle.value(x)``, which must be differentiable by ``torch.func.jvp``
==========  ===============================================================

Citation: A. G. Baydin, B. A. Pearlmutter, D. Syme, F. Wood, P. Torr, "Gradients
without Backpropagation", arXiv:2202.08587 (2022).

Deviations
----------
None. (It is not a zero-order method: it needs forward-mode derivatives of the
oracle, one jvp per step, and no ``tau``.)
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
    check_finite_values,
    dense_direction,
    direction_draw,
    move,
)

__all__ = ["ForwardGradState", "init", "update", "step"]


@dataclass
class ForwardGradState:
    param: ParamSpec
    step: int = 0
    batch_dims: int = 0


def init(x: torch.Tensor, *, batch_dims: int = 0) -> ForwardGradState:
    check_batch_dims(x, batch_dims)
    return ForwardGradState(param=ParamSpec.of(x), step=0, batch_dims=batch_dims)


def update(
    estimate: DirectionEstimate, state: ForwardGradState, *, inplace: bool = False
) -> tuple[torch.Tensor, ForwardGradState]:
    """Direction ``<grad f, z> z`` (the estimate itself)."""
    direction = dense_direction(estimate, state.param)
    return direction, dataclasses.replace(state, step=state.step + 1)


def step(
    x: torch.Tensor,
    oracle,
    state: ForwardGradState,
    *,
    gamma: float | torch.Tensor,
    generator: torch.Generator | None = None,
    batch_dims: int = 0,
    seed: int | None = None,
    z: torch.Tensor | None = None,
    inplace: bool = True,
) -> ForwardGradState:
    """One Forward-Grad iteration (one jvp of ``oracle.value``); ``x`` moved in place."""
    from .. import estimators

    check_direction_step(x, state, gamma, None, batch_dims)
    seed = direction_draw(generator, seed, z)
    est = estimators.forward_grad(oracle.value, x, seed=seed, z=z, batch_dims=batch_dims)
    check_finite_values("forward gradient <grad f(x), z>", est.scale)
    direction, new_state = update(est, state, inplace=inplace)
    move(x, gamma, direction, batch_dims)
    return new_state
