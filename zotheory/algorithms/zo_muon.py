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
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from .._checks import check_choice, check_int_at_least, check_positive, check_tensor_rank
from ..estimates import DirectionEstimate
from ..orthogonalize import METHODS, orthogonalize
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


def init(x: torch.Tensor, *, batch_dims: int = 0) -> ZOMuonState:
    """``x`` must be ``(m, n)`` or ``(B, m, n)``."""
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
    x: torch.Tensor,
    oracle: IterationOracle,
    state: ZOMuonState,
    *,
    gamma: float | torch.Tensor,
    tau: float | torch.Tensor,
    generator: torch.Generator | None = None,
    orthogonalization: str = "ns3",
    ns_steps: int | None = None,
    batch_dims: int = 0,
    seed: int | None = None,
    z: torch.Tensor | None = None,
    inplace: bool = True,
) -> ZOMuonState:
    """One iteration on ``x`` (moved in place). ``E`` comes from ``z`` if given, else from
    ``seed``, else from a seed drawn from ``generator`` (one draw)."""
    from .. import estimators

    check_batch_dims(x, batch_dims, min_event_dims=2)
    check_tensor_rank("x", x, 2, batch_dims=batch_dims)
    check_state_matches(x, state.param, state.batch_dims, batch_dims)
    check_positive("gamma", gamma)
    check_positive("tau", tau)
    _check_ns(orthogonalization, ns_steps)
    seed = direction_draw(generator, seed, z)

    closure: Callable[[], torch.Tensor] = lambda: oracle.value(x)
    estimate = estimators.gaussian_two_point(x, closure, tau, seed=seed, z=z, batch_dims=batch_dims)
    direction, new_state = update(
        estimate, state, orthogonalization=orthogonalization, ns_steps=ns_steps, inplace=inplace
    )
    move(x, gamma, direction, batch_dims)
    return new_state
