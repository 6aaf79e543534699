"""FO SignSGD with momentum ("Signum"): the first-order counterpart of JAGUAR SignSGD.

Pseudocode (Bernstein et al. 2018, Algorithm 3 "Signum")::

    Input: learning rate delta, momentum constant beta, m_0 = 0
    for k = 0, 1, ... do
        g_k = stochastic gradient at x_k
        m_{k+1} = beta m_k + (1 - beta) g_k
        x_{k+1} = x_k - delta * sign(m_{k+1})          (sign(0) = 0)
    end for

Symbols -> arguments

=========  ==============================================================
paper      code
=========  ==============================================================
delta      ``step(..., gamma=)`` (number or per-run tensor), > 0
beta       ``update(..., beta=)`` / ``step(..., beta=)``, in [0, 1) (0 = signSGD)
g_k        the "estimate": ``oracle.grad(x)``
m_k        ``SignumState.momentum`` (shape of ``x``, dtype promoted to >= float32)
=========  ==============================================================

Citation: J. Bernstein, Y.-X. Wang, K. Azizzadenesheli, A. Anandkumar, "signSGD:
Compressed Optimisation for Non-Convex Problems", ICML 2018.

Deviations
----------
None. (No weight decay; the Signum paper's weight decay is an optional extra.)

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

__all__ = ["SignumState", "init", "update", "step"]


@dataclass
class SignumState:
    """``momentum``: m_k (shape of ``x``); ``step``: iterations done; ``batch_dims``."""

    momentum: torch.Tensor
    step: int = 0
    batch_dims: int = 0


def init(x: torch.Tensor | Sequence[torch.Tensor], *, batch_dims: int = 0) -> Any:
    """m_0 = 0 with the shape of ``x`` (a list: one state per tensor)."""
    if _lists.is_list(x):
        return _lists.init_states(x, init)
    check_batch_dims(x, batch_dims)
    dtype = torch.promote_types(x.dtype, torch.float32)
    return SignumState(torch.zeros(x.shape, dtype=dtype, device=x.device), 0, batch_dims)


def update(
    grad: torch.Tensor,
    state: SignumState,
    *,
    beta: float | torch.Tensor = 0.9,
    inplace: bool = False,
) -> tuple[torch.Tensor, SignumState]:
    """``m <- beta m + (1 - beta) g``; direction ``sign(m)``."""
    check_in_range("beta", beta, 0.0, 1.0, low_closed=True, high_closed=False)
    m = state.momentum
    if not isinstance(grad, torch.Tensor) or grad.shape != m.shape:
        raise ValueError(f"grad must be a tensor of shape {tuple(m.shape)}")
    b = per_run("beta", beta, m.shape[: state.batch_dims], m.ndim - state.batch_dims, m)
    new = b * m + (1 - b) * grad.to(m.dtype)
    if inplace:
        m.copy_(new)
        new = m
    return torch.sign(new), dataclasses.replace(state, momentum=new, step=state.step + 1)


def step(
    x: torch.Tensor | Sequence[torch.Tensor],
    oracle: GradientOracle | None,
    state: Any,
    *,
    gamma: float | torch.Tensor | Sequence[float],
    beta: float | torch.Tensor | Sequence[float] = 0.9,
    generator: torch.Generator | None = None,
    weight_decay: float | torch.Tensor | Sequence[float] = 0.0,
    batch_dims: int = 0,
    grad: Sequence[torch.Tensor] | None = None,
    inplace: bool = True,
) -> Any:
    """One Signum step on ``x`` (moved in place). ``generator`` is unused (nothing is drawn)."""
    if _lists.is_list(x):
        xs, states, gammas, decay = _lists.prologue(x, state, gamma, weight_decay, batch_dims)
        betas = _lists.per_tensor("beta", beta, len(xs), check_momentum)
        grads = _lists.gradients_of(xs, oracle, grad)
        return _lists.apply_gradients(
            xs, states, grads, lambda i, t, g, s: (t, *update(g, s, beta=betas[i], inplace=True)),
            gamma=gammas, weight_decay=decay)
    check_nonnegative("weight_decay", weight_decay)
    check_batch_dims(x, batch_dims)
    if batch_dims != state.batch_dims or state.momentum.shape != x.shape:
        raise ValueError(
            f"state does not match x: momentum shape {tuple(state.momentum.shape)} with "
            f"batch_dims={state.batch_dims}, x shape {tuple(x.shape)} with batch_dims={batch_dims}"
        )
    check_positive("gamma", gamma)
    check_in_range("beta", beta, 0.0, 1.0, low_closed=True, high_closed=False)
    direction, new_state = update(stochastic_gradient(oracle, x), state, beta=beta, inplace=inplace)
    move(x, gamma, direction, batch_dims, weight_decay)
    return new_state

