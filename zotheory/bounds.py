"""Right-hand sides of Theorems 1 and 2 of Petrov et al. (arXiv:2506.04430) as numbers.

The derivation of every constant is in ``docs/bounds.md``; this module only
evaluates it. Summary (``A_T := (1/T) sum_{t=0}^{T-1} E||grad f(x^t)||``, the
trajectory average that ``E||grad f(x^{N(T)})||`` equals for ``N(T)`` uniform):

Theorem 1 (JAGUAR SignSGD, l1 norm, x in R^d)::

    A_T <=  1          * delta0 / (gamma T)                               "init"
          + 8          * d^{3/2} ||grad f(x^0)||_2 / (T (1 - beta))       "momentum_warmup"
          + (2√6 + ½)  * d^2 L gamma / (1 - beta)                         "step"
          + 4          * sqrt(d (1 - beta)) sigma                         "variance"
          + 2          * d L tau                                          "bias"
          + 4          * d Delta / tau                                    "oracle_noise"

Theorem 2 (JAGUAR Muon with the exact polar factor, nuclear norm, X in R^{m x n}, n <= m)::

    A_T <=  1          * delta0 / (gamma T)
          + 8          * m n^{3/2} ||grad f(X^0)||_F / (T (1 - beta))
          + (2√6 + ½)  * m n^2 L gamma / (1 - beta)
          + 4          * sqrt(n (1 - beta)) sigma
          + 2          * m^{1/2} n L tau
          + 4          * m^{1/2} n Delta / tau

These "corrected" shapes are what the proof gives. The paper prints some terms
with other shapes; each such term has a keyword selecting ``"as_printed"``:

* ``warmup_term``: printed ``d ||g0|| / (T sqrt(1-beta))`` (Thm 1),
  ``m^{1/2} n ||g0|| / (T sqrt(1-beta))`` (Thm 2). The proof does NOT give these
  (it sums a geometric series ``sum_t rho^{t/2}`` as if it were ``(1-rho)^{-1/2}``);
  no constant makes them follow from it, so ``constants="derived"`` with
  ``"as_printed"`` is a number, not a proven bound.
* ``variance_term``: printed ``sqrt(1-beta) d sigma`` (Thm 1),
  ``sqrt(1-beta) m^{1/2} n sigma`` (Thm 2). Larger than the corrected shape, so
  with the derived constant 4 it is still a valid (looser) bound.
* ``gamma_term`` (Thm 2 only): printed ``m^{3/2} n^2 gamma / (1-beta)`` has no
  ``L`` and is not invariant under ``f -> c f``; ``"printed_with_L"`` is
  ``m^{3/2} n^2 L gamma / (1-beta)`` (valid with the derived constant, looser than
  ``"corrected"`` by ``sqrt(m)``); ``"as_printed"`` is the term without ``L``
  (not a bound of any proof).

``constants="unit"`` sets every constant to 1 (the O() terms, for exponent checks).

Hyperparameters are constants over the run (the theorems' setting); schedules that
vary with t are not covered. Every numeric argument may be a number or a numpy
array (broadcast together); scalars in give floats out, arrays in give arrays out.
``d, m, n, T`` must be integers (or integer arrays).
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

import numpy as np
import torch

from . import _checks

__all__ = [
    "THEOREM1_CONSTANTS",
    "THEOREM2_CONSTANTS",
    "TERM_NAMES",
    "theorem1_terms",
    "theorem2_terms",
    "theorem1_arbitrary_schedule",
    "theorem1_optimal_schedule",
    "theorem2_arbitrary_schedule",
    "theorem2_optimal_schedule",
    "optimal_tau",
    "theorem1_floor",
    "theorem2_floor",
    "predicted_exponents",
]

TERM_NAMES = ("init", "momentum_warmup", "step", "variance", "bias", "oracle_noise")

_STEP_CONSTANT = 2.0 * math.sqrt(6.0) + 0.5  # 2 sqrt(6) from the momentum lemma, 1/2 from L gamma^2 / 2

#: Constants derived in docs/bounds.md (section "Theorem 1: the constants").
THEOREM1_CONSTANTS: dict[str, float] = {
    "init": 1.0,
    "momentum_warmup": 8.0,
    "step": _STEP_CONSTANT,
    "variance": 4.0,
    "bias": 2.0,
    "oracle_noise": 4.0,
}
#: Constants derived in docs/bounds.md (section "Theorem 2"); numerically the same as Theorem 1's.
THEOREM2_CONSTANTS: dict[str, float] = dict(THEOREM1_CONSTANTS)

_UNIT = {name: 1.0 for name in TERM_NAMES}
_WINDOWS = ("0..T-1", "1..T", "0..T")


# --------------------------------------------------------------------------- validation


def _to_check_value(name: str, value: Any) -> Any:
    """Hand ``value`` to ``_checks`` (numbers as they are, arrays as float64 tensors)."""
    if isinstance(value, bool) or isinstance(value, np.bool_):
        raise ValueError(f"{name} must be a real number or array, got {value!r}")
    if isinstance(value, Real):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype == bool or not np.issubdtype(value.dtype, np.number) or np.iscomplexobj(value):
            raise ValueError(f"{name} must be a real number or a real array, got {value!r}")
        if value.size == 0:
            raise ValueError(f"{name} must be a non-empty array, got an empty array")
        return torch.from_numpy(np.ascontiguousarray(value, dtype=np.float64))
    if isinstance(value, (list, tuple)):
        return _to_check_value(name, np.asarray(value))
    raise ValueError(f"{name} must be a real number or a numpy array, got {value!r}")


def _real(name: str, value: Any, rule: str) -> np.ndarray:
    """Validate with ``_checks`` and return a float64 array. rule: positive | nonnegative | beta."""
    v = _to_check_value(name, value)
    if rule == "positive":
        _checks.check_positive(name, v)
    elif rule == "nonnegative":
        _checks.check_nonnegative(name, v)
    elif rule == "beta":
        _checks.check_in_range(name, v, 0.0, 1.0, low_closed=True, high_closed=False)
    else:  # pragma: no cover - internal misuse
        raise AssertionError(rule)
    return np.asarray(value, dtype=np.float64)


def _integer(name: str, value: Any, low: int = 1) -> np.ndarray:
    """An integer (or integer array) >= low, returned as float64 (for arithmetic)."""
    if isinstance(value, (list, tuple)):
        value = np.asarray(value)
    if isinstance(value, np.ndarray):
        if value.size == 0 or not np.issubdtype(value.dtype, np.integer):
            raise ValueError(f"{name} must be an integer >= {low} or an integer array, got {value!r}")
        if not bool((value >= low).all()):
            raise ValueError(f"{name} must be an integer >= {low}, got an array with minimum {value.min()}")
        return value.astype(np.float64)
    _checks.check_int_at_least(name, value, low)
    return np.asarray(float(int(value)))


def _out(x: np.ndarray, scalar: bool) -> Any:
    return float(x) if scalar else x


def _all_scalar(*values: Any) -> bool:
    return all(not isinstance(v, (np.ndarray, list, tuple)) for v in values)


def _constants(name: str, which: str, derived: dict[str, float]) -> dict[str, float]:
    _checks.check_choice(name, which, ("derived", "unit"))
    return derived if which == "derived" else _UNIT


def _window_factor(window: str, T: np.ndarray) -> np.ndarray:
    _checks.check_choice("window", window, _WINDOWS)
    return np.ones_like(T) if window == "0..T-1" else (T + 1.0) / T


# --------------------------------------------------------------------------- theorems


def theorem1_terms(
    *,
    delta0: Any,
    grad0_norm2: Any,
    d: Any,
    L: Any,
    sigma: Any,
    Delta: Any,
    gamma: Any,
    beta: Any,
    tau: Any,
    T: Any,
    constants: str = "derived",
    warmup_term: str = "corrected",
    variance_term: str = "corrected",
    window: str = "0..T-1",
) -> dict[str, Any]:
    """The six terms of Theorem 1 (each with its constant) and their sum ``"total"``.

    Bounds ``(1/T) sum_{t in window} E||grad f(x^t)||_1`` for Algorithm 1 run with
    constant ``gamma, beta, tau``. Arguments: ``delta0 = f(x^0) - f*`` (>= 0),
    ``grad0_norm2 = ||grad f(x^0)||_2`` (>= 0), dimension ``d`` (int >= 1),
    ``L = sqrt(E L(xi)^2)`` (>= 0), ``sigma`` (>= 0), ``Delta`` (>= 0),
    ``gamma > 0``, ``beta in [0, 1)``, ``tau > 0``, ``T`` (int >= 1).

    constants: ``"derived"`` (docs/bounds.md) or ``"unit"`` (all 1: the O() form).
    warmup_term, variance_term: ``"corrected"`` (what the proof gives) or
    ``"as_printed"`` (the paper's shapes; see the module docstring).
    window: ``"0..T-1"`` (the iterates x^0..x^{T-1}); ``"1..T"`` (what
    ``E||grad f(x^{N(T)})||_1`` with ``N(T) ~ U{1..T}`` equals) and ``"0..T"`` (the
    draft's ``(1/T) sum_{t=0}^T``) multiply the four stationary terms by ``(T+1)/T``.
    """
    scalar = _all_scalar(delta0, grad0_norm2, d, L, sigma, Delta, gamma, beta, tau, T)
    d0 = _real("delta0", delta0, "nonnegative")
    g0 = _real("grad0_norm2", grad0_norm2, "nonnegative")
    dd = _integer("d", d)
    LL = _real("L", L, "nonnegative")
    sg = _real("sigma", sigma, "nonnegative")
    De = _real("Delta", Delta, "nonnegative")
    ga = _real("gamma", gamma, "positive")
    be = _real("beta", beta, "beta")
    ta = _real("tau", tau, "positive")
    TT = _integer("T", T)
    C = _constants("constants", constants, THEOREM1_CONSTANTS)
    _checks.check_choice("warmup_term", warmup_term, ("corrected", "as_printed"))
    _checks.check_choice("variance_term", variance_term, ("corrected", "as_printed"))
    w = _window_factor(window, TT)

    omb = 1.0 - be
    if warmup_term == "corrected":
        warm = dd**1.5 * g0 / (TT * omb)
    else:
        warm = dd * g0 / (TT * np.sqrt(omb))
    if variance_term == "corrected":
        var = np.sqrt(dd * omb) * sg
    else:
        var = np.sqrt(omb) * dd * sg
    shapes = {
        "init": d0 / (ga * TT),
        "momentum_warmup": warm,
        "step": w * dd**2 * LL * ga / omb,
        "variance": w * var,
        "bias": w * dd * LL * ta,
        "oracle_noise": w * dd * De / ta,
    }
    return _assemble(shapes, C, scalar)


def theorem2_terms(
    *,
    delta0: Any,
    grad0_norm2: Any,
    m: Any,
    n: Any,
    L: Any,
    sigma: Any,
    Delta: Any,
    gamma: Any,
    beta: Any,
    tau: Any,
    T: Any,
    constants: str = "derived",
    gamma_term: str = "corrected",
    warmup_term: str = "corrected",
    variance_term: str = "corrected",
    window: str = "0..T-1",
) -> dict[str, Any]:
    """The six terms of Theorem 2 (JAGUAR Muon, nuclear norm) and ``"total"``.

    Same arguments as :func:`theorem1_terms` with the matrix shape ``(m, n)`` in
    place of ``d``; ``grad0_norm2 = ||grad f(X^0)||_F``. The theorem assumes
    ``n <= m``; if ``n > m`` is given the roles are swapped (the algorithm with the
    exact polar factor is equivariant under transposition and both norms are
    transpose-invariant, so the bound for ``X^T`` is the bound for ``X``): the
    formulas always use ``m := max(m, n)``, ``n := min(m, n)``.

    The bound is proved for the exact polar factor ``U V^T`` (``orthogonalize(...,
    method="exact")``); Newton-Schulz outputs are not covered (docs/bounds.md).

    gamma_term: ``"corrected"`` = ``m n^2 L gamma / (1-beta)`` (the proof, using
    ``||U V^T||_F^2 = rank <= n``); ``"printed_with_L"`` = ``m^{3/2} n^2 L gamma / (1-beta)``
    (the printed shape with the missing ``L``; what the proof gives with the cruder
    ``||U V^T||_F^2 <= m n``); ``"as_printed"`` = ``m^{3/2} n^2 gamma / (1-beta)`` (no ``L``;
    not invariant under ``f -> c f``, not the bound of any proof).
    """
    scalar = _all_scalar(delta0, grad0_norm2, m, n, L, sigma, Delta, gamma, beta, tau, T)
    d0 = _real("delta0", delta0, "nonnegative")
    g0 = _real("grad0_norm2", grad0_norm2, "nonnegative")
    mm0 = _integer("m", m)
    nn0 = _integer("n", n)
    LL = _real("L", L, "nonnegative")
    sg = _real("sigma", sigma, "nonnegative")
    De = _real("Delta", Delta, "nonnegative")
    ga = _real("gamma", gamma, "positive")
    be = _real("beta", beta, "beta")
    ta = _real("tau", tau, "positive")
    TT = _integer("T", T)
    C = _constants("constants", constants, THEOREM2_CONSTANTS)
    _checks.check_choice("gamma_term", gamma_term, ("corrected", "printed_with_L", "as_printed"))
    _checks.check_choice("warmup_term", warmup_term, ("corrected", "as_printed"))
    _checks.check_choice("variance_term", variance_term, ("corrected", "as_printed"))
    w = _window_factor(window, TT)

    mm = np.maximum(mm0, nn0)
    nn = np.minimum(mm0, nn0)
    omb = 1.0 - be
    if warmup_term == "corrected":
        warm = mm * nn**1.5 * g0 / (TT * omb)
    else:
        warm = np.sqrt(mm) * nn * g0 / (TT * np.sqrt(omb))
    if gamma_term == "corrected":
        step = mm * nn**2 * LL * ga / omb
    elif gamma_term == "printed_with_L":
        step = mm**1.5 * nn**2 * LL * ga / omb
    else:
        step = mm**1.5 * nn**2 * ga / omb
    if variance_term == "corrected":
        var = np.sqrt(nn * omb) * sg
    else:
        var = np.sqrt(omb) * np.sqrt(mm) * nn * sg
    shapes = {
        "init": d0 / (ga * TT),
        "momentum_warmup": warm,
        "step": w * step,
        "variance": w * var,
        "bias": w * np.sqrt(mm) * nn * LL * ta,
        "oracle_noise": w * np.sqrt(mm) * nn * De / ta,
    }
    return _assemble(shapes, C, scalar)


def _assemble(shapes: dict[str, np.ndarray], C: dict[str, float], scalar: bool) -> dict[str, Any]:
    terms = {k: C[k] * np.asarray(shapes[k], dtype=np.float64) for k in TERM_NAMES}
    total = sum(terms[k] for k in TERM_NAMES)
    bshape = np.broadcast(*terms.values()).shape
    out = {k: _out(np.broadcast_to(v, bshape).copy() if not scalar else v, scalar) for k, v in terms.items()}
    out["total"] = _out(np.broadcast_to(total, bshape).copy() if not scalar else total, scalar)
    return out


# --------------------------------------------------------------------------- corollary schedules


def _tau_rule(L: np.ndarray, De: np.ndarray, tau_floor: Any) -> np.ndarray:
    tf = _real("tau_floor", tau_floor, "nonnegative")
    tau = np.maximum(np.sqrt(De / L), tf)
    if not bool((tau > 0).all()):
        raise ValueError(
            "tau_floor must be > 0 when Delta = 0 (tau = max(sqrt(Delta/L), tau_floor) would be 0), "
            f"got tau_floor={tau_floor!r}"
        )
    return tau


def theorem1_arbitrary_schedule(T: Any, d: Any, gamma0: Any, L: Any, Delta: Any, *, tau_floor: Any = 0.0) -> dict[str, Any]:
    """Corollary 1, "arbitrary tuning": gamma = gamma0 T^{-3/4} / d, beta = 1 - T^{-1/2}, tau.

    ``tau = max(sqrt(Delta / L), tau_floor)``: ``sqrt(Delta/L)`` is the choice of the
    optimal-tuning corollary (the draft's arbitrary-tuning corollary prints
    ``tau = T^{-1/4}`` instead; seed 003 has no corollary; PAPER.md uses sqrt(Delta/L)).
    With ``Delta = 0`` the formula gives 0, which no finite difference can use:
    pass ``tau_floor > 0`` (e.g. ``sqrt(eps_mach * |f| / L)``, the rounding-noise
    optimum), otherwise ``ValueError``.
    """
    scalar = _all_scalar(T, d, gamma0, L, Delta, tau_floor)
    TT = _integer("T", T)
    dd = _integer("d", d)
    g0 = _real("gamma0", gamma0, "positive")
    LL = _real("L", L, "positive")
    De = _real("Delta", Delta, "nonnegative")
    tau = _tau_rule(LL, De, tau_floor)
    gamma = g0 * TT**-0.75 / dd
    beta = 1.0 - TT**-0.5
    return _schedule(gamma, beta, tau, scalar)


def theorem2_arbitrary_schedule(
    T: Any, m: Any, n: Any, gamma0: Any, L: Any, Delta: Any, *, tau_floor: Any = 0.0
) -> dict[str, Any]:
    """Theorem 2's arbitrary tuning: gamma = gamma0 T^{-3/4} / (m n), beta = 1 - T^{-1/2}, tau as Thm 1."""
    scalar = _all_scalar(T, m, n, gamma0, L, Delta, tau_floor)
    TT = _integer("T", T)
    mm = _integer("m", m)
    nn = _integer("n", n)
    g0 = _real("gamma0", gamma0, "positive")
    LL = _real("L", L, "positive")
    De = _real("Delta", Delta, "nonnegative")
    tau = _tau_rule(LL, De, tau_floor)
    gamma = g0 * TT**-0.75 / (mm * nn)
    beta = 1.0 - TT**-0.5
    return _schedule(gamma, beta, tau, scalar)


def _one_minus_beta(L: np.ndarray, d0: np.ndarray, sg: np.ndarray, T: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """min(1, factor * sqrt(L delta0 / (T sigma^2))) with sigma = 0 -> 1 (min(1, inf))."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(sg > 0, factor * np.sqrt(L * d0 / T) / np.where(sg > 0, sg, 1.0), np.inf)
    return np.minimum(1.0, ratio)


def theorem1_optimal_schedule(
    T: Any,
    d: Any,
    L: Any,
    delta0: Any,
    sigma: Any,
    Delta: Any,
    *,
    tau_floor: Any = 0.0,
    tuning: str = "as_printed",
) -> dict[str, Any]:
    """Corollary 1, "optimal tuning".

    ``tuning="as_printed"`` (the corollary): ``1 - beta = min(1, sqrt(L delta0 / (T sigma^2)))``,
    ``gamma = sqrt(delta0 (1 - beta) / (d^2 L T))``, ``tau = max(sqrt(Delta/L), tau_floor)``.
    With ``sigma = 0`` the formula is ``min(1, inf) = 1``, i.e. ``beta = 0`` (no
    momentum), which is what the corollary says for a deterministic gradient.

    ``tuning="corrected"`` balances the corrected variance shape ``sqrt(d(1-beta)) sigma``
    instead: ``1 - beta = min(1, sqrt(d L delta0 / (T sigma^2)))``, same gamma and tau.
    (Both are the O()-level balance, constants 1.)  ``delta0 > 0`` and ``L > 0`` are required.
    """
    scalar = _all_scalar(T, d, L, delta0, sigma, Delta, tau_floor)
    TT = _integer("T", T)
    dd = _integer("d", d)
    LL = _real("L", L, "positive")
    d0 = _real("delta0", delta0, "positive")
    sg = _real("sigma", sigma, "nonnegative")
    De = _real("Delta", Delta, "nonnegative")
    _checks.check_choice("tuning", tuning, ("as_printed", "corrected"))
    tau = _tau_rule(LL, De, tau_floor)
    factor = np.ones_like(dd) if tuning == "as_printed" else np.sqrt(dd)
    omb = _one_minus_beta(LL, d0, sg, TT, factor)
    gamma = np.sqrt(d0 * omb / (dd**2 * LL * TT))
    return _schedule(gamma, 1.0 - omb, tau, scalar)


def theorem2_optimal_schedule(
    T: Any,
    m: Any,
    n: Any,
    L: Any,
    delta0: Any,
    sigma: Any,
    Delta: Any,
    *,
    tau_floor: Any = 0.0,
    tuning: str = "as_printed",
) -> dict[str, Any]:
    """Theorem 2's optimal tuning (the draft's Theorem-2 corollary is a copy of Corollary 1).

    ``tuning="as_printed"``: the printed gamma term with its missing ``L`` restored,
    ``gamma = sqrt(delta0 (1-beta) / (m^{3/2} n^2 L T))``, and Corollary 1's
    ``1 - beta = min(1, sqrt(L delta0 / (T sigma^2)))`` (the draft's corollary, which has
    no dimension in beta). ``tuning="corrected"`` balances the corrected shapes
    (``m n^2 L gamma/(1-beta)`` against ``delta0/(gamma T)``, then against
    ``sqrt(n(1-beta)) sigma``): ``gamma = sqrt(delta0 (1-beta) / (m n^2 L T))``,
    ``1 - beta = min(1, sqrt(m n L delta0 / (T sigma^2)))``. ``n > m`` swaps roles.
    """
    scalar = _all_scalar(T, m, n, L, delta0, sigma, Delta, tau_floor)
    TT = _integer("T", T)
    mm0 = _integer("m", m)
    nn0 = _integer("n", n)
    LL = _real("L", L, "positive")
    d0 = _real("delta0", delta0, "positive")
    sg = _real("sigma", sigma, "nonnegative")
    De = _real("Delta", Delta, "nonnegative")
    _checks.check_choice("tuning", tuning, ("as_printed", "corrected"))
    mm = np.maximum(mm0, nn0)
    nn = np.minimum(mm0, nn0)
    tau = _tau_rule(LL, De, tau_floor)
    if tuning == "as_printed":
        omb = _one_minus_beta(LL, d0, sg, TT, np.ones_like(mm))
        gamma = np.sqrt(d0 * omb / (mm**1.5 * nn**2 * LL * TT))
    else:
        omb = _one_minus_beta(LL, d0, sg, TT, np.sqrt(mm * nn))
        gamma = np.sqrt(d0 * omb / (mm * nn**2 * LL * TT))
    return _schedule(gamma, 1.0 - omb, tau, scalar)


def _schedule(gamma: np.ndarray, beta: np.ndarray, tau: np.ndarray, scalar: bool) -> dict[str, Any]:
    shape = np.broadcast(gamma, beta, tau).shape
    vals = {"gamma": gamma, "beta": beta, "tau": tau}
    return {k: _out(v if scalar else np.broadcast_to(v, shape).copy(), scalar) for k, v in vals.items()}


# --------------------------------------------------------------------------- floors


def optimal_tau(L: Any, Delta: Any, *, constants: str = "unit") -> Any:
    """The tau minimising bias + oracle_noise: ``sqrt(Delta/L)`` (unit), ``sqrt(2 Delta/L)`` (derived).

    Same for both theorems (the ratio of the two derived constants is 4/2 in both).
    """
    scalar = _all_scalar(L, Delta)
    LL = _real("L", L, "positive")
    De = _real("Delta", Delta, "nonnegative")
    C = _constants("constants", constants, THEOREM1_CONSTANTS)
    return _out(np.sqrt(C["oracle_noise"] * De / (C["bias"] * LL)), scalar)


def theorem1_floor(d: Any, L: Any, Delta: Any, *, constants: str = "unit") -> Any:
    """The level the bound cannot go below at any T: ``min_tau (bias + oracle_noise)``.

    ``"unit"``: ``d sqrt(L Delta)`` (the corollary's threshold ``eps >= d sqrt(Delta L)``;
    the unit-constant minimum itself is ``2 d sqrt(L Delta)``). ``"derived"``:
    ``min_tau (2 d L tau + 4 d Delta / tau) = 4 sqrt(2) d sqrt(L Delta)`` at ``tau = sqrt(2 Delta / L)``.
    """
    scalar = _all_scalar(d, L, Delta)
    dd = _integer("d", d)
    LL = _real("L", L, "nonnegative")
    De = _real("Delta", Delta, "nonnegative")
    _checks.check_choice("constants", constants, ("derived", "unit"))
    c = 1.0 if constants == "unit" else 2.0 * math.sqrt(THEOREM1_CONSTANTS["bias"] * THEOREM1_CONSTANTS["oracle_noise"])
    return _out(c * dd * np.sqrt(LL * De), scalar)


def theorem2_floor(m: Any, n: Any, L: Any, Delta: Any, *, constants: str = "unit") -> Any:
    """Theorem 2's floor: ``m^{1/2} n sqrt(L Delta)`` (unit) or ``4 sqrt(2) m^{1/2} n sqrt(L Delta)`` (derived), n <= m."""
    scalar = _all_scalar(m, n, L, Delta)
    mm0 = _integer("m", m)
    nn0 = _integer("n", n)
    LL = _real("L", L, "nonnegative")
    De = _real("Delta", Delta, "nonnegative")
    _checks.check_choice("constants", constants, ("derived", "unit"))
    mm = np.maximum(mm0, nn0)
    nn = np.minimum(mm0, nn0)
    c = 1.0 if constants == "unit" else 2.0 * math.sqrt(THEOREM2_CONSTANTS["bias"] * THEOREM2_CONSTANTS["oracle_noise"])
    return _out(c * np.sqrt(mm) * nn * np.sqrt(LL * De), scalar)


# --------------------------------------------------------------------------- predictions


def predicted_exponents() -> dict[str, dict[str, Any]]:
    """What each experiment predicts: ``{name: {"as_printed", "derived", "derivation"}}``.

    ``as_printed`` follows the paper's printed terms (Theorem 2's gamma term read with
    its ``L``), ``derived`` the corrected shapes of docs/bounds.md. Exponents of T are
    for the bound minus its floor; "iterations vs dimension" holds ``delta0, L, sigma,
    ||grad f(x^0)||`` and the target ``eps`` fixed while the dimension grows.
    """
    e: dict[str, dict[str, Any]] = {}

    def add(name: str, printed: Any, derived: Any, why: str) -> None:
        e[name] = {"as_printed": printed, "derived": derived, "derivation": why}

    add("T_slope_optimal_deterministic", -0.5, -0.5,
        "sigma=Delta=0, beta=0, gamma=sqrt(delta0/(A L T)): init = step = sqrt(A L delta0 / T); warm-up is O(1/T).")
    add("T_slope_optimal_stochastic", -0.25, -0.25,
        "sigma>0: 1-beta ~ T^{-1/2} makes init+step ~ T^{-1/4} and variance ~ sqrt(1-beta) ~ T^{-1/4}.")
    add("T_slope_arbitrary", -0.25, -0.25,
        "gamma ~ T^{-3/4}, 1-beta = T^{-1/2}: init ~ T^{-1/4}, step ~ T^{-3/4+1/2}, variance ~ T^{-1/4}, "
        "warm-up ~ T^{-1/2} (corrected) or T^{-3/4} (printed); down to the floor.")
    add("tau_slope_bias", 1.0, 1.0, "bias term ~ L tau.")
    add("tau_slope_oracle_noise", -1.0, -1.0, "oracle-noise term ~ Delta / tau.")
    add("gamma_slope_init", -1.0, -1.0, "init term delta0 / (gamma T).")
    add("gamma_slope_step", 1.0, 1.0, "step term ~ L gamma / (1-beta).")
    add("one_minus_beta_slope_step", -1.0, -1.0, "step term ~ 1/(1-beta).")
    add("one_minus_beta_slope_variance", 0.5, 0.5, "variance term ~ sqrt(1-beta).")
    add("one_minus_beta_slope_warmup", -0.5, -1.0,
        "printed d/(T sqrt(1-beta)); the proof sums sum_t rho^{t/2} ~ 2/(1-rho) ~ 4d/(1-beta).")
    add("floor_vs_Delta", 0.5, 0.5, "min_tau (a L tau + b Delta/tau) = 2 sqrt(a b L Delta).")
    add("floor_vs_L", 0.5, 0.5, "same minimum.")
    add("thm1_floor_vs_d", 1.0, 1.0, "bias and noise terms are both ~ d.")
    add("thm2_floor_vs_m", 0.5, 0.5, "bias and noise terms ~ m^{1/2} n.")
    add("thm2_floor_vs_n", 1.0, 1.0, "bias and noise terms ~ m^{1/2} n.")
    add("thm1_iterations_vs_eps_deterministic", -2.0, -2.0, "T = delta0 L d^2 / eps^2 (constants aside).")
    add("thm1_iterations_vs_eps_stochastic", -4.0, -4.0, "T = delta0 L A B^2 sigma^2 / eps^4 at small eps.")
    add("thm1_iterations_vs_d_deterministic", 2.0, 2.0,
        "T = A L delta0 / eps^2 with A = d^2 (step term d^2 L gamma/(1-beta)).")
    add("thm1_iterations_vs_d_stochastic", 4.0, 3.0,
        "optimal 1-beta balances 2 sqrt(A L delta0/(T(1-beta))) and B sqrt(1-beta) sigma: "
        "T ~ delta0 L A B^2 sigma^2/eps^4; A = d^2 and B = d (printed) or B = sqrt(d) (derived).")
    add("thm2_iterations_vs_m_deterministic", 1.5, 1.0, "A = m^{3/2} n^2 (printed, with L) or m n^2 (derived).")
    add("thm2_iterations_vs_n_deterministic", 2.0, 2.0, "A = m^{3/2} n^2 or m n^2.")
    add("thm2_iterations_vs_d_deterministic_n_fixed", 1.5, 1.0, "d = m n, n fixed: A ~ m^{3/2} ~ d^{3/2} (printed), m ~ d (derived).")
    add("thm2_iterations_vs_d_deterministic_square", 1.75, 1.5,
        "d = m n, m = n = sqrt(d): m^{3/2} n^2 = d^{7/4} (printed), m n^2 = d^{3/2} (derived).")
    add("thm2_iterations_vs_d_stochastic_n_fixed", 2.5, 1.0,
        "A B^2 = m^{3/2} n^2 * m n^2 = m^{5/2} n^4 (printed; B = m^{1/2} n), m n^2 * n = m n^3 (derived; B = n^{1/2}).")
    add("thm2_iterations_vs_d_stochastic_square", 3.25, 2.0, "m = n = sqrt(d): (5/2 + 4)/2 (printed), (1 + 3)/2 (derived).")
    add("scale_f_by_c_bound_exponent", {"thm1": 1.0, "thm2_as_printed_gamma_term": 0.0}, 1.0,
        "f -> c f with gamma, tau fixed: L, sigma, Delta, delta0, grad f scale by c, so every term scales by c "
        "except Theorem 2's printed gamma term m^{3/2} n^2 gamma/(1-beta), which has no L and stays fixed.")
    return e
