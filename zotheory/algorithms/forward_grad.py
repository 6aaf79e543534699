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

Lists of tensors (a model's parameters, :mod:`zotheory.algorithms._lists`): ``oracle`` is
then a *functional* ``fn(params) -> loss`` that takes the tuple of tensors (the jvp needs
the parameters as inputs, not as state); one jvp along ``z`` over the whole list, then per
tensor the update and the move (``gamma`` / ``weight_decay`` per tensor, as parameter
groups give them). For a model, ``torch.func.functional_call`` makes such an ``fn``
(``zotheory.llm.scoring.functional_loss``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from typing import Any, Sequence

import torch

from ..estimates import DirectionEstimate
from . import _lists
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


def init(x: torch.Tensor | Sequence[torch.Tensor], *, batch_dims: int = 0) -> Any:
    if _lists.is_list(x):
        return _lists.init_states(x, init)
    check_batch_dims(x, batch_dims)
    return ForwardGradState(param=ParamSpec.of(x), step=0, batch_dims=batch_dims)


def update(
    estimate: DirectionEstimate, state: ForwardGradState, *, inplace: bool = False
) -> tuple[torch.Tensor, ForwardGradState]:
    """Direction ``<grad f, z> z`` (the estimate itself)."""
    direction = dense_direction(estimate, state.param)
    return direction, dataclasses.replace(state, step=state.step + 1)


def step(
    x: torch.Tensor | Sequence[torch.Tensor],
    oracle,
    state: Any,
    *,
    gamma: float | torch.Tensor | Sequence[float],
    generator: torch.Generator | None = None,
    weight_decay: float | torch.Tensor | Sequence[float] = 0.0,
    batch_dims: int = 0,
    seed: int | None = None,
    z: torch.Tensor | Sequence[torch.Tensor] | None = None,
    inplace: bool = True,
) -> Any:
    """One Forward-Grad iteration (one jvp of ``oracle.value``, or of ``oracle`` itself for a
    list); ``x`` moved in place."""
    from .. import estimators

    fn = getattr(oracle, "value", oracle)
    if not callable(fn):
        raise ValueError(f"oracle must be a functional fn(x) or have a value(x) method, got {type(oracle).__name__}")
    if _lists.is_list(x):
        xs, states, gammas, decay = _lists.prologue(x, state, gamma, weight_decay, batch_dims)
        seed = direction_draw(generator, seed, z)
        est = estimators.forward_grad(fn, xs, seed=seed, z=z)
        check_finite_values("forward gradient <grad f(x), z>", est.scale)
        return _lists.apply_directions(
            xs, states, [est], lambda i, t, e, s: (t, *update(e[0], s, inplace=True)),
            gamma=gammas, weight_decay=decay, elementwise=True)
    check_direction_step(x, state, gamma, None, batch_dims, weight_decay)
    seed = direction_draw(generator, seed, z)
    est = estimators.forward_grad(fn, x, seed=seed, z=z, batch_dims=batch_dims)
    check_finite_values("forward gradient <grad f(x), z>", est.scale)
    direction, new_state = update(est, state, inplace=inplace)
    move(x, gamma, direction, batch_dims, weight_decay)
    return new_state
