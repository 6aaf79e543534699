"""``zotheory.bounds``: the explicit right-hand sides of Theorems 1 and 2 (docs/bounds.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zotheory import bounds as B

SETTINGS = settings(max_examples=40, deadline=None)
pos = st.floats(min_value=1e-3, max_value=1e3, allow_nan=False, allow_infinity=False)
betas = st.floats(min_value=0.0, max_value=0.999)
dims = st.integers(min_value=1, max_value=64)

BASE1 = dict(delta0=3.0, grad0_norm2=2.0, d=4, L=1.5, sigma=0.5, Delta=1e-2, gamma=0.01, beta=0.75, tau=0.1, T=100)
BASE2 = dict(delta0=3.0, grad0_norm2=2.0, m=9, n=4, L=1.5, sigma=0.5, Delta=1e-2, gamma=0.01, beta=0.75, tau=0.1, T=100)
C_STEP = 2 * math.sqrt(6) + 0.5


def _slope(xs, ys) -> float:
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


# ----------------------------------------------------------------- hand-computed values


def test_theorem1_terms_hand_computed():
    t = B.theorem1_terms(**BASE1)
    # d = 4, 1 - beta = 0.25
    assert t["init"] == pytest.approx(3.0 / (0.01 * 100))
    assert t["momentum_warmup"] == pytest.approx(8 * 4**1.5 * 2.0 / (100 * 0.25))
    assert t["step"] == pytest.approx(C_STEP * 16 * 1.5 * 0.01 / 0.25)
    assert t["variance"] == pytest.approx(4 * math.sqrt(4 * 0.25) * 0.5)
    assert t["bias"] == pytest.approx(2 * 4 * 1.5 * 0.1)
    assert t["oracle_noise"] == pytest.approx(4 * 4 * 1e-2 / 0.1)
    assert t["total"] == pytest.approx(sum(t[k] for k in B.TERM_NAMES))
    assert all(isinstance(v, float) for v in t.values())


def test_theorem1_unit_and_as_printed():
    t = B.theorem1_terms(**BASE1, constants="unit", warmup_term="as_printed", variance_term="as_printed")
    assert t["init"] == pytest.approx(3.0)
    assert t["momentum_warmup"] == pytest.approx(4 * 2.0 / (100 * 0.5))
    assert t["step"] == pytest.approx(16 * 1.5 * 0.01 / 0.25)
    assert t["variance"] == pytest.approx(0.5 * 4 * 0.5)
    assert t["bias"] == pytest.approx(4 * 1.5 * 0.1)
    assert t["oracle_noise"] == pytest.approx(4 * 1e-2 / 0.1)
    assert t["total"] == pytest.approx(sum(t[k] for k in B.TERM_NAMES))


def test_theorem2_terms_hand_computed():
    t = B.theorem2_terms(**BASE2)  # m = 9, n = 4
    assert t["init"] == pytest.approx(3.0)
    assert t["momentum_warmup"] == pytest.approx(8 * 9 * 4**1.5 * 2.0 / (100 * 0.25))
    assert t["step"] == pytest.approx(C_STEP * 9 * 16 * 1.5 * 0.01 / 0.25)
    assert t["variance"] == pytest.approx(4 * math.sqrt(4 * 0.25) * 0.5)
    assert t["bias"] == pytest.approx(2 * 3 * 4 * 1.5 * 0.1)
    assert t["oracle_noise"] == pytest.approx(4 * 3 * 4 * 1e-2 / 0.1)
    assert t["total"] == pytest.approx(sum(t[k] for k in B.TERM_NAMES))


def test_theorem2_gamma_term_variants():
    w = B.theorem2_terms(**BASE2, gamma_term="printed_with_L")
    p = B.theorem2_terms(**BASE2, gamma_term="as_printed", constants="unit")
    assert w["step"] == pytest.approx(C_STEP * 27 * 16 * 1.5 * 0.01 / 0.25)
    assert p["step"] == pytest.approx(27 * 16 * 0.01 / 0.25)  # no L
    u = B.theorem2_terms(**BASE2, constants="unit", warmup_term="as_printed", variance_term="as_printed")
    assert u["momentum_warmup"] == pytest.approx(3 * 4 * 2.0 / (100 * 0.5))
    assert u["variance"] == pytest.approx(0.5 * 3 * 4 * 0.5)


def test_theorem2_swaps_n_greater_than_m():
    a = B.theorem2_terms(**BASE2)
    b = B.theorem2_terms(**{**BASE2, "m": 4, "n": 9})
    assert a == pytest.approx(b)


def test_window_factor_on_stationary_terms_only():
    a = B.theorem1_terms(**BASE1)
    for window in ("1..T", "0..T"):
        b = B.theorem1_terms(**BASE1, window=window)
        assert b["init"] == pytest.approx(a["init"])
        assert b["momentum_warmup"] == pytest.approx(a["momentum_warmup"])
        for k in ("step", "variance", "bias", "oracle_noise"):
            assert b[k] == pytest.approx(a[k] * 101 / 100)


def test_vectorised_matches_scalar_loop():
    Tgrid = np.array([10, 100, 1000, 10000])
    betas_ = np.array([0.0, 0.5, 0.9, 0.99])
    vec = B.theorem1_terms(**{**BASE1, "T": Tgrid, "beta": betas_})
    for i, (T, beta) in enumerate(zip(Tgrid, betas_)):
        one = B.theorem1_terms(**{**BASE1, "T": int(T), "beta": float(beta)})
        for k in one:
            assert vec[k][i] == pytest.approx(one[k])
    vec2 = B.theorem2_terms(**{**BASE2, "m": np.array([2, 8]), "n": np.array([8, 2])})
    assert vec2["total"][0] == pytest.approx(vec2["total"][1])


def test_constants_tables():
    assert B.THEOREM1_CONSTANTS == B.THEOREM2_CONSTANTS
    assert B.THEOREM1_CONSTANTS["step"] == pytest.approx(5.398979485566356)
    assert set(B.THEOREM1_CONSTANTS) == set(B.TERM_NAMES)


# ----------------------------------------------------------------- schedules


def test_arbitrary_schedules():
    s = B.theorem1_arbitrary_schedule(10**4, 8, 2.0, 4.0, 0.01)
    assert s["gamma"] == pytest.approx(2.0 * 1e4**-0.75 / 8)
    assert s["beta"] == pytest.approx(1 - 1e-2)
    assert s["tau"] == pytest.approx(math.sqrt(0.01 / 4.0))
    s2 = B.theorem2_arbitrary_schedule(10**4, 4, 2, 2.0, 4.0, 0.01)
    assert s2["gamma"] == pytest.approx(2.0 * 1e4**-0.75 / 8)
    assert s2["beta"] == pytest.approx(0.99)
    assert B.theorem1_arbitrary_schedule(1, 3, 1.0, 1.0, 1.0)["beta"] == 0.0


def test_tau_floor_rule():
    with pytest.raises(ValueError, match="tau_floor"):
        B.theorem1_arbitrary_schedule(100, 4, 1.0, 1.0, 0.0)
    assert B.theorem1_arbitrary_schedule(100, 4, 1.0, 1.0, 0.0, tau_floor=1e-5)["tau"] == pytest.approx(1e-5)
    assert B.theorem1_arbitrary_schedule(100, 4, 1.0, 1.0, 1e-2, tau_floor=1e-5)["tau"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="tau_floor"):
        B.theorem2_optimal_schedule(100, 4, 2, 1.0, 1.0, 0.5, 0.0)


def test_optimal_schedules():
    T, d, L, d0, sg, De = 10**4, 8, 2.0, 5.0, 3.0, 1e-4
    s = B.theorem1_optimal_schedule(T, d, L, d0, sg, De)
    omb = min(1.0, math.sqrt(L * d0 / (T * sg**2)))
    assert s["beta"] == pytest.approx(1 - omb)
    assert s["gamma"] == pytest.approx(math.sqrt(d0 * omb / (d**2 * L * T)))
    assert s["tau"] == pytest.approx(math.sqrt(De / L))
    c = B.theorem1_optimal_schedule(T, d, L, d0, sg, De, tuning="corrected")
    assert 1 - c["beta"] == pytest.approx(min(1.0, math.sqrt(d * L * d0 / (T * sg**2))))
    # sigma = 0: min(1, inf) = 1 -> beta = 0 (what the corollary says)
    z = B.theorem1_optimal_schedule(T, d, L, d0, 0.0, De)
    assert z["beta"] == 0.0
    assert z["gamma"] == pytest.approx(math.sqrt(d0 / (d**2 * L * T)))
    # large sigma / small T: min picks 1 when sqrt(...) > 1
    assert B.theorem1_optimal_schedule(1, d, L, d0, 1e-3, De)["beta"] == 0.0
    m, n = 9, 4
    s2 = B.theorem2_optimal_schedule(T, m, n, L, d0, sg, De)
    assert s2["beta"] == pytest.approx(1 - omb)
    assert s2["gamma"] == pytest.approx(math.sqrt(d0 * omb / (27 * 16 * L * T)))
    c2 = B.theorem2_optimal_schedule(T, m, n, L, d0, sg, De, tuning="corrected")
    omb2 = min(1.0, math.sqrt(m * n * L * d0 / (T * sg**2)))
    assert c2["beta"] == pytest.approx(1 - omb2)
    assert c2["gamma"] == pytest.approx(math.sqrt(d0 * omb2 / (9 * 16 * L * T)))
    assert B.theorem2_optimal_schedule(T, n, m, L, d0, sg, De) == pytest.approx(s2)


# ----------------------------------------------------------------- scaling properties


@SETTINGS
@given(T=st.integers(1, 10**6), delta0=pos, gamma=pos)
def test_init_term_is_one_over_T(T, delta0, gamma):
    a = B.theorem1_terms(**{**BASE1, "T": T, "delta0": delta0, "gamma": gamma})["init"]
    b = B.theorem1_terms(**{**BASE1, "T": 2 * T, "delta0": delta0, "gamma": gamma})["init"]
    assert a == pytest.approx(2 * b)
    assert a == pytest.approx(delta0 / (gamma * T))


@SETTINGS
@given(c=st.floats(1e-3, 1e3), beta=betas, d=dims, m=dims, n=dims)
def test_scaling_f_by_c(c, beta, d, m, n):
    """f -> c f (gamma, tau fixed): L, sigma, Delta, delta0, ||grad f|| all scale by c; so must every term."""
    p = dict(delta0=2.0, grad0_norm2=1.0, L=3.0, sigma=0.7, Delta=1e-3, gamma=1e-2, beta=beta, tau=0.05, T=1000)
    pc = {**p, **{k: c * p[k] for k in ("delta0", "grad0_norm2", "L", "sigma", "Delta")}}
    a, b = B.theorem1_terms(**p, d=d), B.theorem1_terms(**pc, d=d)
    for k in a:
        assert b[k] == pytest.approx(c * a[k], rel=1e-9)
    for gt in ("corrected", "printed_with_L"):
        a2, b2 = B.theorem2_terms(**p, m=m, n=n, gamma_term=gt), B.theorem2_terms(**pc, m=m, n=n, gamma_term=gt)
        for k in a2:
            assert b2[k] == pytest.approx(c * a2[k], rel=1e-9)
    # the printed gamma term has no L: it does not scale
    a3, b3 = B.theorem2_terms(**p, m=m, n=n, gamma_term="as_printed"), B.theorem2_terms(**pc, m=m, n=n, gamma_term="as_printed")
    assert b3["step"] == pytest.approx(a3["step"])


@SETTINGS
@given(s=st.floats(1e-2, 1e2), d=dims)
def test_scaling_x_units(s, d):
    """x -> x/s (f(x) = g(x/s)): L / s^2, grads / s, sigma / s, gamma, tau * s; the bound scales by 1/s."""
    p = dict(delta0=2.0, grad0_norm2=1.0, L=3.0, sigma=0.7, Delta=1e-3, gamma=1e-2, beta=0.9, tau=0.05, T=1000)
    ps = {**p, "L": p["L"] / s**2, "grad0_norm2": p["grad0_norm2"] / s, "sigma": p["sigma"] / s,
          "gamma": p["gamma"] * s, "tau": p["tau"] * s}
    a, b = B.theorem1_terms(**p, d=d), B.theorem1_terms(**ps, d=d)
    for k in a:
        assert b[k] == pytest.approx(a[k] / s, rel=1e-9)


@pytest.mark.parametrize("theorem", [1, 2])
def test_arbitrary_schedule_decays_like_T_quarter(theorem):
    Tgrid = np.array([10**10, 10**11, 10**12, 10**13], dtype=np.int64)
    L, Delta = 2.0, 1e-6
    if theorem == 1:
        s = B.theorem1_arbitrary_schedule(Tgrid, 16, 1.0, L, Delta)
        t = B.theorem1_terms(delta0=5.0, grad0_norm2=3.0, d=16, L=L, sigma=1.0, Delta=Delta, T=Tgrid, **s)
    else:
        s = B.theorem2_arbitrary_schedule(Tgrid, 8, 4, 1.0, L, Delta)
        t = B.theorem2_terms(delta0=5.0, grad0_norm2=3.0, m=8, n=4, L=L, sigma=1.0, Delta=Delta, T=Tgrid, **s)
    excess = t["total"] - t["bias"] - t["oracle_noise"]
    assert _slope(Tgrid, excess) == pytest.approx(-0.25, abs=0.01)
    assert np.all(np.diff(t["total"]) < 0)


@pytest.mark.parametrize("theorem", [1, 2])
def test_optimal_schedule_rates(theorem):
    Tgrid = np.array([10**8, 10**9, 10**10, 10**11], dtype=np.int64)
    kw = dict(L=2.0, delta0=5.0, Delta=0.0, tau_floor=1e-30)
    for sigma, want in ((0.0, -0.5), (1.0, -0.25)):
        if theorem == 1:
            s = B.theorem1_optimal_schedule(Tgrid, 16, sigma=sigma, **kw)
            t = B.theorem1_terms(grad0_norm2=3.0, d=16, sigma=sigma, T=Tgrid, L=2.0, delta0=5.0, Delta=0.0, **s)
        else:
            s = B.theorem2_optimal_schedule(Tgrid, 8, 4, sigma=sigma, **kw)
            t = B.theorem2_terms(grad0_norm2=3.0, m=8, n=4, sigma=sigma, T=Tgrid, L=2.0, delta0=5.0, Delta=0.0, **s)
        assert _slope(Tgrid, t["total"]) == pytest.approx(want, abs=0.02)


@SETTINGS
@given(L=pos, Delta=pos, d=dims, m=dims, n=dims)
def test_tau_star_minimises_bias_plus_noise(L, Delta, d, m, n):
    taus = np.sqrt(Delta / L) * np.logspace(-2, 2, 4001)
    for constants in ("derived", "unit"):
        t = B.theorem1_terms(**{**BASE1, "d": d, "L": L, "Delta": Delta, "tau": taus}, constants=constants)
        f = t["bias"] + t["oracle_noise"]
        tstar = B.optimal_tau(L, Delta, constants=constants)
        assert taus[np.argmin(f)] == pytest.approx(tstar, rel=3e-3)
        t2 = B.theorem2_terms(**{**BASE2, "m": m, "n": n, "L": L, "Delta": Delta, "tau": taus}, constants=constants)
        assert taus[np.argmin(t2["bias"] + t2["oracle_noise"])] == pytest.approx(tstar, rel=3e-3)
    t = B.theorem1_terms(**{**BASE1, "d": d, "L": L, "Delta": Delta, "tau": B.optimal_tau(L, Delta, constants="derived")})
    assert t["bias"] + t["oracle_noise"] == pytest.approx(B.theorem1_floor(d, L, Delta, constants="derived"))
    t2 = B.theorem2_terms(**{**BASE2, "m": m, "n": n, "L": L, "Delta": Delta, "tau": B.optimal_tau(L, Delta, constants="derived")})
    assert t2["bias"] + t2["oracle_noise"] == pytest.approx(B.theorem2_floor(m, n, L, Delta, constants="derived"))


def test_floors():
    assert B.optimal_tau(4.0, 1.0) == pytest.approx(0.5)
    assert B.optimal_tau(4.0, 1.0, constants="derived") == pytest.approx(math.sqrt(0.5))
    assert B.theorem1_floor(8, 4.0, 1.0) == pytest.approx(16.0)
    assert B.theorem1_floor(8, 4.0, 1.0, constants="derived") == pytest.approx(4 * math.sqrt(2) * 16.0)
    assert B.theorem2_floor(9, 4, 4.0, 1.0) == pytest.approx(24.0)
    assert B.theorem2_floor(4, 9, 4.0, 1.0, constants="derived") == pytest.approx(4 * math.sqrt(2) * 24.0)


def test_dimension_exponents_match_the_table():
    """Deterministic optimal tuning, g0 = 0: the bound at (m, n, T) equals the bound at scaled dims and T * s^p."""
    e = B.predicted_exponents()
    assert e["thm2_iterations_vs_d_deterministic_square"]["derived"] == 1.5
    assert e["thm2_iterations_vs_d_deterministic_square"]["as_printed"] == 1.75
    for tuning, gamma_term, key in (("corrected", "corrected", "derived"), ("as_printed", "printed_with_L", "as_printed")):
        p = e["thm2_iterations_vs_d_deterministic_square"][key]
        T, s = 10**6, 4  # m = n: d grows by s^2
        vals = []
        for (m, TT) in ((4, T), (4 * s, int(T * (s * s) ** p))):
            sch = B.theorem2_optimal_schedule(TT, m, m, 1.0, 1.0, 0.0, 0.0, tau_floor=1e-30, tuning=tuning)
            t = B.theorem2_terms(delta0=1.0, grad0_norm2=0.0, m=m, n=m, L=1.0, sigma=0.0, Delta=0.0, T=TT,
                                 gamma_term=gamma_term, **sch)
            vals.append(t["total"])
        assert vals[0] == pytest.approx(vals[1], rel=1e-6)
    p = e["thm1_iterations_vs_d_deterministic"]["derived"]
    vals = []
    for d, TT in ((5, 10**6), (20, int(10**6 * 4**p))):
        sch = B.theorem1_optimal_schedule(TT, d, 1.0, 1.0, 0.0, 0.0, tau_floor=1e-30)
        vals.append(B.theorem1_terms(delta0=1.0, grad0_norm2=0.0, d=d, L=1.0, sigma=0.0, Delta=0.0, T=TT, **sch)["total"])
    assert vals[0] == pytest.approx(vals[1], rel=1e-6)


def test_predicted_exponents_table_shape():
    e = B.predicted_exponents()
    assert e["T_slope_optimal_deterministic"]["derived"] == -0.5
    assert e["T_slope_arbitrary"]["as_printed"] == -0.25
    assert e["tau_slope_bias"]["derived"] == 1.0 and e["tau_slope_oracle_noise"]["derived"] == -1.0
    for v in e.values():
        assert set(v) == {"as_printed", "derived", "derivation"} and v["derivation"]


# ----------------------------------------------------------------- the bound holds on tiny runs


def _alg1(A, b, x0, gamma, beta, tau, T, sigma, Delta, rng):
    d = len(x0)
    x, mom, acc = x0.copy(), np.zeros(d), 0.0
    for _ in range(T):
        acc += np.abs(A @ x - b).sum()
        i = rng.integers(d)
        xi = rng.normal(0.0, sigma / math.sqrt(d), d)  # f(x, xi) = f(x) + xi.x: E||xi||^2 = sigma^2, L(xi) = L

        def fh(z):
            return 0.5 * z @ A @ z - b @ z + xi @ z + Delta * rng.uniform(-1, 1)  # E|noise|^2 = Delta^2/3

        e = np.zeros(d)
        e[i] = 1.0
        g = (fh(x + tau * e) - fh(x - tau * e)) / (2 * tau)
        mom[i] = beta * mom[i] + (1 - beta) * g
        x = x - gamma * np.sign(mom)
    return acc / T


def test_derived_bound_holds_on_a_small_signsgd_run():
    rng = np.random.default_rng(0)
    d = 4
    Q = np.linalg.qr(rng.normal(size=(d, d)))[0]
    ev = np.linspace(0.1, 1.0, d)
    A = Q @ np.diag(ev) @ Q.T
    b = rng.normal(size=d)
    xs = np.linalg.solve(A, b)
    x0 = xs + 3 * rng.normal(size=d)
    delta0 = 0.5 * (x0 - xs) @ A @ (x0 - xs)
    g0 = float(np.linalg.norm(A @ x0 - b))
    for sigma, Delta in ((0.0, 0.0), (0.5, 1e-4)):
        T = 1500
        s = B.theorem1_optimal_schedule(T, d, 1.0, delta0, sigma, Delta, tau_floor=1e-4)
        meas = _alg1(A, b, x0, s["gamma"], s["beta"], s["tau"], T, sigma, Delta, np.random.default_rng(1))
        bound = B.theorem1_terms(delta0=delta0, grad0_norm2=g0, d=d, L=1.0, sigma=sigma, Delta=Delta, T=T, **s)
        assert meas <= bound["total"]


def _polar(M):
    if not M.any():
        return np.zeros_like(M)
    U, sv, Vt = np.linalg.svd(M, full_matrices=False)
    r = int((sv > 1e-12 * sv[0]).sum())
    return U[:, :r] @ Vt[:r]


def _alg2(c, Am, X0, Xs, gamma, beta, tau, T, rng):
    X, M, acc = X0.copy(), np.zeros_like(X0), 0.0
    m, n = X.shape

    def f(Z):
        return 0.5 * c * np.sum((Am @ (Z - Xs)) ** 2)

    for _ in range(T):
        acc += np.linalg.svd(c * Am.T @ Am @ (X - Xs), compute_uv=False).sum()
        i, j = rng.integers(m), rng.integers(n)
        E = np.zeros_like(X)
        E[i, j] = 1.0
        M[i, j] = beta * M[i, j] + (1 - beta) * (f(X + tau * E) - f(X - tau * E)) / (2 * tau)
        X = X - gamma * _polar(M)
    return acc / T


def test_muon_bound_holds_and_printed_gamma_term_fails_under_scaling():
    """Deterministic quadratic, exact polar factor. Multiplying f by c = 1000 keeps every derived bound valid,
    but the printed gamma term (no L) no longer covers the stationary oscillation, whose size scales with c."""
    rng = np.random.default_rng(1)
    m, n = 6, 3
    Am = np.diag(np.linspace(0.3, 1.0, m))
    Xs = rng.normal(size=(m, n))
    X0 = Xs + 0.3 * rng.normal(size=(m, n))
    T, gamma, beta, tau = 1500, 0.01, 0.5, 1e-6
    for c in (1.0, 1000.0):
        delta0 = 0.5 * c * np.sum((Am @ (X0 - Xs)) ** 2)
        g0 = float(np.linalg.norm(c * Am.T @ Am @ (X0 - Xs)))
        meas = _alg2(c, Am, X0, Xs, gamma, beta, tau, T, np.random.default_rng(2))
        kw = dict(delta0=delta0, grad0_norm2=g0, m=m, n=n, L=c, sigma=0.0, Delta=0.0, gamma=gamma, beta=beta,
                  tau=tau, T=T)
        assert meas <= B.theorem2_terms(**kw)["total"]
        assert meas <= B.theorem2_terms(**kw, gamma_term="printed_with_L")["total"]
        printed = B.theorem2_terms(**kw, gamma_term="as_printed")["total"]
        if c == 1000.0:
            assert meas > printed


# ----------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "name, value",
    [
        ("delta0", -1.0), ("grad0_norm2", -0.1), ("d", 0), ("d", 2.5), ("L", -1.0), ("sigma", float("nan")),
        ("Delta", -1e-3), ("gamma", 0.0), ("beta", 1.0), ("beta", -0.1), ("tau", 0.0), ("T", 0), ("T", 10.0),
        ("gamma", np.array([0.1, -0.1])), ("T", np.array([1.5, 2.0])), ("beta", True), ("L", "1"),
    ],
)
def test_bad_inputs_name_the_argument(name, value):
    with pytest.raises(ValueError, match=name):
        B.theorem1_terms(**{**BASE1, name: value})


@pytest.mark.parametrize("name, value", [("m", 0), ("n", -2), ("gamma_term", "printed"), ("window", "0..T+1")])
def test_bad_inputs_theorem2(name, value):
    kw = {**BASE2, name: value}
    with pytest.raises(ValueError, match=name):
        B.theorem2_terms(**kw)


def test_bad_inputs_misc():
    with pytest.raises(ValueError, match="constants"):
        B.theorem1_terms(**BASE1, constants="paper")
    with pytest.raises(ValueError, match="delta0"):
        B.theorem1_optimal_schedule(100, 4, 1.0, 0.0, 1.0, 0.1)
    with pytest.raises(ValueError, match="L"):
        B.theorem1_arbitrary_schedule(100, 4, 1.0, 0.0, 0.1)
    with pytest.raises(ValueError, match="tuning"):
        B.theorem2_optimal_schedule(100, 4, 2, 1.0, 1.0, 0.5, 0.1, tuning="best")
    with pytest.raises(ValueError, match="Delta"):
        B.theorem2_floor(4, 2, 1.0, -1.0)
