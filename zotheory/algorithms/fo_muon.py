"""FO-Muon: Keller Jordan's Muon (2024), the first-order counterpart of JAGUAR Muon.

Pseudocode (``muon_update`` of Keller Jordan's ``muon.py``, github.com/KellerJordan/Muon)::

    M_t = lerp(M_{t-1}, G_t, 1 - beta)          = beta M_{t-1} + (1 - beta) G_t,   M_{-1} = 0
    U_t = lerp(G_t, M_t, beta)  if nesterov     = (1 - beta) G_t + beta M_t
          M_t                   otherwise
    O_t = NewtonSchulz5(U_t, steps = 5) * max(1, m / n) ** 0.5
    W_{t+1} = W_t - gamma * O_t

Symbols -> arguments

=================  =============================================================
paper / muon.py    code
=================  =============================================================
lr (gamma)         ``step(..., gamma=)`` (number or per-run tensor), > 0
beta (momentum)    ``beta``, in [0, 1); default 0.95 (muon.py)
nesterov           ``nesterov``; default True (muon.py)
NewtonSchulz5      ``orthogonalization`` (default ``"ns5"``), ``ns_steps``
                   (``None`` = 5 for ns5, 10 for ns3)
shape factor       ``scale_by_shape``; default True: ``max(1, m/n) ** 0.5``
G_t                the "estimate": ``oracle.grad(x)``
M_t                ``FOMuonState.momentum`` (shape of ``x``, dtype >= float32)
=================  =============================================================

Citation: K. Jordan, Y. Jin, V. Boza, J. You, F. Cesista, L. Newhouse, J. Bernstein,
"Muon: An optimizer for hidden layers in neural networks" (2024),
https://kellerjordan.github.io/posts/muon/ and github.com/KellerJordan/Muon (muon.py).

Deviations
----------
Choices relative to ``muon.py`` (numerics only, none changes the rule):

* Newton-Schulz runs in ``promote_types(dtype, float32)``, not bf16, and normalises by
  the exact Frobenius norm (zero matrix -> zero) instead of ``norm + 1e-7``; see
  :mod:`zotheory.orthogonalize`.
* The gradient is not overwritten: ``muon.py``'s ``grad.lerp_(momentum, beta)`` is
  computed out of place.
* No weight decay (``muon.py``'s default is 0) and no auxiliary Adam for non-matrix
  parameters: this kernel takes matrices only (``(m, n)`` or ``(B, m, n)``); a shell
  maps other tensors with :func:`zotheory.orthogonalize.as_matrix` or another rule.

Lists of tensors (a model's parameters, :mod:`zotheory.algorithms._lists`): gradients as
``grad=`` (one per tensor) or ``oracle.grad(list)``; matrices follow the rule above, and
tensors that are not matrices follow ``non_matrix`` (given to ``init``): ``"sign"``
(default) gives them Signum's rule (``fo_signsgd_momentum.update``, same ``beta``), in the
spirit of Muon practice (another optimizer for non-matrix weights); ``"column"`` views them
with ``as_matrix(t, "column")``. ``weight_decay`` is decoupled (in the move), default 0.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from typing import Any, Sequence

import torch

from .._checks import (
    check_momentum,
    check_choice,
    check_in_range,
    check_int_at_least,
    check_nonnegative,
    check_positive,
    check_tensor_rank,
)
from ..orthogonalize import METHODS, as_matrix, orthogonalize
from . import _lists, fo_signsgd_momentum
from ._zo_common import check_batch_dims, move, per_run
from .fo_sgd import GradientOracle, stochastic_gradient

__all__ = ["FOMuonState", "init", "update", "step"]


@dataclass
class FOMuonState:
    """``momentum``: M_{t-1} (shape of ``x``); ``step``: iterations done; ``batch_dims``."""

    momentum: torch.Tensor
    step: int = 0
    batch_dims: int = 0


def _check_matrix(x: torch.Tensor, batch_dims: int) -> None:
    check_batch_dims(x, batch_dims, min_event_dims=2)
    check_tensor_rank("x", x, 2, batch_dims=batch_dims)


NON_MATRIX_RULES = ("sign", "column")


def init(x: torch.Tensor | Sequence[torch.Tensor], *, batch_dims: int = 0, non_matrix: str = "sign") -> Any:
    """M_{-1} = 0 with the shape of ``x`` (a list: one state per tensor, non-matrix tensors by
    ``non_matrix``: a Signum state, or an :class:`FOMuonState` of their column shape)."""
    if _lists.is_list(x):
        check_choice("non_matrix", non_matrix, NON_MATRIX_RULES)
        return _lists.init_states(
            x, lambda t: fo_signsgd_momentum.init(t) if t.ndim != 2 and non_matrix == "sign"
            else init(as_matrix(t, "column")))
    _check_matrix(x, batch_dims)
    dtype = torch.promote_types(x.dtype, torch.float32)
    return FOMuonState(torch.zeros(x.shape, dtype=dtype, device=x.device), 0, batch_dims)


def update(
    grad: torch.Tensor,
    state: FOMuonState,
    *,
    beta: float | torch.Tensor = 0.95,
    nesterov: bool = True,
    orthogonalization: str = "ns5",
    ns_steps: int | None = None,
    scale_by_shape: bool = True,
    inplace: bool = False,
) -> tuple[torch.Tensor, FOMuonState]:
    """Momentum (lerp), optional Nesterov look-ahead, orthogonalization, shape factor."""
    check_in_range("beta", beta, 0.0, 1.0, low_closed=True, high_closed=False)
    check_choice("orthogonalization", orthogonalization, METHODS)
    if ns_steps is not None:
        check_int_at_least("ns_steps", ns_steps, 1)
    M = state.momentum
    if not isinstance(grad, torch.Tensor) or grad.shape != M.shape:
        raise ValueError(f"grad must be a tensor of shape {tuple(M.shape)}")
    bd = state.batch_dims
    b = per_run("beta", beta, M.shape[:bd], M.ndim - bd, M)
    g = grad.to(M.dtype)
    new = torch.lerp(M, g, 1 - b)
    if inplace:
        M.copy_(new)
        new = M
    U = torch.lerp(g, new, b) if nesterov else new
    O = orthogonalize(U, orthogonalization, ns_steps, batch_dims=bd)
    if scale_by_shape:
        O = O * max(1.0, M.shape[-2] / M.shape[-1]) ** 0.5
    return O, dataclasses.replace(state, momentum=new, step=state.step + 1)


def step(
    x: torch.Tensor | Sequence[torch.Tensor],
    oracle: GradientOracle | None,
    state: Any,
    *,
    gamma: float | torch.Tensor | Sequence[float],
    beta: float | torch.Tensor | Sequence[float] = 0.95,
    nesterov: bool | Sequence[bool] = True,
    orthogonalization: str | Sequence[str] = "ns5",
    ns_steps: int | None | Sequence[int | None] = None,
    scale_by_shape: bool | Sequence[bool] = True,
    generator: torch.Generator | None = None,
    weight_decay: float | torch.Tensor | Sequence[float] = 0.0,
    batch_dims: int = 0,
    grad: Sequence[torch.Tensor] | None = None,
    inplace: bool = True,
) -> Any:
    """One Muon step on ``x`` (moved in place). ``generator`` is unused (nothing is drawn)."""
    if _lists.is_list(x):
        xs, states, gammas, decay = _lists.prologue(x, state, gamma, weight_decay, batch_dims)
        n = len(xs)
        betas = _lists.per_tensor("beta", beta, n, check_momentum)
        nest = _lists.per_tensor("nesterov", nesterov, n)
        orth = _lists.per_tensor("orthogonalization", orthogonalization, n)
        steps = _lists.per_tensor("ns_steps", ns_steps, n)
        shape = _lists.per_tensor("scale_by_shape", scale_by_shape, n)
        for o, k in zip(orth, steps):
            check_choice("orthogonalization", o, METHODS)
            if k is not None:
                check_int_at_least("ns_steps", k, 1)
        grads = _lists.gradients_of(xs, oracle, grad)

        def one(i: int, t: torch.Tensor, g: torch.Tensor, s: Any):
            if isinstance(s, fo_signsgd_momentum.SignumState):
                return (t, *fo_signsgd_momentum.update(g, s, beta=betas[i], inplace=True))
            direction, s = update(g.reshape(s.momentum.shape), s, beta=betas[i], nesterov=nest[i],
                                  orthogonalization=orth[i], ns_steps=steps[i], scale_by_shape=shape[i],
                                  inplace=True)
            return t, direction.view(t.shape), s

        return _lists.apply_gradients(xs, states, grads, one, gamma=gammas, weight_decay=decay)
    check_nonnegative("weight_decay", weight_decay)
    _check_matrix(x, batch_dims)
    if batch_dims != state.batch_dims or state.momentum.shape != x.shape:
        raise ValueError(
            f"state does not match x: momentum shape {tuple(state.momentum.shape)} with "
            f"batch_dims={state.batch_dims}, x shape {tuple(x.shape)} with batch_dims={batch_dims}"
        )
    check_positive("gamma", gamma)
    direction, new_state = update(
        stochastic_gradient(oracle, x),
        state,
        beta=beta,
        nesterov=nesterov,
        orthogonalization=orthogonalization,
        ns_steps=ns_steps,
        scale_by_shape=scale_by_shape,
        inplace=inplace,
    )
    move(x, gamma, direction, batch_dims, weight_decay)
    return new_state
