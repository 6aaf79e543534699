"""Constraint sets (zotheory.constraints): LMOs and projections against brute force.

The references here are independent of the module: LMOs by enumerating the vertices (simplex,
l1 ball) or by the closed form and random sphere points (l2 ball); projections by a bisection on
the threshold written here and by scipy's SLSQP on the plain quadratic programme; optimality by
the variational inequality (for a polytope, against every vertex: a complete certificate).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from zotheory.constraints import (
    L1Ball,
    L2Ball,
    Simplex,
    frank_wolfe_move,
    fw_step_deterministic,
    fw_step_stochastic,
    make_set,
    momentum_stochastic,
    projected_step,
)

pytestmark = pytest.mark.usefixtures("one_thread")

KINDS = ["simplex", "l1", "l2"]
DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: 2e-5, torch.float64: 1e-11}


def _vertices(kind: str, d: int, R: float) -> np.ndarray:
    """The vertices of the polytope, ordered by coordinate: for l1, -R e_i before +R e_i."""
    eye = np.eye(d)
    if kind == "simplex":
        return R * eye
    return np.stack([s * R * eye[i] for i in range(d) for s in (-1.0, 1.0)])


def _brute_lmo(kind: str, g: np.ndarray, R: float) -> np.ndarray:
    """Enumerate the vertices; among the minimisers, the lowest coordinate index; for l1 at a tie
    between +-R e_i (g = 0), -R e_i (the documented sign(0) = +1 rule)."""
    V = _vertices(kind, g.size, R)
    values = V @ g
    best = np.flatnonzero(values == values.min())
    return V[best[0]]


def _sphere(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    z = rng.standard_normal((n, d))
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def _bisect_threshold(a: np.ndarray, R: float) -> float:
    """theta with sum max(a - theta, 0) = R (the KKT condition), by bisection in float64."""
    lo, hi = a.min() - R, a.max()
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if np.maximum(a - mid, 0).sum() > R:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _reference_projection(kind: str, y: np.ndarray, R: float) -> np.ndarray:
    if kind == "simplex":
        return np.maximum(y - _bisect_threshold(y, R), 0)
    if kind == "l1":
        if np.abs(y).sum() <= R:
            return y.copy()
        return np.sign(y) * np.maximum(np.abs(y) - _bisect_threshold(np.abs(y), R), 0)
    n = math.sqrt(float((y * y).sum()))
    return y.copy() if n <= R else y * (R / n)


def _scipy_projection(kind: str, y: np.ndarray, R: float) -> np.ndarray:
    """argmin ||p - y||^2 over Q by SLSQP on the smooth formulation (l1: p = a - b, a, b >= 0)."""
    from scipy.optimize import minimize

    d = y.size
    opts = {"ftol": 1e-15, "maxiter": 1000}
    if kind == "simplex":
        res = minimize(lambda p: ((p - y) ** 2).sum(), np.full(d, R / d), jac=lambda p: 2 * (p - y),
                       bounds=[(0, None)] * d, method="SLSQP", options=opts,
                       constraints=[{"type": "eq", "fun": lambda p: p.sum() - R, "jac": lambda p: np.ones(d)}])
        return res.x
    if kind == "l1":
        def f(ab):
            return ((ab[:d] - ab[d:] - y) ** 2).sum()

        def jac(ab):
            r = 2 * (ab[:d] - ab[d:] - y)
            return np.concatenate([r, -r])

        res = minimize(f, np.zeros(2 * d), jac=jac, bounds=[(0, None)] * (2 * d), method="SLSQP", options=opts,
                       constraints=[{"type": "ineq", "fun": lambda ab: R - ab.sum(), "jac": lambda ab: -np.ones(2 * d)}])
        return res.x[:d] - res.x[d:]
    res = minimize(lambda p: ((p - y) ** 2).sum(), np.zeros(d), jac=lambda p: 2 * (p - y), method="SLSQP",
                   options=opts, constraints=[{"type": "ineq", "fun": lambda p: R * R - (p * p).sum(),
                                               "jac": lambda p: -2 * p}])
    return res.x


def _points_in(kind: str, n: int, d: int, R: float, rng: np.random.Generator) -> np.ndarray:
    """Random points of Q (including some of its vertices / boundary)."""
    if kind == "simplex":
        w = rng.exponential(size=(n, d))
        pts = R * w / w.sum(axis=1, keepdims=True)
        return np.concatenate([pts, _vertices(kind, d, R)])
    if kind == "l1":
        V = _vertices(kind, d, R)
        w = rng.exponential(size=(n, V.shape[0]))
        lam = w / w.sum(axis=1, keepdims=True) * rng.uniform(0, 1, size=(n, 1))
        return np.concatenate([lam @ V, V])
    r = R * rng.uniform(0, 1, size=(n, 1)) ** (1 / d)
    return np.concatenate([r * _sphere(n, d, rng), R * _sphere(n, d, rng)])


def _adversarial(d: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Ties, zeros, signs and scales that break careless code."""
    out = [np.zeros(d), np.ones(d), -np.ones(d), np.arange(d, dtype=float) % 2, -(np.arange(d, dtype=float) % 3)]
    tie = rng.integers(-2, 3, size=d).astype(float)
    out += [tie, -tie, tie * 1e8, tie * 1e-8]
    if d >= 2:
        pm = np.zeros(d)
        pm[-1], pm[0] = 3.0, -3.0  # |g| ties with opposite signs: the lowest index wins
        out += [pm, -pm]
    out += [rng.standard_normal(d) * 1e6, rng.standard_normal(d) * 1e-6]
    return out


def _t(a, dtype) -> torch.Tensor:
    return torch.tensor(np.asarray(a), dtype=dtype)


# ------------------------------------------------------------------------------------- LMO


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["simplex", "l1"])
def test_polytope_lmo_is_the_brute_force_vertex(kind, dtype):
    rng = np.random.default_rng(0)
    for d in (1, 2, 3, 7):
        for R in (1.0, 0.25, 3.0):
            Q = make_set(kind, R)
            cases = [rng.standard_normal(d) for _ in range(20)] + _adversarial(d, rng)
            for g in cases:
                g = _t(g, dtype).double().numpy()  # the values the module sees
                s = Q.lmo(_t(g, dtype))
                assert s.dtype == dtype and s.shape == (d,)
                np.testing.assert_array_equal(s.double().numpy(), _brute_lmo(kind, g, R).astype(np.float32 if dtype == torch.float32 else np.float64))


@pytest.mark.parametrize("kind", ["simplex", "l1"])
def test_polytope_lmo_tie_rule_lowest_index(kind):
    g = torch.tensor([2.0, -5.0, 1.0, -5.0, 5.0])
    s = make_set(kind, 2.0).lmo(g)
    # simplex: the minimum -5 at indices 1 and 3; l1: |g| = 5 at 1, 3, 4 (g_1 < 0: +R). Index 1 wins.
    assert s.tolist() == [0, 2.0, 0, 0, 0]
    h = torch.tensor([1.0, 5.0, -5.0])  # l1: |g| ties at 1 and 2 with opposite signs: index 1
    assert L1Ball(1.0).lmo(h).tolist() == [0.0, -1.0, 0.0]
    assert L1Ball(1.0).lmo(-h).tolist() == [0.0, 1.0, 0.0]


@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_gradient_rule(dtype):
    z = torch.zeros(4, dtype=dtype)
    assert Simplex(2.0).lmo(z).tolist() == [2.0, 0, 0, 0]
    assert L1Ball(2.0).lmo(z).tolist() == [-2.0, 0, 0, 0]
    assert L2Ball(2.0).lmo(z).tolist() == [-2.0, 0, 0, 0]
    x = torch.tensor([0.5, 0.5, 0.0, 0.0], dtype=dtype)
    for Q in (Simplex(), L1Ball(), L2Ball()):
        assert Q.fw_gap(x, z).item() == 0.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_l2_lmo_closed_form_and_random_sphere_points(dtype):
    rng = np.random.default_rng(1)
    for d in (1, 2, 5, 20):
        for R in (1.0, 0.3):
            Q = L2Ball(R)
            sphere = R * _sphere(4000, d, rng)
            for g in [rng.standard_normal(d) for _ in range(10)] + _adversarial(d, rng)[1:]:
                g = _t(g, dtype).double().numpy()
                if not np.any(g):
                    continue
                s = Q.lmo(_t(g, dtype)).double().numpy()
                np.testing.assert_allclose(s, -R * g / np.linalg.norm(g), rtol=TOL[dtype], atol=TOL[dtype] * R)
                assert s @ g <= (sphere @ g).min() + TOL[dtype] * R * np.abs(g).sum()


@pytest.mark.parametrize("dtype", DTYPES)
def test_l2_lmo_and_norms_survive_huge_and_tiny_values(dtype):
    """lmo(2^k g) = lmo(g) (exact power-of-two scaling), no 0/0 or inf/inf."""
    rng = np.random.default_rng(2)
    exps = (-140, -126, 100, 120) if dtype == torch.float32 else (-1070, -1000, 1000, 1020)
    Q = L2Ball(1.5)
    for _ in range(5):
        g = _t(rng.standard_normal(6), dtype)
        for e in exps:
            scaled = g * 2.0 ** e
            if not torch.isfinite(scaled).all() or not scaled.any():
                continue
            base = Q.lmo((scaled.double() * 2.0 ** (-e / 2) * 2.0 ** (-e / 2)).to(dtype))  # the same values (subnormals rounded), scaled back
            torch.testing.assert_close(Q.lmo(scaled), base, rtol=1e-6, atol=1e-6)
            if abs(e) < 1025 and (dtype == torch.float64 and abs(e) <= 1000 or dtype == torch.float32 and abs(e) <= 120):
                want = torch.linalg.vector_norm(g.double()).item()
                assert Q.support(scaled).item() == pytest.approx(-1.5 * want * 2.0 ** e, rel=1e-5)
    y = torch.full((3,), 1e30 if dtype == torch.float32 else 1e300, dtype=dtype)
    p = Q.project(y)
    assert torch.isfinite(p).all() and bool(Q.contains(p, atol=1e-5))
    tiny = torch.full((3,), 1e-44 if dtype == torch.float32 else 1e-320, dtype=dtype)
    assert torch.equal(Q.project(tiny), tiny)


# ------------------------------------------------------------------------------ projections


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_projection_against_bisection_reference(kind, dtype):
    rng = np.random.default_rng(3)
    for d in (1, 2, 3, 6, 17):
        for R in (1.0, 0.2, 4.0):
            Q = make_set(kind, R)
            cases = [rng.standard_normal(d) * sc for sc in (0.1, 1.0, 10.0) for _ in range(5)] + _adversarial(d, rng)
            for y in cases:
                y = _t(y, dtype).double().numpy()
                p = Q.project(_t(y, dtype)).double().numpy()
                scale = max(1.0, np.abs(y).max())
                np.testing.assert_allclose(p, _reference_projection(kind, y, R), rtol=0,
                                           atol=TOL[dtype] * scale * d)


@pytest.mark.parametrize("kind", KINDS)
def test_projection_against_scipy(kind):
    rng = np.random.default_rng(4)
    for d in (2, 3, 5):
        for _ in range(6):
            y = rng.standard_normal(d) * 1.5
            R = float(rng.uniform(0.3, 2.0))
            p = make_set(kind, R).project(_t(y, torch.float64)).numpy()
            np.testing.assert_allclose(p, _scipy_projection(kind, y, R), atol=2e-6)


def _vi_certificate(kind: str, y: np.ndarray, p: np.ndarray, R: float, rng) -> float:
    """max over z of <y - p, z - p>: over every vertex (polytopes: exact), over the sphere (l2: exact)."""
    r = y - p
    if kind == "l2":
        return R * np.linalg.norm(r) - r @ p
    return float((_vertices(kind, y.size, R) @ r).max() - r @ p)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_projection_properties(kind, dtype):
    """In Q, idempotent, variational inequality <y - p, z - p> <= 0, interior points unchanged."""
    rng = np.random.default_rng(5)
    for d in (1, 2, 4, 9):
        R = 1.7
        Q = make_set(kind, R)
        Z = _points_in(kind, 50, d, R, rng)
        for y in [rng.standard_normal(d) * 3 for _ in range(20)] + _adversarial(d, rng):
            yt = _t(y, dtype)
            y = yt.double().numpy()
            p_t = Q.project(yt)
            p = p_t.double().numpy()
            scale = max(1.0, np.abs(y).max())
            assert bool(Q.contains(p_t, atol=TOL[dtype] * scale * d))
            torch.testing.assert_close(Q.project(p_t), p_t, rtol=0, atol=TOL[dtype] * scale * d)
            assert ((Z - p) @ (y - p)).max() <= TOL[dtype] * scale * scale * d
            assert _vi_certificate(kind, y, p, R, rng) <= TOL[dtype] * scale * scale * d
    if kind != "simplex":  # the balls: interior points come back bit for bit
        for z in _points_in(kind, 100, 5, R, rng)[:100] * 0.999:
            zt = _t(z, dtype)
            assert torch.equal(Q.project(zt), zt)


@settings(max_examples=150, deadline=None)
@given(kind=st.sampled_from(KINDS),
       y=arrays(np.float64, st.integers(1, 6), elements=st.floats(-1e3, 1e3, allow_subnormal=False)),
       R=st.floats(1e-2, 1e2))
def test_projection_hypothesis(kind, y, R):
    p = make_set(kind, R).project(torch.from_numpy(y)).numpy()
    scale = max(1.0, np.abs(y).max(), R)
    assert make_set(kind, R).contains(torch.from_numpy(p), atol=1e-12 * scale * y.size)
    assert _vi_certificate(kind, y, p, R, None) <= 1e-11 * scale * scale * y.size
    np.testing.assert_allclose(p, _reference_projection(kind, y, R), rtol=0, atol=1e-10 * scale)


@settings(max_examples=150, deadline=None)
@given(kind=st.sampled_from(["simplex", "l1"]),
       g=arrays(np.float64, st.integers(1, 6), elements=st.integers(-3, 3).map(float)),
       R=st.sampled_from([0.5, 1.0, 2.0]))
def test_polytope_lmo_hypothesis_small_integers(kind, g, R):
    """Small integers make ties (and zeros) common: the lowest-index rule against brute force."""
    np.testing.assert_array_equal(make_set(kind, R).lmo(torch.from_numpy(g)).numpy(), _brute_lmo(kind, g, R))


# ---------------------------------------------------------------------------------- fw_gap


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_fw_gap_definition_and_sign(kind, dtype):
    rng = np.random.default_rng(6)
    d, R = 5, 2.0
    Q = make_set(kind, R)
    X = _points_in(kind, 30, d, R, rng)
    for x in X:
        g = rng.standard_normal(d)
        xt, gt = _t(x, dtype), _t(g, dtype)
        gap = Q.fw_gap(xt, gt).item()
        via_lmo = float((gt.double() * (xt.double() - Q.lmo(gt).double())).sum())
        assert gap == pytest.approx(via_lmo, abs=TOL[dtype] * 10)
        assert gap >= -TOL[dtype] * 10
        if kind != "l2":  # brute force: max over the vertices of <g, x - v>
            assert gap == pytest.approx(float((x @ g) - (_vertices(kind, d, R) @ g).min()), abs=TOL[dtype] * 10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_fw_gap_zero_at_minimisers(kind, dtype):
    """Linear f = <c, x>: gap 0 at lmo(c). Quadratic f = ||x - y||^2 / 2: gap 0 at Proj_Q(y)."""
    rng = np.random.default_rng(7)
    Q = make_set(kind, 1.3)
    for _ in range(20):
        c = _t(rng.standard_normal(6), dtype)
        assert abs(Q.fw_gap(Q.lmo(c), c).item()) <= TOL[dtype] * 10
        y = _t(rng.standard_normal(6) * 2, dtype)
        p = Q.project(y)
        assert abs(Q.fw_gap(p, p - y).item()) <= TOL[dtype] * 50
        q = p.clone()
        q[0] += 0.1  # away from the minimiser the gap is positive (after going back into Q)
        q = Q.project(q)
        if not torch.allclose(q, p, atol=1e-3):
            assert Q.fw_gap(q, q - y).item() > TOL[dtype] * 50


# ------------------------------------------------------------------------- batched, inputs


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_batched_equals_per_run(kind, dtype):
    rng = np.random.default_rng(8)
    B, d = 7, 6
    radii = torch.tensor([0.5, 1.0, 2.0, 3.0, 0.1, 1.0, 7.0], dtype=torch.float64)
    Qb = make_set(kind, radii)
    G = _t(np.stack([rng.standard_normal(d) for _ in range(B - 2)] + [np.zeros(d), np.array([1, -1, 1, -1, 0, 0.])]), dtype)
    Y = _t(rng.standard_normal((B, d)) * 2, dtype)
    Y[1] = Y[1] / Y[1].abs().sum() * 0.5  # inside the balls
    X = torch.stack([make_set(kind, float(r)).project(Y[b]) for b, r in enumerate(radii)])
    before = [t.clone() for t in (G, Y, X)]
    out = {"lmo": Qb.lmo(G), "project": Qb.project(Y), "fw_gap": Qb.fw_gap(X, G), "contains": Qb.contains(X),
           "support": Qb.support(G)}
    for t, b in zip((G, Y, X), before):
        assert torch.equal(t, b)  # inputs untouched
    assert out["contains"].shape == (B,) and bool(out["contains"].all())
    assert out["fw_gap"].shape == (B,) and out["fw_gap"].dtype == dtype
    for b in range(B):
        Q = make_set(kind, float(radii[b]))
        torch.testing.assert_close(out["lmo"][b], Q.lmo(G[b]), rtol=0, atol=0)
        torch.testing.assert_close(out["project"][b], Q.project(Y[b]))
        torch.testing.assert_close(out["fw_gap"][b], Q.fw_gap(X[b], G[b]))
        torch.testing.assert_close(out["support"][b], Q.support(G[b]))
    same = make_set(kind, 2.0)  # a number radius broadcasts over the batch
    torch.testing.assert_close(same.project(Y), torch.stack([same.project(y) for y in Y]))
    torch.testing.assert_close(make_set(kind, torch.tensor(2.0)).project(Y), same.project(Y))


@pytest.mark.parametrize("kind", KINDS)
def test_single_vector_functions_do_not_modify_input(kind):
    Q = make_set(kind, 0.7)
    y = torch.tensor([3.0, -1.0, 0.2, 0.0], dtype=torch.float64)
    g = torch.tensor([0.0, -2.0, 1.0, 2.0], dtype=torch.float64)
    y0, g0 = y.clone(), g.clone()
    Q.lmo(g), Q.project(y), Q.fw_gap(Q.project(y), g), Q.contains(y), Q.support(g)
    assert torch.equal(y, y0) and torch.equal(g, g0)
    assert Q.project(y).data_ptr() != y.data_ptr()
    inside = y / 100
    assert Q.project(inside).data_ptr() != inside.data_ptr()


def test_contains_and_diameter():
    assert bool(Simplex(2.0).contains(torch.tensor([1.0, 1.0, 0.0])))
    assert not bool(Simplex(2.0).contains(torch.tensor([1.5, 1.0, 0.0])))
    assert not bool(Simplex(2.0).contains(torch.tensor([2.5, -0.5, 0.0])))
    assert bool(L1Ball(2.0).contains(torch.tensor([1.0, -1.0])))
    assert not bool(L1Ball(2.0).contains(torch.tensor([1.0, -1.01])))
    assert bool(L1Ball(2.0).contains(torch.tensor([1.0, -1.01]), atol=0.02))
    assert bool(L2Ball(1.0).contains(torch.tensor([0.6, 0.8], dtype=torch.float64)))
    assert not bool(L2Ball(1.0).contains(torch.tensor([0.6, 0.81], dtype=torch.float64)))
    assert Simplex(2.0).diameter(3) == pytest.approx(2 * math.sqrt(2))
    assert Simplex(2.0).diameter(1) == 0.0
    assert L1Ball(2.0).diameter(1) == 4.0 and L2Ball(0.5).diameter(9) == 1.0
    rng = np.random.default_rng(9)  # brute force: the largest distance between sampled points of Q
    for kind in KINDS:
        P = _points_in(kind, 400, 3, 1.0, rng)
        far = np.linalg.norm(P[:, None] - P[None], axis=-1).max()
        assert far <= make_set(kind, 1.0).diameter(3) + 1e-12
        assert far >= make_set(kind, 1.0).diameter(3) * (0.98 if kind == "l2" else 1 - 1e-12)
    torch.testing.assert_close(L2Ball(torch.tensor([1.0, 2.0])).diameter(4), torch.tensor([2.0, 4.0]))


# ---------------------------------------------------------------------------------- moves


@pytest.mark.parametrize("dtype", DTYPES)
def test_frank_wolfe_move(dtype):
    x = torch.tensor([[0.2, 0.8, 0.0], [0.0, 0.0, 1.0]], dtype=dtype)
    s = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=dtype)
    want = x + 0.25 * (s - x)
    out = frank_wolfe_move(x, s, 0.25)
    assert out is x
    assert torch.equal(x, want)  # the pseudocode's arithmetic, bit for bit
    g = torch.Generator().manual_seed(0)  # also for gamma >= 0.5, where torch.lerp rounds differently
    xs, ss = torch.rand(200, 3, generator=g, dtype=dtype), torch.rand(200, 3, generator=g, dtype=dtype)
    for gamma in (0.6, 0.9):
        assert torch.equal(frank_wolfe_move(xs.clone(), ss, gamma), xs + gamma * (ss - xs))
    x2 = torch.tensor([[0.2, 0.8, 0.0], [0.0, 0.0, 1.0]], dtype=dtype)
    frank_wolfe_move(x2, s, torch.tensor([0.0, 1.0]))
    assert x2[0].tolist() == pytest.approx([0.2, 0.8, 0.0]) and torch.equal(x2[1], s[1])
    x3 = torch.tensor([0.3, 0.7], dtype=dtype)
    assert torch.equal(frank_wolfe_move(x3, torch.tensor([1.0, 0.0], dtype=dtype), 1.0), torch.tensor([1.0, 0.0], dtype=dtype))
    for bad in (-0.1, 1.5, float("nan"), torch.tensor([0.5, 1.2])):
        with pytest.raises(ValueError, match="gamma"):
            frank_wolfe_move(x.clone(), s, bad)
    with pytest.raises(ValueError, match="^s must"):
        frank_wolfe_move(x.clone(), s[0], 0.5)


@pytest.mark.parametrize("kind", KINDS)
def test_projected_step(kind):
    Q = make_set(kind, torch.tensor([1.0, 2.0], dtype=torch.float64))
    x = torch.tensor([[0.5, 0.5, 0.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
    D = torch.tensor([[1.0, -3.0, 0.5], [2.0, 0.0, -1.0]], dtype=torch.float64)
    want = Q.project(x - torch.tensor([[0.3], [0.1]], dtype=torch.float64) * D)
    out = projected_step(x, D, torch.tensor([0.3, 0.1]), Q)
    assert out is x
    torch.testing.assert_close(x, want)
    with pytest.raises(ValueError, match="gamma"):
        projected_step(x, D, -1.0, Q)
    with pytest.raises(ValueError, match="direction"):
        projected_step(x, D[:, :2], 0.1, Q)


def test_frank_wolfe_and_pgd_reach_the_classical_bounds():
    """f = ||x - y||^2 / 2 (L = 1): FW with 2/(k+2) obeys f - f* <= 2 L D^2 / (k + 2) (Jaggi 2013,
    Thm 1); PGD with step 1/L obeys f - f* <= L ||x0 - x*||^2 / (2 k). Batched over the three sets."""
    rng = np.random.default_rng(10)
    d = 8
    for kind in KINDS:
        Q = make_set(kind, torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64))
        y = _t(rng.standard_normal((3, d)) * 2, torch.float64)
        xs = Q.project(y)
        fstar = 0.5 * ((xs - y) ** 2).sum(-1)
        D = torch.tensor([Q.diameter(d)[b].item() for b in range(3)], dtype=torch.float64) \
            if kind != "simplex" else Q.diameter(d).double()
        x = Q.lmo(torch.ones(3, d, dtype=torch.float64))
        x0 = x.clone()
        z = x.clone()
        for k in range(400):
            frank_wolfe_move(x, Q.lmo(x - y), 2.0 / (k + 2))
            assert bool((0.5 * ((x - y) ** 2).sum(-1) - fstar <= 2 * D ** 2 / (k + 3) + 1e-12).all())
            projected_step(z, z - y, 1.0, Q)
            assert bool((0.5 * ((z - y) ** 2).sum(-1) - fstar <= ((x0 - xs) ** 2).sum(-1) / (2 * (k + 1)) + 1e-12).all())
        assert bool(Q.contains(x).all()) and bool((Q.fw_gap(x, x - y) <= 2 * 2 * D ** 2 / 400 * 3).all())


# ------------------------------------------------------------------------------- schedules


def test_schedules():
    assert fw_step_deterministic(0, 1) == 0.5
    assert fw_step_deterministic(12, 1) == 0.2
    assert fw_step_deterministic(0, 10) == 4 / 80
    assert fw_step_stochastic(0, 4) == 4 / 64
    assert fw_step_stochastic(36, 1) == 4 / 44
    assert momentum_stochastic(0, 1) == 1.0  # eta_0 = 1 exactly, never above
    assert momentum_stochastic(56, 1) == pytest.approx(4 / 4 ** 2)  # (56 + 8)^{2/3} = 16
    assert momentum_stochastic(0, 4) == pytest.approx(4 / 64 ** (2 / 3))
    for f in (fw_step_deterministic, fw_step_stochastic, momentum_stochastic):
        values = [f(k, d) for d in (1, 3, 50) for k in range(0, 200, 7)]
        assert all(0 < v <= 1 for v in values)
        assert all(f(k + 1, 5) < f(k, 5) for k in range(50))
        with pytest.raises(ValueError, match="k must"):
            f(-1, 2)
        with pytest.raises(ValueError, match="d must"):
            f(0, 0)


# ---------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("kind", KINDS)
def test_bad_arguments_raise_one_line_value_errors(kind):
    cls = type(make_set(kind))
    for bad in (0.0, -1.0, float("nan"), float("inf"), torch.tensor([1.0, 0.0]), True, "1"):
        with pytest.raises(ValueError, match="radius") as err:
            cls(bad)
        assert "\n" not in str(err.value)
    Q = cls(torch.tensor([1.0, 2.0]))
    calls = [
        (lambda: Q.lmo(torch.zeros(3, 4)), "radius"),  # B = 3 against 2 radii
        (lambda: Q.project(torch.zeros(4)), "radius"),  # one vector with 2 radii
        (lambda: cls(1.0).lmo(torch.zeros(2, 3, 4)), "^g must"),
        (lambda: cls(1.0).lmo(torch.zeros(())), "^g must"),
        (lambda: cls(1.0).project(torch.zeros(2, 0)), "^y must"),
        (lambda: cls(1.0).project(torch.zeros(3, dtype=torch.int64)), "^y must"),
        (lambda: cls(1.0).project(torch.tensor([1.0, float("nan")])), "^y must"),
        (lambda: cls(1.0).project([1.0, 2.0]), "^y must"),
        (lambda: cls(1.0).fw_gap(torch.zeros(3), torch.zeros(4)), "^grad must"),
        (lambda: cls(1.0).fw_gap(torch.zeros(3), torch.zeros(3, dtype=torch.float64)), "^grad must"),
        (lambda: cls(1.0).contains(torch.zeros(3), atol=-1.0), "atol"),
        (lambda: cls(1.0).diameter(0), "^d must"),
    ]
    for call, match in calls:
        with pytest.raises(ValueError, match=match) as err:
            call()
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="kind"):
        make_set("linf")
