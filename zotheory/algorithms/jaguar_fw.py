r"""JAGUAR-d and JAGUAR-s: the coordinate memories of arXiv 2409.10442, exactly as written.

Pseudocode (``../shared/EXTENSIONS.md`` section 1; ``e_i`` a coordinate vector, ``i ~ U{1..d}``)::

    g_i   = ( f^(x^k + tau e_i) - f^(x^k - tau e_i) ) / (2 tau)          (2 oracle calls)
    JAGUAR-d:  h^{k+1} = h^k - <h^k, e_i> e_i + g_i e_i                   (coordinate i replaced)
    JAGUAR-s:  rho^k   = h^k - d <h^k, e_i> e_i + d g_i e_i               (h^k: BEFORE the replacement)
               h^{k+1} = h^k - <h^k, e_i> e_i + g_i e_i
               g^{k+1} = (1 - eta_k) g^k + eta_k rho^k                   (SEGA-type estimate, momentum)
    direction: h^{k+1} (JAGUAR-d) or g^{k+1} (JAGUAR-s)
    Frank-Wolfe:        s = argmin_{s in Q} <s, direction>,  x^{k+1} = x^k + gamma_k (s - x^k)
    projected gradient: x^{k+1} = Proj_Q(x^k - gamma_k direction)
    start: h^0 (and g^0) = 0, or the full difference sum_i (f^(x^0+tau e_i) - f^(x^0-tau e_i))/(2 tau) e_i (2d calls)

Symbols -> arguments

===========  ==============================================================
paper        code
===========  ==============================================================
h^k          ``JaguarFWState.memory`` (dense, shape of ``x``)
g^k          ``JaguarFWState.momentum`` (JAGUAR-s; ``None`` for JAGUAR-d)
rho^k        computed in :func:`update` (not stored)
g_i, i       ``CoordinateEstimate.values`` / ``.indices`` (:func:`zotheory.estimators.jaguar_coordinates`)
eta_k        ``update(..., eta=)`` / ``step(..., eta=)``, in (0, 1] (JAGUAR-s only)
gamma_k      ``step(..., gamma=)``: in [0, 1] for Frank-Wolfe, >= 0 for projected GD
tau          ``step(..., tau=)``, > 0
Q            ``step(..., Q=)``: a :class:`zotheory.constraints.ConstraintSet`
d            the event numel of ``x``
===========  ==============================================================

Schedules (``zotheory.constraints.fw_step_deterministic`` etc.): ``step(..., schedule="constant")``
takes this iteration's numbers (or per-run tensors); ``schedule="deterministic"`` / ``"stochastic"``
computes ``gamma_k`` (times ``gamma``, the scale) and JAGUAR-s's ``eta_k`` from ``k = state.step``
(:func:`schedule_values`; the synthetic engine's way).

Citation: "New Aspects of Black Box Conditional Gradient: Variance Reduction and One Point
Feedback", arXiv:2409.10442 (2024); earlier versions in ``intsystems/Bogdanov-BS-Thesis``
(its experiment code's defects, not copied here: EXTENSIONS.md section 1).

The JAGUAR-d write is JAGUAR SignSGD's momentum write with ``beta = 0``
(:func:`zotheory.algorithms.jaguar_signsgd.write_momentum`), reused, not copied. Its value at
``i`` is ``0 * h_i + 1 * g_i``, which equals ``g_i`` (the replacement) for every finite ``h_i``
(the memory only ever holds finite estimates); the bits differ only in the sign of a zero
(``g_i = -0`` with ``h_i >= +0`` gives ``+0``), which no comparison, LMO (they compare) or move sees.

Deviations
----------
None for one coordinate per step (``k = 1``). Named generalisation: JAGUAR-d with ``k > 1``
distinct coordinates per estimate replaces each of them (JAGUAR-s requires ``k = 1``: the
SEGA factor ``d`` is for one coordinate). The literal transcription is
:mod:`zotheory.reference.jaguar_fw` (tests: ``tests/test_jaguar_fw.py``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

from .._checks import check_choice, check_in_range, check_nonnegative, check_positive
from ..estimates import CoordinateEstimate
from ._zo_common import batch_shape, check_batch_dims, per_run, require_generator
from .jaguar_signsgd import write_momentum

__all__ = ["JaguarFWState", "VARIANTS", "STARTS", "METHODS", "SCHEDULES", "init", "update", "estimate",
           "schedule_values", "step"]

VARIANTS = ("d", "s")
STARTS = ("zeros", "full")
METHODS = ("fw", "pgd")
SCHEDULES = ("constant", "deterministic", "stochastic")


@dataclass
class JaguarFWState:
    """``memory``: h (shape of ``x``, ``promote_types(x.dtype, float32)``); ``momentum``: g
    (JAGUAR-s) or ``None`` (JAGUAR-d); ``variant``: ``"d"`` or ``"s"``; ``step``: updates done;
    ``batch_dims``; ``oracle_calls``: spent by :func:`init` (``2d`` for the full-difference start)."""

    memory: torch.Tensor
    momentum: torch.Tensor | None
    variant: str
    step: int = 0
    batch_dims: int = 0
    oracle_calls: int = 0


def init(x: torch.Tensor, *, variant: str = "d", start: str = "zeros", oracle: Any = None,
         tau: float | torch.Tensor | None = None, batch_dims: int = 0) -> JaguarFWState:
    """h^0 (and g^0 for JAGUAR-s): zeros, or the full coordinate difference at ``x`` (``start="full"``,
    needs ``oracle`` and ``tau``; ``2d`` oracle calls, g^0 = h^0)."""
    from .. import estimators
    from . import _lists

    check_batch_dims(x, batch_dims)
    check_choice("variant", variant, VARIANTS)
    check_choice("start", start, STARTS)
    dtype = torch.promote_types(x.dtype, torch.float32)
    calls = 0
    if start == "zeros":
        h = torch.zeros(x.shape, dtype=dtype, device=x.device)
    else:
        if oracle is None or tau is None:
            raise ValueError("start='full' needs oracle= and tau= (h^0 is the full difference at x)")
        est = estimators.full_coordinate_difference(x, _lists.closure_of(oracle, x), tau, batch_dims=batch_dims)
        h, calls = est.values.to(dtype).reshape(x.shape), est.oracle_calls
    g = None if variant == "d" else h.clone()
    return JaguarFWState(memory=h, momentum=g, variant=variant, batch_dims=batch_dims, oracle_calls=calls)


def update(estimate: CoordinateEstimate, state: JaguarFWState, *, eta: float | torch.Tensor | None = None,
           inplace: bool = False) -> tuple[torch.Tensor, JaguarFWState]:
    """The memory rule (module doc): returns ``(direction, new_state)``, direction ``h^{k+1}``
    (JAGUAR-d) or ``g^{k+1}`` (JAGUAR-s); it is the new state's buffer (do not modify it).
    ``inplace=False`` never mutates ``state``."""
    if not isinstance(estimate, CoordinateEstimate) or estimate.mode != "coordinate":
        raise ValueError("estimate must be a CoordinateEstimate with mode='coordinate' (jaguar_coordinates)")
    h_old = state.memory
    batch = batch_shape(h_old, state.batch_dims)
    event_ndim = h_old.ndim - state.batch_dims
    d = math.prod(h_old.shape[state.batch_dims:])
    idx = estimate.indices
    if tuple(idx.shape[:-1]) != batch:
        raise ValueError(f"estimate.indices must have shape (*{batch}, k), got {tuple(idx.shape)}")
    g_i = estimate.values.to(h_old.dtype)
    momentum = None
    if state.variant == "s":
        if estimate.k != 1:
            raise ValueError(f"JAGUAR-s takes one coordinate per step (k = 1), got k = {estimate.k}")
        if eta is None:
            raise ValueError("eta must be given for JAGUAR-s, a number in (0, 1]")
        check_in_range("eta", eta, 0.0, 1.0, low_closed=False, high_closed=True)
        flat_old = h_old.reshape(*batch, -1)
        h_oi = flat_old.gather(-1, idx)
        rho = flat_old.clone()
        rho.scatter_(-1, idx, h_oi - d * h_oi + d * g_i)  # from h_old: before the replacement
        e = per_run("eta", eta, batch, event_ndim, h_old)
        m = state.momentum if inplace else state.momentum.clone()
        momentum = m.mul_(1 - e).add_(e * rho.view(h_old.shape))
    elif eta is not None:
        raise ValueError(f"eta is for JAGUAR-s only (variant 's'), got eta={eta!r} with variant 'd'")
    h = h_old if inplace else h_old.clone()
    write_momentum(h, idx, g_i, 0.0, state.batch_dims)  # h_i <- g_i: the beta = 0 write
    new = dataclasses.replace(state, memory=h, momentum=momentum, step=state.step + 1)
    return (h if state.variant == "d" else momentum), new


def estimate(x: torch.Tensor, oracle: Any, state: JaguarFWState, *, tau: float | torch.Tensor,
             eta: float | torch.Tensor | None = None, generator: torch.Generator | None = None,
             indices: torch.Tensor | None = None, batch_dims: int = 0,
             inplace: bool = True) -> tuple[torch.Tensor, JaguarFWState]:
    """Estimate -> memory update, without moving ``x``: one coordinate (drawn from ``generator``,
    or ``indices`` of shape ``(*batch, k)``), 2 oracle calls; returns ``(direction, new_state)``."""
    from .. import estimators
    from . import _lists

    check_batch_dims(x, batch_dims)
    if state.memory.shape != x.shape or state.batch_dims != batch_dims:
        raise ValueError(f"state does not match x: memory shape {tuple(state.memory.shape)} with batch_dims="
                         f"{state.batch_dims}, x shape {tuple(x.shape)} with batch_dims={batch_dims}")
    check_positive("tau", tau)
    if indices is None:
        require_generator(generator, "indices")
    est = estimators.jaguar_coordinates(x, _lists.closure_of(oracle, x), tau, generator=generator,
                                        indices=indices, batch_dims=batch_dims)
    return update(est, state, eta=eta, inplace=inplace)


def schedule_values(schedule: str, k: int, d: int, variant: str, gamma: float | torch.Tensor,
                    eta: float | torch.Tensor | None) -> tuple[float | torch.Tensor, float | torch.Tensor | None]:
    """This iteration's ``(gamma_k, eta_k)`` under ``schedule`` (``k`` = updates done, from 0).

    ``"constant"``: ``(gamma, eta)`` as given. ``"deterministic"``: ``gamma_k = gamma * 4 / (k + 8 d)``
    (``gamma`` is the schedule's scale, 1 = the paper's), ``eta`` as given (a constant, JAGUAR-s).
    ``"stochastic"``: ``gamma_k = gamma * 4 / (k + 8 d^{3/2})`` and, for JAGUAR-s,
    ``eta_k = 4 / (k + 8 d^{3/2})^{2/3}`` (``eta`` must then not be given).
    """
    from ..constraints import fw_step_deterministic, fw_step_stochastic, momentum_stochastic

    check_choice("schedule", schedule, SCHEDULES)
    if schedule == "constant":
        return gamma, eta
    if schedule == "deterministic":
        return gamma * fw_step_deterministic(k, d), eta
    if variant == "s":
        if eta is not None:
            raise ValueError(f"schedule='stochastic' sets eta_k itself; got eta={eta!r}")
        eta = momentum_stochastic(k, d)
    return gamma * fw_step_stochastic(k, d), eta


def step(x: torch.Tensor, oracle: Any, state: JaguarFWState, *, gamma: float | torch.Tensor,
         tau: float | torch.Tensor, Q: Any, method: str = "fw", eta: float | torch.Tensor | None = None,
         schedule: str = "constant", generator: torch.Generator | None = None,
         indices: torch.Tensor | None = None, batch_dims: int = 0, inplace: bool = True) -> JaguarFWState:
    """One iteration: :func:`estimate`, then the Frank-Wolfe move (``method="fw"``,
    ``x <- x + gamma (Q.lmo(D) - x)``) or the projected step (``"pgd"``, ``x <- Q.project(x - gamma D)``),
    ``x`` (shape ``(d,)`` or ``(B, d)``) moved in place. ``schedule`` (:func:`schedule_values`, with
    ``k = state.step``): ``"constant"`` uses ``gamma`` and ``eta`` as given (this iteration's numbers)."""
    from ..constraints import ConstraintSet, frank_wolfe_move, projected_step

    check_choice("method", method, METHODS)
    if not isinstance(Q, ConstraintSet):
        raise ValueError(f"Q must be a zotheory.constraints.ConstraintSet, got {type(Q).__name__}")
    gamma, eta = schedule_values(schedule, state.step, math.prod(x.shape[batch_dims:]), state.variant, gamma, eta)
    if method == "fw":
        check_in_range("gamma", gamma, 0.0, 1.0, low_closed=True, high_closed=True)
    else:
        check_nonnegative("gamma", gamma)
    direction, new = estimate(x, oracle, state, tau=tau, eta=eta, generator=generator, indices=indices,
                              batch_dims=batch_dims, inplace=inplace)
    D = direction.to(x.dtype)
    if method == "fw":
        frank_wolfe_move(x, Q.lmo(D), gamma)
    else:
        projected_step(x, D, gamma, Q)
    return new
