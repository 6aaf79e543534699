"""ZO-Muon: Algorithm 3 (appendix) of Petrov et al. (2025) -- Muon on a Gaussian two-point estimate.

Pseudocode (as restated in ``shared/PAPER.md``, "Algorithm 3 (appendix): ZO-Muon")::

    Parameters: gamma (stepsize), tau (grad. approx.), Newton-Schulz steps K, T.
    Init: W^0 in R^{m x n}.
    for t = 0 to T do
        Sample E^t with i.i.d. entries N(0, 1);  sample xi^t
        G^t <- (L(W^t + tau E^t, xi^t) - L(W^t - tau E^t, xi^t)) / (2 tau) * E^t
        W^{t+1} <- W^t - gamma * Newton_Schulz(G^t, K)
    end for

No momentum. ``Newton_Schulz`` is the same subroutine as in Algorithm 2
(:mod:`zotheory.orthogonalize`, ``"ns3"`` with ``K = 10`` by default).

Symbols -> arguments

===================  =============================================================
paper                code
===================  =============================================================
gamma                ``step(..., gamma=)`` (number or per-run tensor), > 0
tau                  ``step(..., tau=)``, > 0
E^t                  ``z`` of the :class:`~zotheory.estimates.DirectionEstimate`,
                     regenerated from an integer ``seed`` drawn from ``generator``
                     (MeZO's seed trick), or given explicitly (``step(..., z=)``)
(L+ - L-)/(2 tau)    ``DirectionEstimate.scale``
Newton_Schulz, K     ``orthogonalization`` (``"ns3"`` default, ``"exact"``, ``"ns5"``)
                     and ``ns_steps`` (``None`` = method default: 10 / 5)
xi^t                 the ``oracle`` passed to ``step``
===================  =============================================================

Remark. ``Newton_Schulz`` is invariant to positive scaling and odd, so
``Newton_Schulz(s E) = sign(s) Newton_Schulz(E)`` (up to rounding): the step only
uses the *sign* of the finite difference, and its length is always ``gamma`` in the
spectral norm (for ``"exact"``/converged ``"ns3"``).

Citation: E. Petrov et al., "Leveraging Coordinate Momentum in SignSGD and Muon:
Memory-Optimized Zero-Order LLM Fine-Tuning", arXiv:2506.04430 (2025); Muon:
K. Jordan et al. (2024), https://kellerjordan.github.io/posts/muon/.

Deviations
----------
None for the default (Gaussian ``E``, ``ns3``, ``K = 10``). Note on sources: a
commented-out variant in the public LaTeX draft samples ``E`` on the unit sphere /
from the Haar distribution and keeps a Muon momentum ``B_t = mu B_{t-1} + G_t``; the
algorithm restated in ``shared/PAPER.md`` (the one this module implements) has a
Gaussian ``E`` and no momentum.

Lists of tensors (a model's parameters, :mod:`zotheory.algorithms._lists`): one Gaussian
estimate over the whole list; each 2-D tensor moves by ``-gamma * NS(g Z)`` (its piece of
``z``). Tensors that are not matrices follow ``non_matrix`` (given to ``init``, as in JAGUAR
Muon): ``"sign"`` (default) gives them ZO-SignSGD's rule ``sign(g z)`` on the same
estimate; ``"column"`` views them with ``as_matrix(t, "column")``. ``restore`` and
``weight_decay`` as in ZO-SGD.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import torch

from .._checks import check_choice, check_int_at_least, check_nonnegative, check_positive, check_tensor_rank
from ..estimates import DirectionEstimate
from ..orthogonalize import METHODS, as_matrix, orthogonalize
from . import _lists, zo_signsgd
from ._zo_common import (
    ParamSpec,
    check_batch_dims,
    check_state_matches,
    dense_direction,
    direction_draw,
    move,
)

__all__ = ["ZOMuonState", "init", "update", "step"]


class IterationOracle(Protocol):
    def value(self, x: torch.Tensor) -> torch.Tensor: ...


@dataclass
class ZOMuonState:
    """No buffers: ``param`` (shape/dtype/device, to regenerate ``E`` from a seed),
    ``step`` (iterations done) and ``batch_dims``."""

    param: ParamSpec
    step: int = 0
    batch_dims: int = 0


def _check_ns(orthogonalization: str, ns_steps: int | None) -> None:
    check_choice("orthogonalization", orthogonalization, METHODS)
    if ns_steps is not None:
        check_int_at_least("ns_steps", ns_steps, 1)


NON_MATRIX_RULES = ("sign", "column")


def init(x: torch.Tensor | Sequence[torch.Tensor], *, batch_dims: int = 0, non_matrix: str = "sign") -> Any:
    """``x`` must be ``(m, n)`` or ``(B, m, n)``; a list gets one state per tensor (matrices a
    :class:`ZOMuonState`, others by ``non_matrix``: a ZO-SignSGD state, or a
    :class:`ZOMuonState` of their ``as_matrix(t, "column")`` shape)."""
    if _lists.is_list(x):
        check_choice("non_matrix", non_matrix, NON_MATRIX_RULES)
        return _lists.init_states(
            x, lambda t: zo_signsgd.init(t) if t.ndim != 2 and non_matrix == "sign" else init(as_matrix(t, "column")))
    check_batch_dims(x, batch_dims, min_event_dims=2)
    check_tensor_rank("x", x, 2, batch_dims=batch_dims)
    return ZOMuonState(param=ParamSpec.of(x), step=0, batch_dims=batch_dims)


def update(
    estimate: DirectionEstimate,
    state: ZOMuonState,
    *,
    orthogonalization: str = "ns3",
    ns_steps: int | None = None,
    inplace: bool = False,
) -> tuple[torch.Tensor, ZOMuonState]:
    """``(Newton_Schulz(scale * E), new_state)``. Pure: no buffers (``inplace`` is accepted
    for the common interface and changes nothing)."""
    _check_ns(orthogonalization, ns_steps)
    G = dense_direction(estimate, state.param)  # a fresh tensor: Newton-Schulz may work in it
    direction = orthogonalize(G, orthogonalization, ns_steps, batch_dims=state.batch_dims, overwrite_input=True)
    return direction, dataclasses.replace(state, step=state.step + 1)


def step(
    x: torch.Tensor | Sequence[torch.Tensor],
    oracle: IterationOracle | Callable[[], Any],
    state: Any,
    *,
    gamma: float | torch.Tensor | Sequence[float],
    tau: float | torch.Tensor,
    generator: torch.Generator | None = None,
    orthogonalization: str | Sequence[str] = "ns3",
    ns_steps: int | None | Sequence[int | None] = None,
    restore: str = "saved",
    weight_decay: float | torch.Tensor | Sequence[float] = 0.0,
    batch_dims: int = 0,
    seed: int | None = None,
    z: torch.Tensor | Sequence[torch.Tensor] | None = None,
    inplace: bool = True,
) -> Any:
    """One iteration on ``x`` (moved in place). ``E`` comes from ``z`` if given, else from
    ``seed``, else from a seed drawn from ``generator`` (one draw)."""
    from .. import estimators

    if _lists.is_list(x):
        xs, states, gammas, decay = _lists.prologue(x, state, gamma, weight_decay, batch_dims)
        orth = _lists.per_tensor("orthogonalization", orthogonalization, len(xs))
        steps = _lists.per_tensor("ns_steps", ns_steps, len(xs))
        for o, k in zip(orth, steps):
            _check_ns(o, k)
        check_positive("tau", tau)
        seed = direction_draw(generator, seed, z)
        est = estimators.gaussian_two_point(xs, _lists.closure_of(oracle, xs), tau, seed=seed, z=z, restore=restore)

        def one(i: int, t: torch.Tensor, pieces: list, s: Any):
            if isinstance(s, zo_signsgd.ZOSignSGDState):
                return (t, *zo_signsgd.update(pieces, s, inplace=True))
            piece = dataclasses.replace(pieces[0], z=pieces[0].z.reshape(s.param.shape))
            direction, s = update(piece, s, orthogonalization=orth[i], ns_steps=steps[i], inplace=True)
            return t, direction.view(t.shape), s

        return _lists.apply_directions(xs, states, [est], one, gamma=gammas, weight_decay=decay, elementwise=False)

    check_batch_dims(x, batch_dims, min_event_dims=2)
    check_tensor_rank("x", x, 2, batch_dims=batch_dims)
    check_state_matches(x, state.param, state.batch_dims, batch_dims)
    check_positive("gamma", gamma)
    check_positive("tau", tau)
    check_nonnegative("weight_decay", weight_decay)
    _check_ns(orthogonalization, ns_steps)
    seed = direction_draw(generator, seed, z)

    closure = _lists.closure_of(oracle, x)
    estimate = estimators.gaussian_two_point(x, closure, tau, seed=seed, z=z, batch_dims=batch_dims, restore=restore)
    direction, new_state = update(
        estimate, state, orthogonalization=orthogonalization, ns_steps=ns_steps, inplace=inplace
    )
    move(x, gamma, direction, batch_dims, weight_decay)
    return new_state
