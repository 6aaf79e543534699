"""ZO-AdaMM (Chen et al., NeurIPS 2019): AMSGrad moments on a zero-order estimate.

Pseudocode (Chen et al. 2019, Algorithm 1, unconstrained so the projection is the identity)::

    Input x_1, step sizes alpha_t, beta_1, beta_2; m_0 = 0, v_0 = 0, v_hat_0 = 0
    for t = 1, ..., T:
        g_t = zero-order gradient estimate at x_t
        m_t = beta_1 m_{t-1} + (1 - beta_1) g_t
        v_t = beta_2 v_{t-1} + (1 - beta_2) g_t^2
        v_hat_t = max(v_hat_{t-1}, v_t)                     (element-wise; AMSGrad)
        x_{t+1} = Pi_{X, sqrt(V_hat_t)}( x_t - alpha_t V_hat_t^{-1/2} m_t ),  V_hat_t = diag(v_hat_t)

This module returns the direction ``D = m_t / (sqrt(v_hat_t) + eps)`` and moves
``x <- x - gamma D``.

Symbols -> arguments

=============  ==================================================================
paper          code
=============  ==================================================================
alpha_t        ``step(..., gamma=)``
beta_{1,t}     ``update(..., beta1=)``, in [0, 1), constant
beta_2         ``update(..., beta2=)``, in [0, 1)
g_t            ``DirectionEstimate`` (``step`` uses the Gaussian two-point estimate)
m, v, v_hat    ``ZOAdaMMState.exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``
mu             ``step(..., tau=)``
(eps)          ``update(..., eps=)``, > 0, default 1e-8 (not in the printed algorithm)
=============  ==================================================================

Citation: X. Chen, S. Liu, K. Xu, X. Li, X. Lin, M. Hong, D. Cox, "ZO-AdaMM:
Zeroth-Order Adaptive Momentum Method for Black-Box Optimization", NeurIPS 2019
(arXiv:1910.06513).

Deviations
----------
* ``eps`` in the denominator: the printed update is ``V_hat^{-1/2} m``, undefined
  while some ``v_hat_i = 0`` (always at a coordinate where the estimate was 0). As in
  every AMSGrad/Adam implementation (and ZO-Bench's ZO-Adam), ``eps`` is added to
  ``sqrt(v_hat)``. No bias correction (the published algorithm has none).
* Unconstrained problems only, so the Mahalanobis projection is the identity.
* Estimator: ``step`` uses the library's Gaussian two-point central estimate (as the
  ZO-Bench of Zhang et al. 2024 does for LLM fine-tuning) instead of the paper's
  forward difference on the unit sphere ``(d/mu)(f(x + mu u) - f(x)) u``; ``update``
  accepts any :class:`DirectionEstimate` (e.g. ``estimators.sphere_two_point``).
* The theory's condition ``beta_1 < sqrt(beta_2)`` is not enforced.

Memory: three buffers of the parameter's size (``m``, ``v``, ``v_hat``), kept in
``torch.promote_types(x.dtype, float32)``.

Lists of tensors (a model's parameters, :mod:`zotheory.algorithms._lists`): one estimate
over the whole list (``z`` regenerated tensor by tensor from the step's seed), then per
tensor the update and the move, with that tensor's ``gamma`` / ``beta1`` / ``beta2`` / ``eps`` / ``weight_decay`` when they
are given per tensor. ``restore`` is the estimator's (``"saved"``: bitwise; ``"regenerate"``:
MeZO's walk, no copy); ``weight_decay`` is MeZO's decoupled weight decay in the move.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from typing import Any, Sequence

import torch

from .._checks import check_in_range, check_positive, check_momentum
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

__all__ = ["ZOAdaMMState", "init", "update", "step"]


@dataclass
class ZOAdaMMState:
    exp_avg: torch.Tensor  # m
    exp_avg_sq: torch.Tensor  # v
    max_exp_avg_sq: torch.Tensor  # v_hat
    param: ParamSpec
    step: int = 0
    batch_dims: int = 0


def init(x: torch.Tensor | Sequence[torch.Tensor], *, batch_dims: int = 0) -> Any:
    if _lists.is_list(x):
        return _lists.init_states(x, init)
    check_batch_dims(x, batch_dims)
    dtype = torch.promote_types(x.dtype, torch.float32)
    z = lambda: torch.zeros(x.shape, dtype=dtype, device=x.device)
    return ZOAdaMMState(z(), z(), z(), ParamSpec.of(x), 0, batch_dims)


def update(
    estimate: DirectionEstimate,
    state: ZOAdaMMState,
    *,
    beta1: float | torch.Tensor = 0.9,
    beta2: float | torch.Tensor = 0.999,
    eps: float | torch.Tensor = 1e-8,
    inplace: bool = False,
) -> tuple[torch.Tensor, ZOAdaMMState]:
    """``m, v, v_hat`` updated; direction ``m / (sqrt(v_hat) + eps)``."""
    check_in_range("beta1", beta1, 0.0, 1.0, low_closed=True, high_closed=False)
    check_in_range("beta2", beta2, 0.0, 1.0, low_closed=True, high_closed=False)
    check_positive("eps", eps)
    m0, v0, vh0 = state.exp_avg, state.exp_avg_sq, state.max_exp_avg_sq
    g = dense_direction(estimate, state.param).to(m0.dtype)
    batch = batch_shape(m0, state.batch_dims)
    nd = m0.ndim - state.batch_dims
    b1 = per_run("beta1", beta1, batch, nd, m0)
    b2 = per_run("beta2", beta2, batch, nd, m0)
    e = per_run("eps", eps, batch, nd, m0)
    m = b1 * m0 + (1 - b1) * g
    v = b2 * v0 + (1 - b2) * (g * g)
    vh = torch.maximum(vh0, v)
    if inplace:
        m0.copy_(m)
        v0.copy_(v)
        vh0.copy_(vh)
        m, v, vh = m0, v0, vh0
    direction = m / (vh.sqrt() + e)
    new_state = dataclasses.replace(
        state, exp_avg=m, exp_avg_sq=v, max_exp_avg_sq=vh, step=state.step + 1
    )
    return direction, new_state


def step(
    x: torch.Tensor | Sequence[torch.Tensor],
    oracle,
    state: Any,
    *,
    gamma: float | torch.Tensor | Sequence[float],
    tau: float | torch.Tensor,
    beta1: float | torch.Tensor | Sequence[float] = 0.9,
    beta2: float | torch.Tensor | Sequence[float] = 0.999,
    eps: float | torch.Tensor | Sequence[float] = 1e-8,
    generator: torch.Generator | None = None,
    restore: str = "saved",
    weight_decay: float | torch.Tensor | Sequence[float] = 0.0,
    batch_dims: int = 0,
    seed: int | None = None,
    z: torch.Tensor | Sequence[torch.Tensor] | None = None,
    inplace: bool = True,
) -> Any:
    """One ZO-AdaMM iteration (2 oracle calls); ``x`` (a tensor or a list) moved in place."""
    from .. import estimators

    if _lists.is_list(x):
        xs, states, gammas, decay = _lists.prologue(x, state, gamma, weight_decay, batch_dims)
        n = len(xs)
        b1 = _lists.per_tensor("beta1", beta1, n, check_momentum)
        b2 = _lists.per_tensor("beta2", beta2, n, check_momentum)
        e = _lists.per_tensor("eps", eps, n, check_positive)
        check_positive("tau", tau)
        seed = direction_draw(generator, seed, z)
        est = estimators.gaussian_two_point(xs, _lists.closure_of(oracle, xs), tau, seed=seed, z=z, restore=restore)
        return _lists.apply_directions(
            xs, states, [est],
            lambda i, t, p, s: (t, *update(p[0], s, beta1=b1[i], beta2=b2[i], eps=e[i], inplace=True)),
            gamma=gammas, weight_decay=decay, elementwise=True)
    check_direction_step(x, state, gamma, tau, batch_dims, weight_decay)
    check_momentum("beta1", beta1)
    check_momentum("beta2", beta2)
    check_positive("eps", eps)
    seed = direction_draw(generator, seed, z)
    estimate = estimators.gaussian_two_point(
        x, _lists.closure_of(oracle, x), tau, seed=seed, z=z, batch_dims=batch_dims, restore=restore
    )
    direction, new_state = update(estimate, state, beta1=beta1, beta2=beta2, eps=eps, inplace=inplace)
    move(x, gamma, direction, batch_dims, weight_decay)
    return new_state

