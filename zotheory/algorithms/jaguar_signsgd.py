"""JAGUAR SignSGD: Algorithm 1 of Petrov et al. (2025), exactly as the pseudocode.

Pseudocode (seed 003, "Algorithm 1: JAGUAR SignSGD")::

    Parameters: stepsize gamma, momentum beta, gradient approximation parameter tau, T.
    Initialization: choose x^0 in R^d and m^{-1} = 0 in R^d.
    for t = 0, 1, 2, ..., T do
        Sample i_t ~ Uniform(1, d); e^t = one-hot(i_t); sample xi^t ~ D
        g = (f_+ - f_-) / (2 tau),  f_+ = f^(x^t + tau e^t, xi^t),  f_- = f^(x^t - tau e^t, xi^t)
        m^t_{i_t}      = beta * m^{t-1}_{i_t} + (1 - beta) * g
        m^t_{i != i_t} = m^{t-1}_i                       (momentum persists across steps)
        x^{t+1} = x^t - gamma * sign(m^t)                (over ALL d coordinates; sign(0) = 0)
    end for
    Return x^{N(T)}, N(T) ~ Uniform{1..T}   (the runner's job, not this kernel's)

Symbols -> arguments

=================  ==========================================================
paper              code
=================  ==========================================================
gamma              ``step(..., gamma=)`` (number or per-run tensor)
beta               ``update(..., beta=)`` / ``step(..., beta=)``, in [0, 1)
tau                ``step(..., tau=)``, > 0
i_t                ``CoordinateEstimate.indices`` (``step(..., indices=)`` to fix it)
g                  ``CoordinateEstimate.values``
m^t                ``JaguarSignSGDState.momentum`` (dense, shape of ``x``)
xi^t               the ``oracle`` passed to ``step`` (one iteration's oracle)
=================  ==========================================================

Citation: E. Petrov, G. Evseev, A. Antonov, A. Veprikov, P. Plyusnin, N. Bushkov,
S. Moiseev, A. Beznosikov, "Leveraging Coordinate Momentum in SignSGD and Muon:
Memory-Optimized Zero-Order LLM Fine-Tuning", arXiv:2506.04430 (2025).

Deviations
----------
None for ``k = 1, mode = "coordinate"`` (the default): the kernel equals the literal
transcription :func:`zotheory.reference.jaguar_signsgd.run` step by step.

Named generalisations (off by default, each a documented option, not the paper):

* ``k > 1`` (``coords_per_step``): ``k`` distinct coordinates per step, each with its
  own central difference (``2k`` oracle calls); the momentum write rule above is
  applied at every sampled index.
* ``mode = "block"``: the authors' released-code estimate (one joint perturbation of
  a block, one scalar written at every index of the block); the same write rule is
  applied at every index. Note the released code also zeroed the buffer every step;
  this module never does (the momentum persists, as in the pseudocode).

Duplicated indices within one run of one estimate are rejected with ``ValueError``
(the write rule "``m_i = beta m_i + (1 - beta) g_i``" is ambiguous when ``i`` appears
twice, and a scatter with duplicates is not deterministic on every device). The
library's estimators always produce distinct indices.

The momentum buffer is dense (``2d + 1`` numbers as in the paper) and is kept in
``torch.promote_types(x.dtype, float32)``; sign(m) is exact in any dtype.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from .._checks import check_choice, check_in_range, check_int_at_least, check_positive
from ..estimates import COORDINATE_MODES, CoordinateEstimate
from ._zo_common import batch_shape, check_batch_dims, move, per_run, require_generator

__all__ = ["JaguarSignSGDState", "init", "update", "step", "write_momentum"]


class IterationOracle(Protocol):
    def value(self, x: torch.Tensor) -> torch.Tensor: ...


@dataclass
class JaguarSignSGDState:
    """``momentum``: m^{t-1}, shape of ``x``; ``step``: iterations done; ``batch_dims``."""

    momentum: torch.Tensor
    step: int = 0
    batch_dims: int = 0


def init(x: torch.Tensor, *, batch_dims: int = 0) -> JaguarSignSGDState:
    """m^{-1} = 0 with the shape of ``x``."""
    check_batch_dims(x, batch_dims)
    dtype = torch.promote_types(x.dtype, torch.float32)
    return JaguarSignSGDState(
        momentum=torch.zeros(x.shape, dtype=dtype, device=x.device), step=0, batch_dims=batch_dims
    )


def _check_distinct(indices: torch.Tensor) -> None:
    if indices.shape[-1] < 2:
        return
    s, _ = torch.sort(indices, dim=-1)
    if bool((s[..., 1:] == s[..., :-1]).any()):
        raise ValueError(
            "estimate.indices must be distinct within each run (a duplicated coordinate "
            "makes the momentum write rule ambiguous)"
        )


def write_momentum(
    momentum: torch.Tensor,
    indices: torch.Tensor,
    values: torch.Tensor,
    beta: float | torch.Tensor,
    batch_dims: int,
) -> None:
    """In place: ``m_i <- beta m_i + (1 - beta) g_i`` at the given flat indices only.

    ``momentum`` has shape ``(*batch, *event)`` and must be contiguous;
    ``indices``/``values`` have shape ``(*batch, k)``. Every other entry keeps its value.
    """
    batch = batch_shape(momentum, batch_dims)
    flat = momentum.view(*batch, -1)
    if indices.shape[:-1] != torch.Size(batch):
        raise ValueError(
            f"estimate.indices must have shape (*batch_shape, k) with batch_shape={batch}, "
            f"got {tuple(indices.shape)}"
        )
    numel = flat.shape[-1]
    if indices.numel():
        lo, hi = torch.aminmax(indices)
        bad = int(lo) < 0 or int(hi) >= numel
    else:
        bad = False
    if bad:
        raise ValueError(f"estimate.indices must lie in [0, {numel}), got values outside")
    _check_distinct(indices)
    b = per_run("beta", beta, batch, 1, flat)
    old = flat.gather(-1, indices)
    new = b * old + (1 - b) * values.to(flat.dtype)
    flat.scatter_(-1, indices, new)


def update(
    estimate: CoordinateEstimate,
    state: JaguarSignSGDState,
    *,
    beta: float | torch.Tensor,
    inplace: bool = False,
) -> tuple[torch.Tensor, JaguarSignSGDState]:
    """One momentum write and the sign direction: returns ``(sign(m^t), new_state)``.

    ``estimate`` is a :class:`CoordinateEstimate` (mode ``"coordinate"``, or
    ``"block"``/``"row"``: the same write rule at every index). With
    ``inplace=False`` neither ``estimate`` nor ``state`` is modified; with
    ``inplace=True`` ``state.momentum`` is overwritten and shared with the new state.
    """
    if not isinstance(estimate, CoordinateEstimate):
        raise ValueError(f"estimate must be a CoordinateEstimate, got {type(estimate).__name__}")
    check_choice("estimate.mode", estimate.mode, COORDINATE_MODES)
    check_in_range("beta", beta, 0.0, 1.0, low_closed=True, high_closed=False)
    m = state.momentum if inplace else state.momentum.clone()
    if not m.is_contiguous():
        raise ValueError("state.momentum must be contiguous")
    write_momentum(m, estimate.indices, estimate.values, beta, state.batch_dims)
    direction = torch.sign(m)  # sign(0) = 0: never-sampled coordinates do not move
    return direction, dataclasses.replace(state, momentum=m, step=state.step + 1)


def step(
    x: torch.Tensor,
    oracle: IterationOracle,
    state: JaguarSignSGDState,
    *,
    gamma: float | torch.Tensor,
    beta: float | torch.Tensor,
    tau: float | torch.Tensor,
    generator: torch.Generator | None = None,
    coords_per_step: int = 1,
    mode: str = "coordinate",
    block_fraction: float = 0.1,
    batch_dims: int = 0,
    indices: torch.Tensor | None = None,
    inplace: bool = True,
) -> JaguarSignSGDState:
    """One iteration of Algorithm 1 on ``x`` (moved in place); returns the new state.

    Draws ``i_t`` from ``generator`` (unless ``indices`` is given, shape
    ``(*batch_shape, k)``), estimates with ``closure = lambda: oracle.value(x)``
    (2 oracle calls per coordinate), writes the momentum and moves
    ``x <- x - gamma * sign(m)``. A non-finite oracle value raises
    :class:`zotheory.estimators.NonFiniteOracleError` before ``x`` or the state
    change. ``inplace=True`` (drivers) reuses ``state``'s buffer.
    """
    from .. import estimators

    check_batch_dims(x, batch_dims)
    if batch_dims != state.batch_dims or state.momentum.shape != x.shape:
        raise ValueError(
            f"state does not match x: momentum shape {tuple(state.momentum.shape)} with "
            f"batch_dims={state.batch_dims}, x shape {tuple(x.shape)} with batch_dims={batch_dims}"
        )
    check_positive("gamma", gamma)
    check_positive("tau", tau)
    check_in_range("beta", beta, 0.0, 1.0, low_closed=True, high_closed=False)
    check_choice("mode", mode, ("coordinate", "block"))
    k = check_int_at_least("coords_per_step", coords_per_step, 1)
    if indices is None:
        require_generator(generator, "indices")

    closure: Callable[[], torch.Tensor] = lambda: oracle.value(x)
    if mode == "coordinate":
        estimate = estimators.jaguar_coordinates(
            x, closure, tau, k=k, generator=generator, indices=indices, batch_dims=batch_dims
        )
    else:
        if batch_dims != 0:
            raise ValueError("mode='block' supports batch_dims=0 only")
        estimate = estimators.jaguar_block(
            x, closure, tau, fraction=block_fraction, generator=generator, indices=indices
        )
    direction, new_state = update(estimate, state, beta=beta, inplace=inplace)
    move(x, gamma, direction, batch_dims)
    return new_state
