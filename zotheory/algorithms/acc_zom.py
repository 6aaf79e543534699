"""Acc-ZOM (Huang, Gao, Pei & Huang, JMLR 2022): zero-order STORM-type momentum.

The paper's experiments table calls this baseline "ZO-SGD with momentum"; the
*published* Acc-ZOM is not heavy-ball momentum but the variance-reduced (STORM)
recursion below, which is what this module implements.

Pseudocode (Huang et al. 2022, Acc-ZOM, unconstrained, in this library's notation)::

    t = 0:   draw xi_0, z_0;  v_0 = g(x_0; xi_0, z_0);                     x_1 = x_0 - gamma_0 v_0
    t >= 1:  draw xi_t, z_t;
             v_t = g(x_t; xi_t, z_t) + (1 - alpha_t) (v_{t-1} - g(x_{t-1}; xi_t, z_t))
             x_{t+1} = x_t - gamma_t v_t

    g(x; xi, z) = ( f^(x + tau z, xi) - f^(x - tau z, xi) ) / (2 tau) * z

The two estimates of step t share the sample xi_t *and* the random direction z_t
(that coupling is what makes the correction term small). Cost: 4 oracle calls per
step (2 at t = 0); memory: ``v`` and ``x_{t-1}`` (two copies of the parameter).

Symbols -> arguments

====================  =====================================================
paper                 code
====================  =====================================================
gamma * eta_t         ``step(..., gamma=)`` (the paper's eta_t = k / (m + t)^{1/3}
                      and gamma are folded into one step size; pass a per-step value)
alpha_{t+1}           ``update(..., alpha=)``, in (0, 1] (paper: c eta_t^2; pass per step)
v_t                   ``AccZOMState.v``
x_{t-1}               ``AccZOMState.x_prev``
mu                    ``step(..., tau=)``
====================  =====================================================

Citation: F. Huang, S. Gao, J. Pei, H. Huang, "Accelerated Zeroth-Order and
First-Order Momentum Methods from Mini to Minimax Optimization", Journal of Machine
Learning Research 23, 2022.

Deviations
----------
* Estimator: the library's two-point central Gaussian estimate (as in ZO-SGD /
  MeZO) instead of the paper's smoothing estimator; the coupling (same xi_t, same
  z_t for both points) is kept. The momentum schedule (eta_t, alpha_t) is the
  caller's: constant or per-step values are passed in.
* To evaluate at ``x_{t-1}``, ``step`` writes ``x_{t-1}`` into ``x`` temporarily and
  restores ``x_t`` bitwise from a saved copy afterwards (also when the oracle
  raises), so the oracle always sees the live tensor ``x``. The estimate at ``x_t``
  is computed first, then the one at ``x_{t-1}``.

Lists of tensors (a model's parameters, :mod:`zotheory.algorithms._lists`): the two
estimates are taken over the whole list (the second with every tensor set to its
``x_{t-1}``, then written back bitwise), then per tensor the update and the move
(``gamma`` / ``alpha`` / ``weight_decay`` per tensor when given so). State per tensor:
``v`` and ``x_{t-1}`` (two copies of the tensor), plus one transient copy during a step.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from typing import Any, Sequence

import torch

from .._checks import check_in_range, check_positive
from ..estimates import DirectionEstimate
from . import _lists
from ._zo_common import (
    ParamSpec,
    batch_shape,
    check_batch_dims,
    check_direction_step,
    dense_direction,
    direction_draw,
    move,
    per_run,
)

__all__ = ["AccZOMState", "init", "update", "step"]


@dataclass
class AccZOMState:
    v: torch.Tensor  # v_{t-1}
    x_prev: torch.Tensor  # x_{t-1} (meaningful once step >= 1)
    param: ParamSpec
    step: int = 0
    batch_dims: int = 0


def init(x: torch.Tensor | Sequence[torch.Tensor], *, batch_dims: int = 0) -> Any:
    if _lists.is_list(x):
        return _lists.init_states(x, init)
    check_batch_dims(x, batch_dims)
    dtype = torch.promote_types(x.dtype, torch.float32)
    return AccZOMState(
        v=torch.zeros(x.shape, dtype=dtype, device=x.device),
        x_prev=x.detach().clone(),
        param=ParamSpec.of(x),
        step=0,
        batch_dims=batch_dims,
    )


def update(
    estimate: DirectionEstimate,
    state: AccZOMState,
    *,
    alpha: float | torch.Tensor,
    x: torch.Tensor,
    previous_estimate: DirectionEstimate | None = None,
    inplace: bool = False,
) -> tuple[torch.Tensor, AccZOMState]:
    """``v_t`` (the direction) and the new state.

    ``estimate`` is ``g(x_t; xi_t, z_t)``, ``previous_estimate`` is
    ``g(x_{t-1}; xi_t, z_t)`` (required when ``state.step >= 1``, ignored at
    ``step == 0`` where ``v_0 = g(x_0)``). ``x`` is the current iterate ``x_t``; it is
    stored (copied) as ``x_{t-1}`` for the next step and not modified. The returned
    direction is ``new_state.v`` itself (not a copy): do not modify it.
    """
    check_in_range("alpha", alpha, 0.0, 1.0, low_closed=False, high_closed=True)
    if not state.param.matches(x):
        raise ValueError(f"x must match the state's parameter {state.param}, got {tuple(x.shape)} {x.dtype}")
    g = dense_direction(estimate, state.param).to(state.v.dtype)
    if state.step == 0:
        v = g
    else:
        if previous_estimate is None:
            raise ValueError("previous_estimate (g(x_{t-1}; xi_t)) is required when state.step >= 1")
        g_prev = dense_direction(previous_estimate, state.param).to(state.v.dtype)
        batch = batch_shape(state.v, state.batch_dims)
        a = per_run("alpha", alpha, batch, state.v.ndim - state.batch_dims, state.v)
        v = g + (1 - a) * (state.v - g_prev)
    if inplace:
        state.v.copy_(v)
        state.x_prev.copy_(x)
        v, x_prev = state.v, state.x_prev
    else:
        x_prev = x.detach().clone()
    return v, dataclasses.replace(state, v=v, x_prev=x_prev, step=state.step + 1)


def step(
    x: torch.Tensor | Sequence[torch.Tensor],
    oracle,
    state: Any,
    *,
    gamma: float | torch.Tensor | Sequence[float],
    tau: float | torch.Tensor,
    alpha: float | torch.Tensor | Sequence[float],
    generator: torch.Generator | None = None,
    restore: str = "saved",
    weight_decay: float | torch.Tensor | Sequence[float] = 0.0,
    batch_dims: int = 0,
    seed: int | None = None,
    z: torch.Tensor | Sequence[torch.Tensor] | None = None,
    inplace: bool = True,
) -> Any:
    """One Acc-ZOM iteration (4 oracle calls; 2 at the first step); ``x`` (a tensor or a
    list) moved in place."""
    from .. import estimators

    listed = _lists.is_list(x)
    if listed:
        xs, states, gammas, decay = _lists.prologue(x, state, gamma, weight_decay, batch_dims)
        alphas = _lists.per_tensor("alpha", alpha, len(xs), _check_alpha)
        check_positive("tau", tau)
        started = any(s.step >= 1 for s in states)
    else:
        xs, states = [x], [state]
        check_direction_step(x, state, gamma, tau, batch_dims, weight_decay)
        _check_alpha("alpha", alpha)
        started = state.step >= 1
    seed = direction_draw(generator, seed, z)
    target = xs if listed else x
    closure = _lists.closure_of(oracle, target)
    est = estimators.gaussian_two_point(target, closure, tau, seed=seed, z=z, batch_dims=batch_dims, restore=restore)
    est_prev = None
    if started:  # g(x_{t-1}; xi_t, z_t): the same draw and the same oracle at the previous iterate
        current = [t.detach().clone() for t in xs]
        try:
            with torch.no_grad():
                for t, s in zip(xs, states):
                    t.copy_(s.x_prev)
            est_prev = estimators.gaussian_two_point(
                target, closure, tau, seed=seed, z=z, batch_dims=batch_dims, restore=restore
            )
        finally:
            with torch.no_grad():
                for t, c in zip(xs, current):
                    t.copy_(c)
        del current
    if listed:
        ests = [est] if est_prev is None else [est, est_prev]
        return _lists.apply_directions(
            xs, states, ests,
            lambda i, t, e, s: (t, *update(e[0], s, alpha=alphas[i], x=t, previous_estimate=e[1] if len(e) > 1
                                           else None, inplace=True)),
            gamma=gammas, weight_decay=decay, elementwise=False)
    direction, new_state = update(
        est, state, alpha=alpha, x=x, previous_estimate=est_prev, inplace=inplace
    )
    move(x, gamma, direction, batch_dims, weight_decay)
    return new_state


def _check_alpha(name: str, value: Any) -> None:
    check_in_range(name, value, 0.0, 1.0, low_closed=False, high_closed=True)
