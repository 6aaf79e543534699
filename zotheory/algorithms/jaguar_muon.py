"""JAGUAR Muon: Algorithm 2 of Petrov et al. (2025), exactly as the pseudocode.

Pseudocode (seed 003, "Algorithm 2: JAGUAR Muon")::

    Parameters: gamma (stepsize), beta (momentum), tau (grad. approx.),
                ns_steps (Newton-Schulz steps), T (iterations).
    Init: X^0 in R^{m x n}, M^{-1} = 0_{m x n}.
    for t = 0 to T do
        Sample i_t ~ U(1..m), j_t ~ U(1..n);  E^t <- one-hot(i_t, j_t);  sample xi^t ~ D
        g <- (f_+ - f_-) / (2 tau),  f_+ = f^(X^t + tau E^t, xi^t),  f_- = f^(X^t - tau E^t, xi^t)
        M^t_{i_t, j_t} <- beta M^{t-1}_{i_t, j_t} + (1 - beta) g
        M^t_{(i, j) != (i_t, j_t)} <- M^{t-1}_{i, j}          (momentum persists across steps)
        X^{t+1} <- X^t - gamma * Newton_Schulz(M^t, K = ns_steps)
    end for
    Return X^{N(T)}, N(T) ~ U(1..T)   (the runner's job, not this kernel's)

    Subroutine Newton_Schulz(A in R^{m x n}, K = 10):
        A^0 <- A / ||A||_F;  for k = 0 to K: A^{k+1} <- 3/2 A^k - 1/2 A^k (A^k)^T A^k;  Return A^K

(The seed prints the keep-rule as ``M_{i != i_t, j != j_t}``; read literally that would
leave the entries sharing a row or a column with ``(i_t, j_t)`` undefined. The LaTeX
draft and Algorithm 1 make the intent plain: every entry other than the sampled one
keeps its value. That is what this module does.)

Symbols -> arguments

===================  =============================================================
paper                code
===================  =============================================================
gamma                ``step(..., gamma=)`` (number or per-run tensor), > 0
beta                 ``update(..., beta=)`` / ``step(..., beta=)``, in [0, 1)
tau                  ``step(..., tau=)``, > 0
ns_steps (K)         ``ns_steps`` (integer >= 1; ``None`` = the method's default:
                     10 for ``ns3`` as in the seed, 5 for ``ns5``)
Newton_Schulz        ``orthogonalization``: ``"ns3"`` (default, the pseudocode's
                     subroutine), ``"exact"`` (SVD polar factor, what the proof of
                     Theorem 2 uses), ``"ns5"`` (Keller Jordan's quintic); see
                     :mod:`zotheory.orthogonalize`
(i_t, j_t)           one flat index ``i_t * n + j_t`` in ``CoordinateEstimate.indices``
                     (``step(..., indices=)`` to fix it)
g                    ``CoordinateEstimate.values``
M^t                  ``JaguarMuonState``: sparse (``indices``, ``values``) or dense (``momentum``)
xi^t                 the ``oracle`` passed to ``step`` (one iteration's oracle)
===================  =============================================================

Sampling. ``(i_t, j_t)`` is drawn as ONE flat index ``p ~ U{0, ..., mn - 1}`` with
:func:`zotheory.random.sample_coordinates` (for ``k = 1`` exactly
``torch.randint(0, m*n, (*batch, 1), generator=g)``), and ``(i_t, j_t) = (p // n, p % n)``
(row-major, the layout of ``X.reshape(-1)``). The map ``(i, j) -> i n + j`` is a
bijection of ``{0..m-1} x {0..n-1}`` onto ``{0..mn-1}``, so a uniform flat index is
the same distribution as independent uniform ``i`` and ``j``.

Citation: E. Petrov, G. Evseev, A. Antonov, A. Veprikov, P. Plyusnin, N. Bushkov,
S. Moiseev, A. Beznosikov, "Leveraging Coordinate Momentum in SignSGD and Muon:
Memory-Optimized Zero-Order LLM Fine-Tuning", arXiv:2506.04430 (2025).

Deviations
----------
None for ``coords_per_step = 1`` and ``orthogonalization = "ns3"`` (the defaults):
the kernel follows the literal transcription :func:`zotheory.reference.jaguar_muon.run`
step by step on the same generator seed: bitwise-equal float64 iterates for ``m <= n``;
for ``m > n`` equal to ~1e-12 after 41 steps, because :mod:`zotheory.orthogonalize`
iterates on ``A^T`` (``A (A^T A)`` instead of ``(A A^T) A``, a rounding difference only;
see ``tests/test_muon_and_fo_rules.py``).
The Newton-Schulz numerical guards (zero matrix -> zero direction, computation in at
least float32, iteration on ``A^T`` when ``m > n``) are described in
:mod:`zotheory.orthogonalize` and change no value beyond rounding.

Named generalisations (off by default, not the paper):

* ``coords_per_step = k > 1``: ``k`` distinct entries per step, each with its own
  central difference (``2k`` oracle calls); the momentum write rule is applied at each.
* a ``"block"`` estimate (``estimators.jaguar_block``, the authors' released code): one
  scalar difference written into every entry of a random block; used by the LLM shell's
  ``mode="block"``.
* ``orthogonalization = "exact"`` or ``"ns5"`` (see above). The seed's subroutine has
  ``K = 10``; the LaTeX draft writes ``K = 5`` -- seed 003 governs.

Shapes. ``x`` is ``(m, n)`` (``batch_dims = 0``) or ``(B, m, n)`` (``batch_dims = 1``,
one independent run per leading index). Any other rank raises ``ValueError``; use
:func:`zotheory.orthogonalize.as_matrix` in a shell for vectors and conv weights.
The momentum is kept in ``torch.promote_types(x.dtype, float32)``, in JAGUAR SignSGD's two exact
forms (:mod:`zotheory.algorithms.jaguar_signsgd`, "State"): sorted flat indices of ``M``
(row-major) + values while they are at most 1/16 of the matrix, the dense buffer after (and
always for a batch of runs), with the same write and the same switch rule. ``NS(M)`` needs the
whole matrix: a sparse state is orthogonalized through a dense transient of that one matrix
(bitwise the dense buffer), so the persistent state is ``O(min(t k, mn))`` while the step's
workspace is Newton-Schulz's own.

Lists of tensors (a model's parameters; :mod:`zotheory.algorithms._lists`): one coordinate
estimate over the concatenation of all tensors (as JAGUAR SignSGD), split per tensor. Each
2-D tensor keeps its momentum matrix and moves by ``-gamma * NS(M)``. Tensors that are not
matrices follow ``non_matrix`` (given to ``init``): ``"sign"`` (default) gives them JAGUAR
SignSGD's rule on the same estimate (same momentum write, ``sign(m)``), in the spirit of
Muon practice, which hands non-matrix weights to another optimizer; ``"column"`` views
them with ``as_matrix(t, "column")`` (a vector ``v`` moves by ``-gamma v / ||v||``). A
matrix whose momentum is still all zero and that received no coordinate is skipped (its
direction ``NS(0) = 0``); an empty sparse state says so.
``reset_momentum`` and ``weight_decay`` are JAGUAR SignSGD's named options.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

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
from ..estimates import CoordinateEstimate
from ..orthogonalize import METHODS, as_matrix, orthogonalize
from . import _lists, jaguar_signsgd
from ._zo_common import ParamSpec, check_batch_dims, decays, move
from .jaguar_signsgd import compact, copied, dense_momentum, load_state, momentum_shape, write

__all__ = ["JaguarMuonState", "init", "update", "step", "apply", "compact", "load_state", "NON_MATRIX_RULES"]

#: How a list's non-matrix tensors move: JAGUAR SignSGD's rule, or viewed as a column.
NON_MATRIX_RULES = ("sign", "column")


class IterationOracle(Protocol):
    def value(self, x: torch.Tensor) -> torch.Tensor: ...


@dataclass
class JaguarMuonState:
    """M^{t-1} in one of JAGUAR SignSGD's two exact forms (``jaguar_signsgd``, "State").

    ``momentum``: the dense buffer (shape of ``x``), or None while sparse; ``indices`` /
    ``values``: the sparse form (sorted flat indices of ``M.reshape(-1)`` and M there), None
    while dense; ``step``: iterations done; ``batch_dims``; ``spec``: the dense momentum's
    shape, dtype and device.
    """

    momentum: torch.Tensor | None
    step: int = 0
    batch_dims: int = 0
    indices: torch.Tensor | None = None
    values: torch.Tensor | None = None
    spec: ParamSpec | None = None


def _check_matrix(x: torch.Tensor, batch_dims: int) -> None:
    check_batch_dims(x, batch_dims, min_event_dims=2)
    check_tensor_rank("x", x, 2, batch_dims=batch_dims)


def _check_ns(orthogonalization: str, ns_steps: int | None) -> None:
    check_choice("orthogonalization", orthogonalization, METHODS)
    if ns_steps is not None:
        check_int_at_least("ns_steps", ns_steps, 1)


def init(x: torch.Tensor | Sequence[torch.Tensor], *, batch_dims: int = 0, non_matrix: str = "sign") -> Any:
    """M^{-1} = 0 with the shape of ``x`` (``(m, n)`` or ``(B, m, n)``).

    A list of tensors gets one state per tensor: matrices a :class:`JaguarMuonState`, other
    tensors by ``non_matrix`` (``"sign"``: a JAGUAR SignSGD state; ``"column"``: a
    :class:`JaguarMuonState` of their ``as_matrix(t, "column")`` shape).
    """
    if _lists.is_list(x):
        check_choice("non_matrix", non_matrix, NON_MATRIX_RULES)

        def one(t: torch.Tensor) -> Any:
            if t.ndim != 2 and non_matrix == "sign":
                return jaguar_signsgd.init(t)
            return init(as_matrix(t, "column"))

        return _lists.init_states(x, one)
    _check_matrix(x, batch_dims)
    return jaguar_signsgd.empty_state(JaguarMuonState, x, batch_dims)


def update(
    estimate: CoordinateEstimate,
    state: JaguarMuonState,
    *,
    beta: float | torch.Tensor,
    orthogonalization: str = "ns3",
    ns_steps: int | None = None,
    inplace: bool = False,
) -> tuple[torch.Tensor, JaguarMuonState]:
    """One momentum write and the orthogonalized direction: ``(NS(M^t), new_state)``.

    Only the sampled entries of ``M`` change (``M_p <- beta M_p + (1 - beta) g_p``);
    every other entry keeps its value. A ``"block"`` estimate (the authors' released-code
    estimator, not Algorithm 2) is written with the same rule at every entry of the block. With ``inplace=False`` neither ``estimate``
    nor ``state`` is modified; with ``inplace=True`` ``state.momentum`` is
    overwritten and shared with the new state.
    """
    if not isinstance(estimate, CoordinateEstimate):
        raise ValueError(f"estimate must be a CoordinateEstimate, got {type(estimate).__name__}")
    if estimate.mode not in ("coordinate", "block"):
        raise ValueError(f"estimate.mode must be 'coordinate' or 'block' for JAGUAR Muon, got {estimate.mode!r}")
    _check_ns(orthogonalization, ns_steps)
    if len(momentum_shape(state)) != 2 + state.batch_dims:
        raise ValueError(f"state.momentum must be a matrix (after {state.batch_dims} batch dimension(s)), "
                         f"got shape {tuple(momentum_shape(state))}")
    new_state = write(state, estimate, beta, inplace=inplace)
    # a sparse state is orthogonalized through a dense transient of this one matrix
    direction = orthogonalize(dense_momentum(new_state), orthogonalization, ns_steps, batch_dims=state.batch_dims)
    return direction, new_state


def apply(
    x: torch.Tensor,
    state: Any,
    estimate: CoordinateEstimate | None,
    *,
    gamma: float | torch.Tensor,
    beta: float | torch.Tensor,
    orthogonalization: str = "ns3",
    ns_steps: int | None = None,
    weight_decay: float | torch.Tensor = 0.0,
    mode: str = "coordinate",
) -> Any:
    """``update`` then ``move`` on one tensor of a list (``estimate`` None: no coordinate in it).

    A JAGUAR SignSGD state (a non-matrix tensor under ``non_matrix="sign"``) goes to
    :func:`jaguar_signsgd.apply`; a matrix state moves ``x`` (viewed as the state's matrix)
    by ``-gamma * NS(M)``; an all-zero momentum with no new coordinate is skipped.
    """
    if isinstance(state, jaguar_signsgd.JaguarSignSGDState):
        return jaguar_signsgd.apply(x, state, estimate, gamma=gamma, beta=beta, weight_decay=weight_decay, mode=mode)
    if estimate is None:
        if jaguar_signsgd.known_zero(state) and not decays(weight_decay) and _lists.FAST_PATHS:
            return dataclasses.replace(state, step=state.step + 1)  # NS(0) = 0: x - gamma * 0 == x
        estimate = jaguar_signsgd._empty_estimate(mode, x.device)
    direction, new_state = update(
        estimate, state, beta=beta, orthogonalization=orthogonalization, ns_steps=ns_steps, inplace=True
    )
    reuse = _lists.is_temporary(direction, x.reshape(direction.shape), new_state)
    move(x, gamma, direction.view(x.shape), state.batch_dims, weight_decay, reuse_direction=reuse)
    return new_state


def step(
    x: torch.Tensor | Sequence[torch.Tensor],
    oracle: IterationOracle | Callable[[], Any],
    state: Any,
    *,
    gamma: float | torch.Tensor | Sequence[float],
    beta: float | torch.Tensor | Sequence[float],
    tau: float | torch.Tensor,
    generator: torch.Generator | None = None,
    orthogonalization: str | Sequence[str] = "ns3",
    ns_steps: int | None | Sequence[int | None] = None,
    coords_per_step: int = 1,
    mode: str = "coordinate",
    block_fraction: float = 0.1,
    reset_momentum: bool = False,
    weight_decay: float | torch.Tensor | Sequence[float] = 0.0,
    batch_dims: int = 0,
    indices: torch.Tensor | None = None,
    inplace: bool = True,
) -> Any:
    """One iteration of Algorithm 2 on ``x`` (moved in place); returns the new state.

    Draws the flat index of ``(i_t, j_t)`` from ``generator`` (unless ``indices`` is
    given, shape ``(*batch_shape, k)``), estimates with ``closure = lambda:
    oracle.value(x)`` (2 oracle calls per entry), writes the momentum and moves
    ``x <- x - gamma * NS(M^t)``. ``inplace=True`` (drivers) reuses ``state``'s buffer.
    ``x`` may be a list of tensors (``oracle`` then a closure, ``state`` the list ``init``
    returned; see the module doc).
    """
    if not isinstance(reset_momentum, bool):
        raise ValueError(f"reset_momentum must be a bool, got {reset_momentum!r}")
    if _lists.is_list(x):
        xs, states, gammas, decay = _lists.prologue(x, state, gamma, weight_decay, batch_dims)
        n = len(xs)
        betas = _lists.per_tensor("beta", beta, n, check_momentum)
        orth = _lists.per_tensor("orthogonalization", orthogonalization, n)
        steps = _lists.per_tensor("ns_steps", ns_steps, n)
        for o, k_ns in zip(orth, steps):
            _check_ns(o, k_ns)
        return jaguar_signsgd.list_step(
            xs, oracle, states, tau=tau, generator=generator, coords_per_step=coords_per_step, mode=mode,
            block_fraction=block_fraction, reset_momentum=reset_momentum, indices=indices,
            apply_one=lambda i, t, s, piece, m: apply(t, s, piece, gamma=gammas[i], beta=betas[i],
                                                      orthogonalization=orth[i], ns_steps=steps[i],
                                                      weight_decay=decay[i], mode=m))

    _check_matrix(x, batch_dims)
    if batch_dims != state.batch_dims or momentum_shape(state) != x.shape:
        raise ValueError(
            f"state does not match x: momentum shape {tuple(momentum_shape(state))} with "
            f"batch_dims={state.batch_dims}, x shape {tuple(x.shape)} with batch_dims={batch_dims}"
        )
    check_positive("gamma", gamma)
    check_positive("tau", tau)
    check_in_range("beta", beta, 0.0, 1.0, low_closed=True, high_closed=False)
    check_nonnegative("weight_decay", weight_decay)
    _check_ns(orthogonalization, ns_steps)
    k = jaguar_signsgd.check_step_options(coords_per_step, mode, block_fraction, indices, generator)
    est = jaguar_signsgd.draw_estimate(
        x, _lists.closure_of(oracle, x), tau, generator=generator, coords_per_step=k, mode=mode,
        block_fraction=block_fraction, batch_dims=batch_dims, indices=indices)
    if not inplace:
        state = copied(state)
    if reset_momentum:
        state = jaguar_signsgd.reset(state)
    direction, new_state = update(
        est, state, beta=beta, orthogonalization=orthogonalization, ns_steps=ns_steps, inplace=True
    )
    move(x, gamma, direction, batch_dims, weight_decay)
    return new_state
