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

* ``reset_momentum=True``: zero the momentum before every write, as the authors'
  released code did (with the block estimate the direction is then the sign of this
  step's block only); the registry entry ``jaguar_signsgd_released`` is the whole
  released-code path.
* ``weight_decay``: MeZO's decoupled weight decay in the move (default 0: none).

The momentum buffer is dense (``2d + 1`` numbers as in the paper) and is kept in
``torch.promote_types(x.dtype, float32)``; sign(m) is exact in any dtype.

Lists of tensors (a model's parameters; see :mod:`zotheory.algorithms._lists`): coordinates
are drawn uniformly over the concatenation of all the tensors (``d`` = their total size),
the estimate is split per tensor, and each tensor's momentum and move follow the rule
above (with that tensor's ``gamma`` / ``beta`` / ``weight_decay`` when they are given per
tensor, as parameter groups do).

Execution cache (not part of the pseudocode): an unbatched state keeps ``support``, the
sorted flat indices outside of which the momentum is known to be 0 (``None`` = unknown).
While it holds at most ``1/SPARSE_FRACTION`` of the tensor, :func:`apply` writes the
momentum and moves only those entries: off the support ``m = +0``, ``sign(m) = +0`` and
``x - gamma * 0`` is ``x`` bitwise, so the result is the dense update's bit for bit in time
proportional to the support; a tensor whose momentum is all 0 and that received no
coordinate is not touched at all. Larger supports (block mode after a few steps) switch
the tensor to the dense path for good.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import torch

from .._checks import check_choice, check_in_range, check_int_at_least, check_nonnegative, check_positive, check_momentum
from ..estimates import COORDINATE_MODES, CoordinateEstimate, split_coordinates
from . import _lists
from ._zo_common import batch_shape, check_batch_dims, decays, move, per_run, require_generator

__all__ = ["JaguarSignSGDState", "init", "update", "step", "apply", "write_momentum", "reset", "draw_estimate",
           "refresh_cache",
           "SPARSE_FRACTION"]

#: The sparse execution of :func:`apply` is used while the support is at most 1/16 of a tensor.
SPARSE_FRACTION = 16


class IterationOracle(Protocol):
    def value(self, x: torch.Tensor) -> torch.Tensor: ...


@dataclass
class JaguarSignSGDState:
    """``momentum``: m^{t-1}, shape of ``x``; ``step``: iterations done; ``batch_dims``;
    ``support``: execution cache (sorted flat indices outside of which m = 0, or None)."""

    momentum: torch.Tensor
    step: int = 0
    batch_dims: int = 0
    support: torch.Tensor | None = field(default=None, metadata={"cache": True})


def _empty_support(x: torch.Tensor, batch_dims: int) -> torch.Tensor | None:
    return torch.empty(0, dtype=torch.long, device=x.device) if batch_dims == 0 else None


def init(x: torch.Tensor | Sequence[torch.Tensor], *, batch_dims: int = 0) -> Any:
    """m^{-1} = 0 with the shape of ``x`` (a list of tensors: one state per tensor)."""
    if _lists.is_list(x):
        return _lists.init_states(x, init)
    check_batch_dims(x, batch_dims)
    dtype = torch.promote_types(x.dtype, torch.float32)
    return JaguarSignSGDState(
        momentum=torch.zeros(x.shape, dtype=dtype, device=x.device), step=0, batch_dims=batch_dims,
        support=_empty_support(x, batch_dims),
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


def merged_support(support: torch.Tensor | None, indices: torch.Tensor, numel: int) -> torch.Tensor | None:
    """The support after writing ``indices`` (None once it exceeds ``numel / SPARSE_FRACTION``)."""
    if support is None:
        return None
    if indices.numel():
        support = torch.cat([support, indices.reshape(-1).to(support.device)]).unique()
    return None if support.numel() * SPARSE_FRACTION > numel else support


def reset(state: Any) -> Any:
    """The state with its momentum zeroed (in place; ``reset_momentum=True``, the released code)."""
    m = state.momentum
    if state.support is None:
        m.zero_()
    elif state.support.numel():  # zero where it may be non-zero: the same all-zero buffer
        m.view(-1)[state.support] = 0
    return dataclasses.replace(state, support=_empty_support(m, state.batch_dims))


def refresh_cache(state: Any) -> Any:
    """The state with ``support`` re-derived from its momentum (after a load, or after the
    buffer was written directly)."""
    if state.batch_dims != 0:
        return dataclasses.replace(state, support=None)
    m = state.momentum.reshape(-1)
    # count_nonzero / nonzero read the buffer directly: a boolean mask per tensor, freed between
    # small long-lived results, fragments the heap (measured: +0.7 GiB RSS on a 1.3B model).
    count = int(torch.count_nonzero(m))
    support = torch.nonzero(m).reshape(-1) if count * SPARSE_FRACTION <= m.numel() else None
    return dataclasses.replace(state, support=support)


def known_zero(state: Any) -> bool:
    """Whether the momentum is known to be all zero (an empty support)."""
    return state.support is not None and state.support.numel() == 0


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
    support = merged_support(state.support, estimate.indices, m.numel())
    return direction, dataclasses.replace(state, momentum=m, step=state.step + 1, support=support)


def _empty_estimate(mode: str, device: torch.device) -> CoordinateEstimate:
    """No sampled entry in this tensor: the write changes nothing, the direction is sign(m)."""
    return CoordinateEstimate(
        indices=torch.empty(0, dtype=torch.long, device=device),
        values=torch.empty(0, dtype=torch.float32, device=device),
        mode=mode,
        oracle_calls=0,
    )


def apply(
    x: torch.Tensor,
    state: JaguarSignSGDState,
    estimate: CoordinateEstimate | None,
    *,
    gamma: float | torch.Tensor,
    beta: float | torch.Tensor,
    weight_decay: float | torch.Tensor = 0.0,
    mode: str = "coordinate",
) -> JaguarSignSGDState:
    """``update`` then ``move`` on one tensor (``estimate`` None: no coordinate fell in it).

    Exactly ``direction, state = update(estimate, state); move(x, gamma, direction)``, with
    the exact shortcuts of the module doc (untouched tensors skipped, sparse moves on the
    support). Returns the new state (its buffer is updated in place).
    """
    if estimate is None:
        if known_zero(state) and not decays(weight_decay) and _lists.FAST_PATHS:
            # m == 0: the update returns a zero direction and x - gamma * 0 == x bitwise.
            return dataclasses.replace(state, step=state.step + 1)
        estimate = _empty_estimate(mode, x.device)
    m = state.momentum
    sparse = (
        _lists.FAST_PATHS and state.support is not None and state.batch_dims == 0 and not decays(weight_decay)
        and isinstance(gamma, (int, float)) and x.is_contiguous() and m.is_contiguous()
    )
    if sparse:
        support = merged_support(state.support, estimate.indices, m.numel())
        if support is not None:
            check_choice("estimate.mode", estimate.mode, COORDINATE_MODES)
            check_in_range("beta", beta, 0.0, 1.0, low_closed=True, high_closed=False)
            if estimate.indices.numel():
                write_momentum(m, estimate.indices, estimate.values, beta, 0)
            if support.numel():
                direction = torch.sign(m.view(-1)[support])  # update's sign(m), on the support
                flat = x.view(-1)
                flat[support] = flat[support].sub_((float(gamma) * direction).to(x.dtype))  # move(), on the support
            return dataclasses.replace(state, step=state.step + 1, support=support)
    direction, new_state = update(estimate, state, beta=beta, inplace=True)
    move(x, gamma, direction, state.batch_dims, weight_decay, reuse_direction=True)
    return new_state


def draw_estimate(
    x: torch.Tensor | list[torch.Tensor],
    closure: Callable[[], Any],
    tau: float | torch.Tensor,
    *,
    generator: torch.Generator | None,
    coords_per_step: int,
    mode: str,
    block_fraction: float,
    batch_dims: int,
    indices: torch.Tensor | None,
) -> CoordinateEstimate:
    """The estimate of one JAGUAR step (coordinate mode: Algorithm 1's; block: the released code's)."""
    from .. import estimators

    if mode == "coordinate":
        if indices is None:
            numel = (sum(t.numel() for t in x) if isinstance(x, list)
                     else int(x[(0,) * batch_dims].numel()))
            if coords_per_step > numel:
                raise ValueError(f"coords_per_step must be <= the number of entries {numel}, got {coords_per_step}")
        return estimators.jaguar_coordinates(
            x, closure, tau, k=coords_per_step, generator=generator, indices=indices, batch_dims=batch_dims
        )
    if batch_dims != 0:
        raise ValueError("mode='block' supports batch_dims=0 only")
    return estimators.jaguar_block(x, closure, tau, fraction=block_fraction, generator=generator, indices=indices)


def check_step_options(coords_per_step: int, mode: str, block_fraction: float, indices, generator) -> int:
    """The checks on a JAGUAR step's estimate options (shared with JAGUAR Muon)."""
    check_choice("mode", mode, ("coordinate", "block"))
    check_in_range("block_fraction", block_fraction, 0.0, 1.0, low_closed=False, high_closed=True)
    if indices is None:
        require_generator(generator, "indices")
    return check_int_at_least("coords_per_step", coords_per_step, 1)


def list_step(
    xs: list[torch.Tensor],
    oracle: Callable[[], Any] | Any,
    states: list[Any],
    *,
    tau: float,
    generator: torch.Generator | None,
    coords_per_step: int,
    mode: str,
    block_fraction: float,
    reset_momentum: bool,
    indices: torch.Tensor | None,
    apply_one: Callable[[int, torch.Tensor, Any, CoordinateEstimate | None, str], Any],
) -> list[Any]:
    """A JAGUAR step over a list (shared with JAGUAR Muon): one estimate over the
    concatenation, split per tensor; ``apply_one(i, x_i, state_i, piece or None, mode)``
    (after the optional momentum reset) returns each new state."""
    check_positive("tau", tau)
    k = check_step_options(coords_per_step, mode, block_fraction, indices, generator)
    est = draw_estimate(xs, _lists.closure_of(oracle, xs), tau, generator=generator, coords_per_step=k, mode=mode,
                        block_fraction=block_fraction, batch_dims=0, indices=indices)
    out = []
    for i, piece in enumerate(split_coordinates(est, [t.numel() for t in xs])):
        s = reset(states[i]) if reset_momentum else states[i]
        out.append(apply_one(i, xs[i], s, piece, est.mode))
    return out


def step(
    x: torch.Tensor | Sequence[torch.Tensor],
    oracle: IterationOracle | Callable[[], Any],
    state: Any,
    *,
    gamma: float | torch.Tensor | Sequence[float],
    beta: float | torch.Tensor | Sequence[float],
    tau: float | torch.Tensor,
    generator: torch.Generator | None = None,
    coords_per_step: int = 1,
    mode: str = "coordinate",
    block_fraction: float = 0.1,
    reset_momentum: bool = False,
    weight_decay: float | torch.Tensor | Sequence[float] = 0.0,
    batch_dims: int = 0,
    indices: torch.Tensor | None = None,
    inplace: bool = True,
) -> Any:
    """One iteration of Algorithm 1 on ``x`` (moved in place); returns the new state.

    Draws ``i_t`` from ``generator`` (unless ``indices`` is given, shape
    ``(*batch_shape, k)``), estimates with ``closure = lambda: oracle.value(x)``
    (2 oracle calls per coordinate), writes the momentum and moves
    ``x <- x - gamma * sign(m)``. A non-finite oracle value raises
    :class:`zotheory.estimators.NonFiniteOracleError` before ``x`` or the state
    change. ``inplace=True`` (drivers) reuses ``state``'s buffer. ``x`` may be a list
    of tensors (``oracle`` then a closure, ``state`` the list ``init`` returned).
    """
    if not isinstance(reset_momentum, bool):
        raise ValueError(f"reset_momentum must be a bool, got {reset_momentum!r}")
    if _lists.is_list(x):
        xs, states, gammas, decay = _lists.prologue(x, state, gamma, weight_decay, batch_dims)
        betas = _lists.per_tensor("beta", beta, len(xs), check_momentum)
        return list_step(
            xs, oracle, states, tau=tau, generator=generator, coords_per_step=coords_per_step, mode=mode,
            block_fraction=block_fraction, reset_momentum=reset_momentum, indices=indices,
            apply_one=lambda i, t, s, piece, m: apply(t, s, piece, gamma=gammas[i], beta=betas[i],
                                                      weight_decay=decay[i], mode=m))

    check_batch_dims(x, batch_dims)
    if batch_dims != state.batch_dims or state.momentum.shape != x.shape:
        raise ValueError(
            f"state does not match x: momentum shape {tuple(state.momentum.shape)} with "
            f"batch_dims={state.batch_dims}, x shape {tuple(x.shape)} with batch_dims={batch_dims}"
        )
    check_positive("gamma", gamma)
    check_positive("tau", tau)
    check_momentum("beta", beta)
    check_nonnegative("weight_decay", weight_decay)
    k = check_step_options(coords_per_step, mode, block_fraction, indices, generator)
    est = draw_estimate(x, _lists.closure_of(oracle, x), tau, generator=generator, coords_per_step=k, mode=mode,
                   block_fraction=block_fraction, batch_dims=batch_dims, indices=indices)
    if not inplace:
        state = dataclasses.replace(state, momentum=state.momentum.clone())
    if reset_momentum:
        state = reset(state)
    if batch_dims:
        direction, new_state = update(est, state, beta=beta, inplace=True)
        move(x, gamma, direction, batch_dims, weight_decay)
        return new_state
    return apply(x, state, est, gamma=gamma, beta=beta, weight_decay=weight_decay, mode=est.mode)

