"""FO-SGD: first-order stochastic gradient descent, the first-order reference of the experiments.

Pseudocode (Robbins & Monro 1951; the "FO-SGD" row of the paper's tables)::

    for t = 0 to T do
        sample xi^t;  g^t = grad f(x^t, xi^t)
        x^{t+1} = x^t - gamma * g^t
    end for

Symbols -> arguments

=========  ===========================================================
paper      code
=========  ===========================================================
gamma      ``step(..., gamma=)`` (number or per-run tensor), > 0
g^t        the "estimate": ``oracle.grad(x)`` (a tensor of the shape of ``x``)
xi^t       the ``oracle`` passed to ``step`` (one iteration's oracle)
=========  ===========================================================

Citation: H. Robbins, S. Monro, "A Stochastic Approximation Method", Ann. Math.
Statist. 22 (1951); as a baseline in Petrov et al., arXiv:2506.04430 (2025).

Deviations
----------
None. (No momentum, no weight decay: the experiments' "FO-SGD" is plain SGD with a
constant step, MeZO's protocol.)

:func:`stochastic_gradient` is the one place the first-order rules of this package
(``fo_sgd``, ``fo_signsgd_momentum``, ``fo_muon``, ``adam``) call ``oracle.grad``.

Lists of tensors (a model's parameters, :mod:`zotheory.algorithms._lists`): the gradients
come as ``grad=`` (one per tensor; the optimizer computes them from its closure) or from
``oracle.grad(list)``; every one is checked finite before anything moves, then per tensor
the update and the move (hyperparameters per tensor when given so, as parameter groups
do). ``weight_decay`` is decoupled (in the move, MeZO's / AdamW's form), default 0.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import torch

from .._checks import check_nonnegative, check_positive
from . import _lists
from ._zo_common import check_batch_dims, move

__all__ = ["FOSGDState", "init", "update", "step", "stochastic_gradient"]


class GradientOracle(Protocol):
    def grad(self, x: torch.Tensor) -> torch.Tensor: ...


@dataclass
class FOSGDState:
    """No buffers: ``step`` (iterations done) and ``batch_dims``."""

    step: int = 0
    batch_dims: int = 0


def stochastic_gradient(oracle: GradientOracle, x: torch.Tensor) -> torch.Tensor:
    """``oracle.grad(x)``, checked to be a finite tensor of the shape of ``x``."""
    g = oracle.grad(x)
    if not isinstance(g, torch.Tensor) or g.shape != x.shape:
        got = tuple(g.shape) if isinstance(g, torch.Tensor) else type(g).__name__
        raise ValueError(f"oracle.grad(x) must return a tensor of shape {tuple(x.shape)}, got {got}")
    if not bool(torch.isfinite(g).all()):
        raise FloatingPointError("oracle.grad(x) returned a non-finite value")
    return g


def init(x: torch.Tensor | Sequence[torch.Tensor], *, batch_dims: int = 0) -> Any:
    if _lists.is_list(x):
        return _lists.init_states(x, init)
    check_batch_dims(x, batch_dims)
    return FOSGDState(step=0, batch_dims=batch_dims)


def update(
    grad: torch.Tensor, state: FOSGDState, *, inplace: bool = False
) -> tuple[torch.Tensor, FOSGDState]:
    """The direction is the gradient itself (returned as is, never modified)."""
    if not isinstance(grad, torch.Tensor):
        raise ValueError(f"grad must be a torch.Tensor, got {type(grad).__name__}")
    return grad, dataclasses.replace(state, step=state.step + 1)


def step(
    x: torch.Tensor | Sequence[torch.Tensor],
    oracle: GradientOracle | None,
    state: Any,
    *,
    gamma: float | torch.Tensor | Sequence[float],
    generator: torch.Generator | None = None,
    weight_decay: float | torch.Tensor | Sequence[float] = 0.0,
    batch_dims: int = 0,
    grad: Sequence[torch.Tensor] | None = None,
    inplace: bool = True,
) -> Any:
    """``x <- x - gamma * oracle.grad(x)`` in place. ``generator`` is unused (nothing is drawn)."""
    if _lists.is_list(x):
        xs, states, gammas, decay = _lists.prologue(x, state, gamma, weight_decay, batch_dims)
        grads = _lists.gradients_of(xs, oracle, grad)
        return _lists.apply_gradients(xs, states, grads, lambda i, t, g, s: (t, *update(g, s, inplace=True)),
                                      gamma=gammas, weight_decay=decay)
    check_nonnegative("weight_decay", weight_decay)
    check_batch_dims(x, batch_dims)
    if batch_dims != state.batch_dims:
        raise ValueError(f"state is for batch_dims={state.batch_dims}, got batch_dims={batch_dims}")
    check_positive("gamma", gamma)
    direction, new_state = update(stochastic_gradient(oracle, x), state, inplace=inplace)
    move(x, gamma, direction, batch_dims, weight_decay)
    return new_state
