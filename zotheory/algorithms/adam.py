"""Adam (Kingma & Ba 2015) with bias correction: the first-order adaptive reference.

Pseudocode (Kingma & Ba 2015, Algorithm 1)::

    m_0 = 0, v_0 = 0, t = 0
    while not converged:
        t = t + 1
        g_t = grad f_t(theta_{t-1})
        m_t = beta1 m_{t-1} + (1 - beta1) g_t
        v_t = beta2 v_{t-1} + (1 - beta2) g_t^2
        mhat_t = m_t / (1 - beta1^t)
        vhat_t = v_t / (1 - beta2^t)
        theta_t = theta_{t-1} - alpha * mhat_t / (sqrt(vhat_t) + eps)

Symbols -> arguments

=========  ==============================================================
paper      code
=========  ==============================================================
alpha      ``step(..., gamma=)`` (number or per-run tensor), > 0
beta1      ``beta1``, in [0, 1), default 0.9
beta2      ``beta2``, in [0, 1), default 0.999
eps        ``eps``, > 0, default 1e-8
t          ``AdamState.step + 1`` inside ``update``
m_t, v_t   ``AdamState.exp_avg``, ``AdamState.exp_avg_sq`` (dtype >= float32)
g_t        the "estimate": ``oracle.grad(x)``
=========  ==============================================================

Citation: D. P. Kingma, J. Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.

Deviations
----------
None: the direction is ``mhat / (sqrt(vhat) + eps)`` exactly as Algorithm 1 (not the
paper's Section 2 "more efficient" reordering, whose eps enters differently). No
weight decay.

Lists of tensors (a model's parameters, :mod:`zotheory.algorithms._lists`): the gradients
come as ``grad=`` (one per tensor; the optimizer computes them from its closure) or from
``oracle.grad(list)``; every one is checked finite before anything moves, then per tensor
the update and the move (hyperparameters per tensor when given so, as parameter groups
do). ``weight_decay`` is decoupled (in the move, MeZO's / AdamW's form), default 0.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from typing import Any, Sequence

import torch

from .._checks import check_in_range, check_nonnegative, check_positive, check_momentum
from . import _lists
from ._zo_common import check_batch_dims, move, per_run
from .fo_sgd import GradientOracle, stochastic_gradient

__all__ = ["AdamState", "init", "update", "step"]


@dataclass
class AdamState:
    """``exp_avg`` (m), ``exp_avg_sq`` (v), ``step`` (t done so far), ``batch_dims``."""

    exp_avg: torch.Tensor
    exp_avg_sq: torch.Tensor
    step: int = 0
    batch_dims: int = 0


def init(x: torch.Tensor | Sequence[torch.Tensor], *, batch_dims: int = 0) -> Any:
    if _lists.is_list(x):
        return _lists.init_states(x, init)
    check_batch_dims(x, batch_dims)
    dtype = torch.promote_types(x.dtype, torch.float32)
    z = lambda: torch.zeros(x.shape, dtype=dtype, device=x.device)  # noqa: E731
    return AdamState(z(), z(), 0, batch_dims)


def update(
    grad: torch.Tensor,
    state: AdamState,
    *,
    beta1: float | torch.Tensor = 0.9,
    beta2: float | torch.Tensor = 0.999,
    eps: float | torch.Tensor = 1e-8,
    inplace: bool = False,
) -> tuple[torch.Tensor, AdamState]:
    """Moments, bias correction, direction ``mhat / (sqrt(vhat) + eps)``."""
    check_in_range("beta1", beta1, 0.0, 1.0, low_closed=True, high_closed=False)
    check_in_range("beta2", beta2, 0.0, 1.0, low_closed=True, high_closed=False)
    check_positive("eps", eps)
    m, v = state.exp_avg, state.exp_avg_sq
    if not isinstance(grad, torch.Tensor) or grad.shape != m.shape:
        raise ValueError(f"grad must be a tensor of shape {tuple(m.shape)}")
    bd = state.batch_dims
    batch, trailing = m.shape[:bd], m.ndim - bd
    b1 = per_run("beta1", beta1, batch, trailing, m)
    b2 = per_run("beta2", beta2, batch, trailing, m)
    e = per_run("eps", eps, batch, trailing, m)
    t = state.step + 1
    g = grad.to(m.dtype)
    m_new = b1 * m + (1 - b1) * g
    v_new = b2 * v + (1 - b2) * g * g
    mhat = m_new / (1 - b1**t)
    vhat = v_new / (1 - b2**t)
    direction = mhat / (torch.sqrt(vhat) + e)
    if inplace:
        m.copy_(m_new)
        v.copy_(v_new)
        m_new, v_new = m, v
    return direction, dataclasses.replace(state, exp_avg=m_new, exp_avg_sq=v_new, step=t)


def step(
    x: torch.Tensor | Sequence[torch.Tensor],
    oracle: GradientOracle | None,
    state: Any,
    *,
    gamma: float | torch.Tensor | Sequence[float],
    beta1: float | torch.Tensor | Sequence[float] = 0.9,
    beta2: float | torch.Tensor | Sequence[float] = 0.999,
    eps: float | torch.Tensor | Sequence[float] = 1e-8,
    generator: torch.Generator | None = None,
    weight_decay: float | torch.Tensor | Sequence[float] = 0.0,
    batch_dims: int = 0,
    grad: Sequence[torch.Tensor] | None = None,
    inplace: bool = True,
) -> Any:
    """One Adam step on ``x`` (moved in place). ``generator`` is unused (nothing is drawn).
    With ``weight_decay`` the move is decoupled (AdamW's form)."""
    if _lists.is_list(x):
        xs, states, gammas, decay = _lists.prologue(x, state, gamma, weight_decay, batch_dims)
        n = len(xs)
        b1 = _lists.per_tensor("beta1", beta1, n, check_momentum)
        b2 = _lists.per_tensor("beta2", beta2, n, check_momentum)
        e = _lists.per_tensor("eps", eps, n, check_positive)
        grads = _lists.gradients_of(xs, oracle, grad)
        return _lists.apply_gradients(
            xs, states, grads,
            lambda i, t, g, s: (t, *update(g, s, beta1=b1[i], beta2=b2[i], eps=e[i], inplace=True)),
            gamma=gammas, weight_decay=decay)
    check_nonnegative("weight_decay", weight_decay)
    check_batch_dims(x, batch_dims)
    if batch_dims != state.batch_dims or state.exp_avg.shape != x.shape:
        raise ValueError(
            f"state does not match x: moment shape {tuple(state.exp_avg.shape)} with "
            f"batch_dims={state.batch_dims}, x shape {tuple(x.shape)} with batch_dims={batch_dims}"
        )
    check_positive("gamma", gamma)
    direction, new_state = update(
        stochastic_gradient(oracle, x), state, beta1=beta1, beta2=beta2, eps=eps, inplace=inplace
    )
    move(x, gamma, direction, batch_dims, weight_decay)
    return new_state

