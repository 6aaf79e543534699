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
m^t                ``JaguarSignSGDState``: sparse (``indices``, ``values``) or dense (``momentum``)
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

The momentum is kept in ``torch.promote_types(x.dtype, float32)``; sign(m) is exact in any dtype.

Lists of tensors (a model's parameters; see :mod:`zotheory.algorithms._lists`): coordinates
are drawn uniformly over the concatenation of all the tensors (``d`` = their total size),
the estimate is split per tensor, and each tensor's momentum and move follow the rule
above (with that tensor's ``gamma`` / ``beta`` / ``weight_decay`` when they are given per
tensor, as parameter groups do).

State: two exact forms of m
---------------------------
In Algorithm 1, ``m`` is non-zero only at the coordinates sampled so far (at most ``t k``
after ``t`` steps), so an unbatched state starts **sparse**: ``indices``, the sorted distinct
flat indices written so far (int64), and ``values``, m there (every other entry is ``+0``,
what the dense buffer holds there); ``momentum`` is None. Memory: 12 bytes per held entry
(``O(min(t k, d))``), and ``init`` allocates nothing of size ``d``. The write blends held
entries in place and new ones from ``+0`` with the same expression as the dense write
(:func:`_blend`), so the values are the dense buffer's bits; :func:`apply` then moves only
the held entries (off them ``sign(+0) = +0`` and ``x - gamma * 0`` is ``x`` bitwise), in time
proportional to them, and a tensor with no entry and no new coordinate is not touched. A
weight decay (or a tensor ``gamma``) moves every entry: the move then uses a dense
``sign(m)`` transient; :func:`update`, the pure rule, always returns the dense direction.

**Switch rule.** Before a write, a sparse state whose held entries plus this write's indices
exceed ``numel / SPARSE_FRACTION`` (1/16 of the tensor) turns **dense** (``momentum``: the
buffer of ``x``'s shape; ``indices``/``values`` None) and stays dense. A sparse entry costs
12 bytes against a dense entry's 4, so the sparse form is the smaller one up to 1/3; 1/16 is
where the previous execution cache already handed the move to the dense pass (indexed
gathers and scatters cost several times a contiguous pass; not re-measured here). The block estimate (10% of a tensor per step) turns a
tensor dense at its first write; a small tensor (a bias) at its first few coordinates. Both
forms give the same bits, so the switch changes no result (``tests/test_sparse_state.py``).
A batch of runs (``batch_dims = 1``, the synthetic engine) is always dense.

Checkpoints: ``zotheory.optim``'s ``state_dict`` saves whichever form a tensor has
(``indices``/``values`` or ``momentum``); :func:`load_state` accepts both (a checkpoint
written with a dense momentum included) and gives a loaded dense momentum with at most
1/16 non-zero entries (bit patterns: -0.0 is kept) the sparse form (:func:`compact`).
:func:`with_entries` builds a state with given entries (a long run's state for a benchmark).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import torch

from .._checks import check_choice, check_in_range, check_int_at_least, check_nonnegative, check_positive, check_momentum
from ..estimates import COORDINATE_MODES, CoordinateEstimate, split_coordinates
from . import _lists
from ._zo_common import ParamSpec, batch_shape, check_batch_dims, decays, move, per_run, require_generator

__all__ = ["JaguarSignSGDState", "init", "update", "step", "apply", "write", "write_momentum", "reset",
           "draw_estimate", "is_sparse", "dense_momentum", "to_dense", "compact", "with_entries", "load_state",
           "SPARSE_FRACTION"]

#: The switch rule: a sparse state turns dense before a write that could take it past
#: ``numel / SPARSE_FRACTION`` held entries (module doc, "State").
SPARSE_FRACTION = 16

# The integer dtype of each float width: a float tensor viewed as it tells -0.0 from +0.0.
_BITS = {torch.float64: torch.int64, torch.float32: torch.int32, torch.bfloat16: torch.int16,
         torch.float16: torch.int16}


class IterationOracle(Protocol):
    def value(self, x: torch.Tensor) -> torch.Tensor: ...


@dataclass
class JaguarSignSGDState:
    """m^{t-1} in one of two exact forms (module doc, "State").

    ``momentum``: the dense buffer (shape of ``x``), or None while the state is sparse;
    ``indices`` / ``values``: the sparse form, sorted distinct flat indices (int64) and m at
    them (m = +0 everywhere else), None while dense; ``step``: iterations done;
    ``batch_dims``; ``spec``: shape, dtype and device of the dense momentum.
    """

    momentum: torch.Tensor | None
    step: int = 0
    batch_dims: int = 0
    indices: torch.Tensor | None = None
    values: torch.Tensor | None = None
    spec: ParamSpec | None = None


def init(x: torch.Tensor | Sequence[torch.Tensor], *, batch_dims: int = 0) -> Any:
    """m^{-1} = 0 with the shape of ``x`` (a list of tensors: one state per tensor).

    Unbatched: the sparse form with no entry (nothing of size ``d`` is allocated);
    ``batch_dims = 1``: a dense zero buffer.
    """
    if _lists.is_list(x):
        return _lists.init_states(x, init)
    check_batch_dims(x, batch_dims)
    return empty_state(JaguarSignSGDState, x, batch_dims)


def empty_state(cls: type, x: torch.Tensor, batch_dims: int) -> Any:
    """m = 0 for ``x`` in a state of class ``cls`` (shared with JAGUAR Muon): sparse and
    empty when unbatched, a dense zero buffer for a batch of runs."""
    spec = ParamSpec(x.shape, torch.promote_types(x.dtype, torch.float32), x.device)
    if batch_dims:
        return cls(momentum=torch.zeros(spec.shape, dtype=spec.dtype, device=spec.device), batch_dims=batch_dims,
                   spec=spec)
    return cls(momentum=None, batch_dims=0, indices=torch.empty(0, dtype=torch.long, device=spec.device),
               values=torch.empty(0, dtype=spec.dtype, device=spec.device), spec=spec)


# --------------------------------------------------------------------------- the two forms


def is_sparse(state: Any) -> bool:
    """Whether the state holds its momentum as indices + values."""
    return state.momentum is None


def momentum_shape(state: Any) -> torch.Size:
    return state.momentum.shape if state.momentum is not None else state.spec.shape


def dense_momentum(state: Any) -> torch.Tensor:
    """m as a dense tensor: the buffer itself (dense state) or a new tensor (sparse state)."""
    if state.momentum is not None:
        return state.momentum
    m = torch.zeros(state.spec.shape, dtype=state.spec.dtype, device=state.spec.device)
    if state.indices.numel():
        m.view(-1)[state.indices] = state.values
    return m


def to_dense(state: Any) -> Any:
    """The same momentum in the dense form."""
    if state.momentum is not None:
        return state
    return dataclasses.replace(state, momentum=dense_momentum(state), indices=None, values=None)


def held(state: Any) -> int:
    """Entries the state stores: ``numel`` of the dense buffer, or the number of sparse entries."""
    return state.momentum.numel() if state.momentum is not None else state.indices.numel()


def compact(state: Any) -> Any:
    """A dense unbatched state as the sparse form when at most ``numel / SPARSE_FRACTION`` of
    its entries have non-zero bits (-0.0 counts as non-zero: the form keeps every bit);
    any other state as it is. Used on load (a checkpoint with a dense momentum)."""
    m = state.momentum
    if m is None or state.batch_dims != 0:
        return state
    m = m.contiguous()
    # count_nonzero / nonzero read the buffer directly: a boolean mask per tensor, freed between
    # small long-lived results, fragments the heap (measured: +0.7 GiB RSS on a 1.3B model).
    flat = m.view(-1).view(_BITS[m.dtype])
    if int(torch.count_nonzero(flat)) * SPARSE_FRACTION > flat.numel():
        return state
    idx = torch.nonzero(flat).reshape(-1)
    return dataclasses.replace(state, momentum=None, indices=idx, values=m.view(-1)[idx].clone(),
                               spec=ParamSpec(m.shape, m.dtype, m.device))


def copied(state: Any) -> Any:
    """The state with its own buffers (what ``step(..., inplace=False)`` writes into)."""
    if state.momentum is not None:
        return dataclasses.replace(state, momentum=state.momentum.clone())
    return dataclasses.replace(state, values=state.values.clone())


def with_entries(state: Any, indices: torch.Tensor, values: torch.Tensor) -> Any:
    """The state with momentum ``values`` at the distinct flat ``indices`` and 0 elsewhere
    (unbatched), in the form the switch rule gives that many entries; the step count is kept.
    What a benchmark uses to stand in for a long run's state without the run."""
    if state.batch_dims != 0:
        raise ValueError("with_entries needs an unbatched state (batch_dims=0)")
    numel = math.prod(momentum_shape(state))
    dtype = state.momentum.dtype if state.momentum is not None else state.spec.dtype
    device = state.momentum.device if state.momentum is not None else state.spec.device
    indices = indices.reshape(-1).to(device=device, dtype=torch.long)
    if indices.numel() != values.numel():
        raise ValueError(f"indices and values must have the same size, got {indices.numel()} and {values.numel()}")
    _check_indices(indices, numel)
    indices, order = torch.sort(indices)
    values = values.reshape(-1).to(device=device, dtype=dtype)[order]
    sparse = dataclasses.replace(state, momentum=None, indices=indices, values=values,
                                 spec=ParamSpec(momentum_shape(state), dtype, device))
    return to_dense(sparse) if indices.numel() * SPARSE_FRACTION > numel else sparse


def load_state(fresh: Any, saved: dict[str, Any], *, where: str = "state") -> Any:
    """A state from its saved fields (``zotheory.optim``'s ``state_dict``), onto ``fresh``
    (``init`` of the parameter: its shape, dtype and device). Takes the sparse form
    (``indices`` / ``values``) or a dense ``momentum``, checked, in the form it was saved in
    (a resumed run holds what the uninterrupted one holds). A checkpoint written before the
    sparse form existed (a dense ``momentum`` and no ``indices`` field) is made sparse when the
    switch rule allows (:func:`compact`)."""
    shape, dtype = momentum_shape(fresh), (fresh.momentum if fresh.momentum is not None else fresh.spec).dtype
    device = fresh.momentum.device if fresh.momentum is not None else fresh.spec.device
    step = int(saved.get("step", 0))
    m = saved.get("momentum")
    if isinstance(m, torch.Tensor):
        if m.shape != shape or m.dtype != dtype:
            raise ValueError(f"{where}.momentum has shape {tuple(m.shape)} and dtype {m.dtype}, the parameter "
                             f"needs {tuple(shape)} {dtype}")
        state = dataclasses.replace(fresh, momentum=m.detach().to(device).clone(), indices=None, values=None,
                                    step=step)
        return state if "indices" in saved else compact(state)
    idx, vals = saved.get("indices"), saved.get("values")
    if not (isinstance(idx, torch.Tensor) and isinstance(vals, torch.Tensor)):
        raise ValueError(f"{where} holds neither a momentum nor indices and values")
    if idx.dtype != torch.long or idx.ndim != 1 or vals.dtype != dtype or vals.shape != idx.shape:
        raise ValueError(f"{where}: indices must be 1-D int64 and values {dtype} of the same size, got "
                         f"{idx.dtype} {tuple(idx.shape)} and {vals.dtype} {tuple(vals.shape)}")
    if idx.numel() > 1 and not bool((idx[1:] > idx[:-1]).all()):
        raise ValueError(f"{where}.indices must be sorted and distinct")
    return with_entries(dataclasses.replace(fresh, step=step), idx.detach(), vals.detach().clone())


# --------------------------------------------------------------------------- the write rule


def _check_indices(indices: torch.Tensor, numel: int) -> None:
    """Flat indices must lie in ``[0, numel)`` and be distinct within each run."""
    if indices.numel():
        lo, hi = torch.aminmax(indices)
        if int(lo) < 0 or int(hi) >= numel:
            raise ValueError(f"estimate.indices must lie in [0, {numel}), got values outside")
    if indices.shape[-1] < 2:
        return
    s, _ = torch.sort(indices, dim=-1)
    if bool((s[..., 1:] == s[..., :-1]).any()):
        raise ValueError(
            "estimate.indices must be distinct within each run (a duplicated coordinate "
            "makes the momentum write rule ambiguous)"
        )


def _blend(old: torch.Tensor, g: torch.Tensor, b: float | torch.Tensor) -> torch.Tensor:
    """``beta m_i + (1 - beta) g_i``: the one expression both forms compute (so the same bits)."""
    return b * old + (1 - b) * (g if g.dtype == old.dtype else g.to(old.dtype))


def write_momentum(
    momentum: torch.Tensor,
    indices: torch.Tensor,
    values: torch.Tensor,
    beta: float | torch.Tensor,
    batch_dims: int,
) -> None:
    """In place: ``m_i <- beta m_i + (1 - beta) g_i`` at the given flat indices only (dense form).

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
    _check_indices(indices, flat.shape[-1])
    b = per_run("beta", beta, batch, 1, flat)
    flat.scatter_(-1, indices, _blend(flat.gather(-1, indices), values, b))


def _write_entries(state: Any, indices: torch.Tensor, g: torch.Tensor, beta: float | torch.Tensor,
                   inplace: bool) -> Any:
    """The write rule on the sparse form: held entries are blended where they are, new ones
    blended with m = +0 (what the dense buffer holds there) and merged in index order."""
    if indices.ndim != 1:
        raise ValueError(f"estimate.indices must have shape (k,) for an unbatched state, got {tuple(indices.shape)}")
    _check_indices(indices, math.prod(state.spec.shape))
    values = state.values if inplace else state.values.clone()
    if not indices.numel():
        return dataclasses.replace(state, values=values)
    held_idx, n = state.indices, state.indices.numel()
    b = per_run("beta", beta, (), 1, values)
    if n:
        at = torch.searchsorted(held_idx, indices).clamp_(max=n - 1)
        found = held_idx[at] == indices
        old = torch.where(found, values[at], torch.zeros((), dtype=values.dtype, device=values.device))
    else:
        at = found = None
        old = torch.zeros(indices.shape, dtype=values.dtype, device=values.device)
    new = _blend(old, g, b)
    if found is not None and bool(found.any()):
        values[at[found]] = new[found]
        missing = ~found
        indices, new = indices[missing], new[missing]
    if indices.numel():
        held_idx, order = torch.sort(torch.cat([held_idx, indices]))
        values = torch.cat([values, new])[order]
    return dataclasses.replace(state, indices=held_idx, values=values)


def write(state: Any, estimate: CoordinateEstimate, beta: float | torch.Tensor, *, inplace: bool) -> Any:
    """The momentum write of one estimate (``m_i <- beta m_i + (1 - beta) g_i`` at its
    indices, every other entry kept), in the state's form, ``step + 1``. A sparse state that
    could pass ``numel / SPARSE_FRACTION`` entries with this write turns dense first (the
    switch rule). Shared with JAGUAR Muon. ``inplace=False`` leaves ``state`` untouched."""
    if not isinstance(estimate, CoordinateEstimate):
        raise ValueError(f"estimate must be a CoordinateEstimate, got {type(estimate).__name__}")
    check_choice("estimate.mode", estimate.mode, COORDINATE_MODES)
    check_in_range("beta", beta, 0.0, 1.0, low_closed=True, high_closed=False)
    if state.momentum is None:
        if (held(state) + estimate.indices.numel()) * SPARSE_FRACTION <= math.prod(state.spec.shape):
            new = _write_entries(state, estimate.indices, estimate.values, beta, inplace)
            return dataclasses.replace(new, step=state.step + 1)
        state, inplace = to_dense(state), True  # a new buffer: writing it leaves the caller's state alone
    m = state.momentum if inplace else state.momentum.clone()
    if not m.is_contiguous():
        raise ValueError("state.momentum must be contiguous")
    write_momentum(m, estimate.indices, estimate.values, beta, state.batch_dims)
    return dataclasses.replace(state, momentum=m, step=state.step + 1)


def reset(state: Any) -> Any:
    """The state with its momentum zeroed (``reset_momentum=True``, the released code): a
    sparse state drops its entries, a dense one is zeroed in place."""
    if state.momentum is None:
        return dataclasses.replace(state, indices=state.indices[:0], values=state.values[:0])
    state.momentum.zero_()
    return state


def known_zero(state: Any) -> bool:
    """Whether the momentum is known to be all zero (a sparse state with no entry)."""
    return state.momentum is None and state.indices.numel() == 0


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
    ``inplace=True`` the state's buffers are overwritten and shared with the new state.
    The direction is dense (shape of ``x``) in either form: :func:`apply` is the sparse move.
    """
    new_state = write(state, estimate, beta, inplace=inplace)
    return torch.sign(dense_momentum(new_state)), new_state  # sign(0) = 0: never-sampled coordinates do not move


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
    """``update`` then ``move`` on one unbatched tensor (``estimate`` None: no coordinate fell in it).

    Exactly ``direction, state = update(estimate, state); move(x, gamma, direction)``, with
    the exact shortcuts of the module doc: a sparse state moves only its entries (off them
    ``m = +0``, ``sign(m) = +0`` and ``x - gamma * 0`` is ``x`` bitwise), and a tensor whose
    momentum is all 0 and that received no coordinate is not touched. A weight decay or a
    tensor ``gamma`` moves every entry (a dense direction for the move, the state stays
    sparse). Returns the new state (its buffers are updated in place).
    """
    if estimate is None:
        if known_zero(state) and not decays(weight_decay) and _lists.FAST_PATHS:
            # m == 0: the update returns a zero direction and x - gamma * 0 == x bitwise.
            return dataclasses.replace(state, step=state.step + 1)
        estimate = _empty_estimate(mode, x.device)
    sparse_move = (
        _lists.FAST_PATHS and state.momentum is None and not decays(weight_decay)
        and isinstance(gamma, (int, float)) and x.is_contiguous()
    )
    if not sparse_move:
        direction, new_state = update(estimate, state, beta=beta, inplace=True)
        move(x, gamma, direction, state.batch_dims, weight_decay, reuse_direction=True)
        return new_state
    new_state = write(state, estimate, beta, inplace=True)
    if new_state.momentum is not None:  # this write switched the state to dense
        move(x, gamma, torch.sign(new_state.momentum), 0, reuse_direction=True)
    elif new_state.indices.numel():
        idx = new_state.indices
        flat = x.view(-1)
        flat[idx] = flat[idx].sub_((float(gamma) * torch.sign(new_state.values)).to(x.dtype))  # move(), on the entries
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
    if batch_dims != state.batch_dims or momentum_shape(state) != x.shape:
        raise ValueError(
            f"state does not match x: momentum shape {tuple(momentum_shape(state))} with "
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
        state = copied(state)
    if reset_momentum:
        state = reset(state)
    if batch_dims:
        direction, new_state = update(est, state, beta=beta, inplace=True)
        move(x, gamma, direction, batch_dims, weight_decay)
        return new_state
    return apply(x, state, est, gamma=gamma, beta=beta, weight_decay=weight_decay, mode=est.mode)

