"""Properties of the zero-order estimators (zotheory.estimators).

Hypothesis draws shapes, seeds and scales; the arrays are built from seeded
generators. Tolerances are stated next to each property.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bitwise import bits
from zotheory import estimators as est
from zotheory.directions import generate_directions
from zotheory.estimators import NonFiniteOracleError
from zotheory.random import make_generator

# torch.func.jvp's internal decompositions call the deprecated torch.jit.script (torch's own warning).
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

U64 = torch.finfo(torch.float64).eps / 2  # unit roundoff of float64
seeds = st.integers(0, 2**31 - 1)
log_tau = st.floats(-4.0, 1.0)  # tau = 10 ** log_tau
small_dims = st.integers(1, 6)

def randn(shape, seed: int, dtype=torch.float64, scale: float = 1.0) -> torch.Tensor:
    return (torch.randn(shape, generator=make_generator(seed), dtype=torch.float64) * scale).to(dtype)


# --------------------------------------------------------------------------- quadratics


def quadratic(d: int, seed: int, curvature: float):
    g = make_generator(seed)
    m = torch.randn(d, d, generator=g, dtype=torch.float64)
    A = curvature * (m + m.T) / 2
    b = torch.randn(d, generator=g, dtype=torch.float64)
    x = torch.randn(d, generator=g, dtype=torch.float64) * 2
    return A, b, x


def quad_value(A, b, v):
    return 0.5 * v @ (A @ v) + b @ v


def exactness_tolerance(A, b, x, tau):
    """fp64 rounding bound for the central difference of a quadratic, per coordinate.

    Error sources: evaluating f(x +- tau e_i) (each off by <= (d + 3) u S with
    S = 0.5 |x'|^T |A| |x'| + |b|^T |x'|, x' = |x| + tau), the rounded steps
    fl(x_i +- tau) (off by <= u (|x_i| + tau), changing f by <= that times
    |g_i| + |A_ii| (|x_i| + tau)), divided by 2 tau; plus the final division.
    Returned with a safety factor of 4.
    """
    d = x.numel()
    xp = x.abs() + tau
    S = 0.5 * xp @ (A.abs() @ xp) + b.abs() @ xp
    g = A @ x + b
    step = U64 * (x.abs() + tau) * (g.abs() + A.diagonal().abs() * (x.abs() + tau))
    return 4 * (2 * (d + 3) * U64 * S + 2 * step) / (2 * tau) + 4 * U64 * g.abs()


@settings(max_examples=60, deadline=None)
@given(d=small_dims, seed=seeds, lt=log_tau, lc=st.floats(-2.0, 2.0))
def test_central_difference_exact_on_quadratics(d, seed, lt, lc):
    """(f(x+tau e_i) - f(x-tau e_i)) / (2 tau) = (A x + b)_i for every tau (fp64 rounding only)."""
    tau = 10.0**lt
    A, b, x = quadratic(d, seed, 10.0**lc)
    e = est.jaguar_coordinates(x, lambda: quad_value(A, b, x), tau, indices=torch.arange(d))
    exact = A @ x + b
    tol = exactness_tolerance(A, b, x, tau)
    assert e.mode == "coordinate" and e.oracle_calls == 2 * d
    assert bool(((e.values - exact).abs() <= tol).all()), (e.values - exact, tol)


@settings(max_examples=30, deadline=None)
@given(shapes=st.lists(st.lists(st.integers(1, 3), max_size=2).map(tuple), min_size=1, max_size=3),
       seed=seeds, lt=log_tau)
def test_central_difference_exact_on_quadratics_parameter_list(shapes, seed, lt):
    """Same property when x is a list of tensors: indices run over the concatenation."""
    tau = 10.0**lt
    sizes = [math.prod(s) for s in shapes]
    d = sum(sizes)
    A, b, xflat = quadratic(d, seed, 1.0)
    params = [t.reshape(s).clone() for t, s in zip(xflat.split(sizes), shapes)]
    closure = lambda: quad_value(A, b, torch.cat([p.reshape(-1) for p in params]))
    e = est.jaguar_coordinates(params, closure, tau, indices=torch.arange(d))
    tol = exactness_tolerance(A, b, xflat, tau)
    assert bool(((e.values - (A @ xflat + b)).abs() <= tol).all())


@settings(max_examples=30, deadline=None)
@given(d=small_dims, seed=seeds, lt=log_tau)
def test_coordinate_average_is_gradient_on_quadratics(d, seed, lt):
    """d * E_i[g_i e_i] = grad f, with the expectation an exact enumeration over i = 0..d-1."""
    tau = 10.0**lt
    A, b, x = quadratic(d, seed, 1.0)
    dense = torch.zeros(d, dtype=torch.float64)
    for i in range(d):
        e = est.jaguar_coordinates(x, lambda: quad_value(A, b, x), tau, indices=torch.tensor([i]))
        dense[e.indices] += e.values / d  # E_i over the uniform distribution on {0..d-1}
    assert bool(((d * dense - (A @ x + b)).abs() <= exactness_tolerance(A, b, x, tau)).all())


# --------------------------------------------------------------------------- L-smooth bounds


def smooth_problem(d: int, seed: int):
    """f(x) = sum_j a_j/2 x_j^2 + b_j (1 - cos(w_j x_j)); f_j'' = a_j + b_j w_j^2 cos(.) so L = max_j a_j + b_j w_j^2."""
    g = make_generator(seed)
    a = torch.rand(d, generator=g, dtype=torch.float64) * 3
    bb = torch.rand(d, generator=g, dtype=torch.float64) * 3
    w = 0.1 + torch.rand(d, generator=g, dtype=torch.float64) * 5
    x = (torch.rand(d, generator=g, dtype=torch.float64) * 2 - 1) * 3
    L = float((a + bb * w**2).max())
    f = lambda v: (a / 2 * v**2 + bb * (1 - torch.cos(w * v))).sum()
    grad = lambda v: a * v + bb * w * torch.sin(w * v)
    terms = lambda v: (a / 2 * v**2 + bb * 2).sum()  # bound on sum |terms| for rounding slack
    return f, grad, terms, x, L


@settings(max_examples=50, deadline=None)
@given(d=small_dims, seed=seeds, lt=st.floats(-3.0, 0.0))
def test_error_at_most_L_tau_over_2(d, seed, lt):
    """|g_i - partial_i f| <= L tau / 2 (+ fp64 slack 16 (d+3) u sum|terms| / tau)."""
    tau = 10.0**lt
    f, grad, terms, x, L = smooth_problem(d, seed)
    e = est.jaguar_coordinates(x, lambda: f(x), tau, indices=torch.arange(d))
    slack = 16 * (d + 3) * U64 * float(terms(x.abs() + tau)) / tau
    assert bool(((e.values - grad(x)).abs() <= L * tau / 2 + slack).all())


@settings(max_examples=30, deadline=None)
@given(d=small_dims, lL=st.floats(-2.0, 2.0), lt=st.floats(-3.0, 1.0), seed=seeds)
def test_L_tau_over_2_is_tight(d, lL, lt, seed):
    """phi(t) = (L/2) t|t| is L-smooth with phi'(0) = 0; at x = 0 the error is exactly L tau / 2 (rel 1e-12)."""
    L, tau = 10.0**lL, 10.0**lt
    x = torch.zeros(d, dtype=torch.float64)
    e = est.jaguar_coordinates(x, lambda: (L / 2 * x * x.abs()).sum(), tau, k=min(d, 3),
                               generator=make_generator(seed))
    assert torch.allclose(e.values, torch.full_like(e.values, L * tau / 2), rtol=1e-12, atol=0)


@settings(max_examples=40, deadline=None)
@given(d=small_dims, seed=seeds, lt=st.floats(-3.0, 0.0), lD=st.floats(-8.0, -1.0))
def test_noisy_oracle_error_bound(d, seed, lt, lD):
    """With |delta| <= Delta added inside the closure: |g_i - partial_i f| <= L tau/2 + Delta/tau (+ fp64 slack)."""
    tau, Delta = 10.0**lt, 10.0**lD
    f, grad, terms, x, L = smooth_problem(d, seed)
    noise_gen = make_generator(seed + 1)

    def closure():
        u = torch.rand((), generator=noise_gen, dtype=torch.float64) * 2 - 1
        return f(x) + Delta * u

    e = est.jaguar_coordinates(x, closure, tau, indices=torch.arange(d))
    slack = 16 * (d + 3) * U64 * (float(terms(x.abs() + tau)) + Delta) / tau
    assert bool(((e.values - grad(x)).abs() <= L * tau / 2 + Delta / tau + slack).all())


@settings(max_examples=20, deadline=None)
@given(lL=st.floats(-1.0, 1.0), lt=st.floats(-3.0, 0.0), lD=st.floats(-6.0, -1.0))
def test_noisy_bound_is_tight(lL, lt, lD):
    """phi(t) = (L/2) t|t| at 0 with noise +Delta then -Delta: error = L tau/2 + Delta/tau (rel 1e-10)."""
    L, tau, Delta = 10.0**lL, 10.0**lt, 10.0**lD
    x = torch.zeros(1, dtype=torch.float64)
    sign = iter([1.0, -1.0])
    e = est.jaguar_coordinates(x, lambda: L / 2 * x[0] * x[0].abs() + next(sign) * Delta, tau,
                               indices=torch.tensor([0]))
    assert math.isclose(float(e.values[0]), L * tau / 2 + Delta / tau, rel_tol=1e-10)


# --------------------------------------------------------------------------- direction estimators


def _moment_tolerance(dist: str, c: torch.Tensor, n: int) -> torch.Tensor:
    """5 standard errors of the mean of scale * z_j for f linear, per coordinate j.

    Var[(c.z) z_j] = |c|^2 + c_j^2 (Gaussian), |c|^2 - c_j^2 (Rademacher);
    sphere with the factor d: d (|c|^2 + 2 c_j^2)/(d + 2) - c_j^2.
    """
    d, c2 = c.numel(), float(c @ c)
    if dist == "gaussian":
        var = c2 + c**2
    elif dist == "rademacher":
        var = c2 - c**2
    else:
        var = d * (c2 + 2 * c**2) / (d + 2) - c**2
    return 5 * (var / n).sqrt() + 1e-12


@pytest.mark.parametrize("dist", ["gaussian", "sphere", "rademacher"])
def test_two_point_unbiased_on_linear(dist):
    """E[scale * z] = c for f(x) = c.x + c0: mean over 1500 fixed seeds within 5 standard errors."""
    fn = {"gaussian": est.gaussian_two_point, "sphere": est.sphere_two_point,
          "rademacher": est.rademacher_two_point}[dist]
    d, n = 4, 1500
    c = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    x = randn(d, 0)
    total = torch.zeros(d, dtype=torch.float64)
    for s in range(n):
        e = fn(x, lambda: c @ x + 0.7, 0.01, seed=s)
        total += e.dense(x)[0]
    assert bool(((total / n - c).abs() <= _moment_tolerance(dist, c, n)).all()), total / n - c


@settings(max_examples=30, deadline=None)
@given(d=small_dims, seed=seeds, lt=log_tau, dist=st.sampled_from(["gaussian", "sphere", "rademacher"]))
def test_seeded_direction_equals_explicit_z(d, seed, lt, dist):
    """The seed trick: regenerating z from the seed gives bitwise the estimate with that z explicit."""
    tau = 10.0**lt
    A, b, x = quadratic(d, seed, 1.0)
    fn = {"gaussian": est.gaussian_two_point, "sphere": est.sphere_two_point,
          "rademacher": est.rademacher_two_point}[dist]
    closure = lambda: quad_value(A, b, x)
    by_seed = fn(x, closure, tau, seed=seed)
    (z,) = generate_directions([x], seed, dist)
    by_z = fn(x, closure, tau, z=z)
    assert by_seed.z is None and by_seed.seed == seed and by_z.z is z and by_z.seed is None
    assert torch.equal(by_seed.scale, by_z.scale)
    assert torch.equal(by_seed.dense(x)[0], by_z.dense(x)[0])
    # On a quadratic the two-point difference is exact: scale = c * <grad f, z>, c = d for the sphere.
    factor = d if dist == "sphere" else 1
    want = factor * ((A @ x + b) @ z)
    assert math.isclose(float(by_seed.scale), float(want), rel_tol=1e-6, abs_tol=1e-6 * factor / tau)


@settings(max_examples=30, deadline=None)
@given(d=small_dims, seed=seeds)
def test_forward_difference_and_forward_grad(d, seed):
    """Forward difference on a linear f and Forward-Grad on a quadratic are <grad f, z>."""
    A, b, x = quadratic(d, seed, 1.0)
    (z,) = generate_directions([x], seed, "gaussian")
    fd = est.forward_difference(x, lambda: b @ x + 1.0, 0.1, seed=seed)
    assert fd.oracle_calls == 2
    assert math.isclose(float(fd.scale), float(b @ z), rel_tol=1e-9, abs_tol=1e-9)
    fd1 = est.forward_difference(x, lambda: b @ x + 1.0, 0.1, seed=seed, f0=float(b @ x + 1.0))
    assert fd1.oracle_calls == 1 and math.isclose(float(fd1.scale), float(fd.scale), rel_tol=1e-9, abs_tol=1e-9)
    fg = est.forward_grad(lambda v: quad_value(A, b, v), x, seed=seed)
    assert fg.oracle_calls == 1
    assert math.isclose(float(fg.scale), float((A @ x + b) @ z), rel_tol=1e-12, abs_tol=1e-12)
    # list form: fn receives a tuple of tensors
    parts = [x[:1].clone(), x[1:].clone()]
    fg_list = est.forward_grad(lambda ps: quad_value(A, b, torch.cat(ps)), parts, seed=seed)
    zl = generate_directions(parts, seed, "gaussian")
    assert math.isclose(float(fg_list.scale), float((A @ x + b) @ torch.cat(zl)), rel_tol=1e-12, abs_tol=1e-12)


def test_evaluate_at_values():
    x = randn((2, 3), 0)
    before = bits(x)
    f = lambda v: (v.sin() * v).sum()
    ds = [randn((2, 3), s, scale=0.1) for s in range(1, 4)] + [torch.ones(3)]  # last one broadcasts
    vals = est.evaluate_at(x, lambda: f(x), ds)
    assert vals.shape == (4,)
    for v, dj in zip(vals, ds):
        assert float(v) == float(f(x + dj))
    assert torch.equal(bits(x), before)


def test_regenerate_restore_is_close_not_promised_bitwise():
    """restore='regenerate' (MeZO's walk) returns close to x and to the 'saved' estimate in fp64."""
    A, b, x = quadratic(5, 3, 1.0)
    x0 = x.clone()
    closure = lambda: quad_value(A, b, x)
    saved = est.gaussian_two_point(x, closure, 1e-3, seed=11)
    regen = est.gaussian_two_point(x, closure, 1e-3, seed=11, restore="regenerate")
    assert torch.allclose(x, x0, rtol=0, atol=1e-14)
    assert math.isclose(float(saved.scale), float(regen.scale), rel_tol=1e-9)
    fd = est.forward_difference(x, closure, 1e-3, seed=11, restore="regenerate")
    assert torch.allclose(x, x0, rtol=0, atol=1e-14) and math.isfinite(float(fd.scale))


# --------------------------------------------------------------------------- block and row


@settings(max_examples=30, deadline=None)
@given(m=st.integers(1, 25), n=st.integers(1, 25), v=st.integers(1, 30), seed=seeds,
       frac=st.sampled_from([0.1, 0.25, 0.5, 1.0]))
def test_block_selection_and_value(m, n, v, seed, frac):
    """Block sizes max(1, floor(frac*rows)) x max(1, floor(frac*cols)) (+ 1-D); value = sum_S c_i on linear f."""
    W, bias = randn((m, n), seed), randn(v, seed + 1)
    c = randn(m * n + v, seed + 2)
    closure = lambda: c @ torch.cat([W.reshape(-1), bias])
    e = est.jaguar_block([W, bias], closure, 0.01, fraction=frac, generator=make_generator(seed))
    rows, cols, ents = (max(1, math.floor(frac * s + 1e-9)) for s in (m, n, v))
    assert e.mode == "block" and e.oracle_calls == 2
    in_w = e.indices < m * n
    assert int(in_w.sum()) == rows * cols and int((~in_w).sum()) == ents
    assert e.indices.unique().numel() == e.indices.numel()
    r, col = e.indices[in_w] // n, e.indices[in_w] % n
    assert r.unique().numel() == rows and col.unique().numel() == cols
    assert torch.allclose(e.values, c[e.indices].sum().expand(e.values.shape), rtol=1e-9, atol=1e-9)
    again = est.jaguar_block([W, bias], closure, 0.01, indices=e.indices)
    assert torch.equal(again.values, e.values)


def test_block_rank3_treated_as_rows_by_rest():
    x = randn((20, 3, 10), 0)
    e = est.jaguar_block(x, lambda: x.sum(), 0.1, generator=make_generator(0))
    assert e.indices.numel() == 2 * 3  # 10% of 20 rows x 10% of 30 "columns"
    assert (e.indices // 30).unique().numel() == 2


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 5), d=st.integers(1, 5), seed=seeds, lt=log_tau)
def test_row_estimate(n, d, seed, lt):
    """Row mode on a quadratic: value = sum over the row of partial derivatives (exact for quadratics)."""
    tau = 10.0**lt
    A, b, xf = quadratic(n * d, seed, 1.0)
    x = xf.reshape(n, d).clone()
    e = est.jaguar_row(x, lambda: quad_value(A, b, x.reshape(-1)), tau, generator=make_generator(seed))
    assert e.mode == "row" and e.indices.shape == (d,) and e.values.shape == (d,)
    r = int(e.indices[0]) // d
    assert torch.equal(e.indices, r * d + torch.arange(d))
    g = A @ xf + b
    # (f(x+tau e_r) - f(x-tau e_r)) / (2 tau) = <grad, e_r> exactly for a quadratic (fp64 rounding, loose tol).
    tol = 1e-9 * (1 + float(A.abs().sum() + b.abs().sum())) * (1 + float(xf.abs().max())) ** 2 / tau
    assert bool(((e.values - g[e.indices].sum()).abs() <= tol).all())


# --------------------------------------------------------------------------- bitwise restoration

LOW = [torch.float32, torch.bfloat16, torch.float16]
ESTIMATORS = ["coordinates", "block", "row", "gaussian", "sphere", "rademacher",
              "forward_difference", "forward_grad", "evaluate_at"]


def _run(name: str, params, closure, tau: float, seed: int):
    single = isinstance(params, torch.Tensor)
    if name == "coordinates":
        numel = params.numel() if single else sum(p.numel() for p in params)
        return est.jaguar_coordinates(params, closure, tau, k=min(3, numel), generator=make_generator(seed))
    if name == "block":
        return est.jaguar_block(params, closure, tau, fraction=0.5, generator=make_generator(seed))
    if name == "row":
        x = params if single else params[0]
        return est.jaguar_row(x, closure, tau, generator=make_generator(seed))
    if name in ("gaussian", "sphere", "rademacher"):
        fn = {"gaussian": est.gaussian_two_point, "sphere": est.sphere_two_point,
              "rademacher": est.rademacher_two_point}[name]
        return fn(params, closure, tau, seed=seed)
    if name == "forward_difference":
        return est.forward_difference(params, closure, tau, seed=seed, distribution="rademacher")
    if name == "forward_grad":
        fn = (lambda v: _objective([v])) if single else (lambda vs: _objective(list(vs)))
        return est.forward_grad(fn, params, seed=seed)
    if name == "evaluate_at":
        ps = [params] if single else params
        disp = [torch.full_like(p, tau) for p in ps]
        return est.evaluate_at(params, closure, [disp[0] if single else disp, disp[0] if single else disp])
    raise AssertionError(name)


def _objective(ps) -> torch.Tensor:
    return sum((p.float() ** 2).sum() + p.float().sin().sum() for p in ps)


def _make_params(shapes, dtypes, seed):
    params = []
    for j, (s, dt) in enumerate(zip(shapes, dtypes)):
        p = randn(s, seed + j, dtype=dt, scale=3.0)
        p.view(-1)[0] = -0.0  # x + tau - tau would turn -0.0 into +0.0
        params.append(p)
    return params


mats = st.tuples(st.integers(1, 4), st.integers(1, 4))


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(ESTIMATORS), dtype=st.sampled_from(LOW), shape=mats, seed=seeds, lt=st.floats(-4.0, 0.0))
def test_restored_bitwise_single_tensor(name, dtype, shape, seed, lt):
    (x,) = _make_params([shape], [dtype], seed)
    before = bits(x)
    _run(name, x, lambda: _objective([x]), 10.0**lt, seed)
    assert torch.equal(bits(x), before)


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(ESTIMATORS), dtypes=st.lists(st.sampled_from(LOW), min_size=3, max_size=3),
       shape=mats, n=st.integers(1, 5), seed=seeds, lt=st.floats(-4.0, 0.0))
def test_restored_bitwise_parameter_list(name, dtypes, shape, n, seed, lt):
    params = _make_params([shape, (n,), ()], dtypes, seed)
    params[2].fill_(1.5)
    before = [bits(p) for p in params]
    _run(name, params, lambda: _objective(params), 10.0**lt, seed)
    assert all(torch.equal(bits(p), b) for p, b in zip(params, before))


NONFINITE = ["coordinates", "block", "row", "gaussian", "sphere", "rademacher", "forward_difference", "evaluate_at"]


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(NONFINITE), dtype=st.sampled_from(LOW), shape=mats, seed=seeds,
       bad_call=st.integers(1, 2), bad=st.sampled_from([math.nan, math.inf, -math.inf, "raise"]))
def test_restored_when_closure_fails(name, dtype, shape, seed, bad_call, bad):
    """A nan/inf value raises NonFiniteOracleError naming the call; an exception propagates; params unchanged."""
    params = _make_params([shape, (3,)], [dtype, dtype], seed)
    before = [bits(p) for p in params]
    calls = [0]

    def closure():
        calls[0] += 1
        if calls[0] == bad_call:
            if bad == "raise":
                raise RuntimeError("oracle crashed")
            return torch.tensor(bad)
        return _objective(params)

    target = params[0] if name == "row" else params
    if bad == "raise":
        with pytest.raises(RuntimeError, match="crashed"):
            _run(name, target, closure, 0.01, seed)
    else:
        with pytest.raises(NonFiniteOracleError, match=r"f\(x.*returned -?(nan|inf)"):
            _run(name, target, closure, 0.01, seed)
    assert all(torch.equal(bits(p), b) for p, b in zip(params, before))


def test_nonfinite_error_message_and_type():
    x = torch.zeros(3)
    with pytest.raises(FloatingPointError, match=r"f\(x \+ tau\*e_i\).* returned nan"):
        est.jaguar_coordinates(x, lambda: torch.tensor(float("nan")), 0.1, indices=torch.tensor([1]))
    with pytest.raises(NonFiniteOracleError, match=r"f\(x - tau\*z\) returned inf"):
        vals = iter([0.0, math.inf])
        est.gaussian_two_point(x, lambda: next(vals), 0.1, seed=0)


def test_noncontiguous_and_requires_grad_parameters():
    base = randn((4, 3), 0, dtype=torch.float32)
    x = torch.nn.Parameter(base.T)  # non-contiguous leaf that requires grad
    assert not x.is_contiguous()
    before = bits(x)
    c = randn((3, 4), 1, dtype=torch.float32)
    e = est.jaguar_coordinates(x, lambda: (c * x).sum(), 0.5, indices=torch.arange(12))
    assert torch.equal(bits(x), before)
    assert torch.allclose(e.values, c.reshape(-1), atol=1e-5)


# --------------------------------------------------------------------------- batched == separate


@settings(max_examples=25, deadline=None)
@given(B=st.integers(1, 4), event=st.lists(st.integers(1, 4), min_size=1, max_size=2).map(tuple),
       seed=seeds, data=st.data())
def test_batched_coordinates_equal_separate(B, event, seed, data):
    numel = math.prod(event)
    k = data.draw(st.integers(1, numel))
    x = randn((B, *event), seed)
    w = randn(event, seed + 1)
    f_rows = lambda v: (w * v.sin()).flatten(-len(event)).sum(-1) + v.flatten(-len(event)).sum(-1) ** 2
    tau = torch.tensor([10.0 ** (-1 - j % 3) for j in range(B)], dtype=torch.float64)
    batched = est.jaguar_coordinates(x, lambda: f_rows(x), tau, k=k, generator=make_generator(seed), batch_dims=1)
    assert batched.indices.shape == (B, k) and batched.values.shape == (B, k)
    for r in range(B):
        xr = x[r].clone()
        single = est.jaguar_coordinates(xr, lambda: f_rows(xr), float(tau[r]), indices=batched.indices[r])
        torch.testing.assert_close(batched.values[r], single.values, rtol=1e-12, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(B=st.integers(1, 4), n=st.integers(1, 4), d=st.integers(1, 4), seed=seeds,
       dist=st.sampled_from(["gaussian", "sphere", "rademacher", "forward_difference", "row", "evaluate_at"]))
def test_batched_direction_and_row_equal_separate(B, n, d, seed, dist):
    x = randn((B, n, d), seed)
    f_rows = lambda v: (v.cos() * v).sum((-2, -1)) + v.sum((-2, -1)) ** 2
    tau = torch.tensor([10.0 ** (-1 - j % 3) for j in range(B)], dtype=torch.float64)
    z = randn((B, n, d), seed + 1)
    if dist == "row":
        batched = est.jaguar_row(x, lambda: f_rows(x), tau, generator=make_generator(seed), batch_dims=1)
        assert batched.values.shape == (B, d)
    elif dist == "evaluate_at":
        ds = [z * 0.1, -z]
        batched_vals = est.evaluate_at(x, lambda: f_rows(x), ds, batch_dims=1)
        assert batched_vals.shape == (2, B)
    elif dist == "forward_difference":
        batched = est.forward_difference(x, lambda: f_rows(x), tau, z=z, batch_dims=1)
    else:
        fn = {"gaussian": est.gaussian_two_point, "sphere": est.sphere_two_point,
              "rademacher": est.rademacher_two_point}[dist]
        batched = fn(x, lambda: f_rows(x), tau, z=z, batch_dims=1)
    for r in range(B):
        xr = x[r].clone()
        cl = lambda: f_rows(xr)
        if dist == "row":
            row = int(batched.indices[r, 0]) // d
            single = est.jaguar_row(xr, cl, float(tau[r]), row=row)
            assert torch.equal(single.indices, batched.indices[r])
            torch.testing.assert_close(batched.values[r], single.values, rtol=1e-12, atol=1e-12)
        elif dist == "evaluate_at":
            single_vals = est.evaluate_at(xr, cl, [dj[r] for dj in ds])
            torch.testing.assert_close(batched_vals[:, r], single_vals, rtol=1e-12, atol=1e-12)
        else:
            if dist == "forward_difference":
                single = est.forward_difference(xr, cl, float(tau[r]), z=z[r])
            else:
                single = fn(xr, cl, float(tau[r]), z=z[r])
            torch.testing.assert_close(batched.scale[r], single.scale, rtol=1e-12, atol=1e-12)
    fg = est.forward_grad(f_rows, x, z=z, batch_dims=1)
    for r in range(B):
        single = est.forward_grad(f_rows, x[r].clone(), z=z[r])
        torch.testing.assert_close(fg.scale[r], single.scale, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- determinism


@settings(max_examples=20, deadline=None)
@given(name=st.sampled_from([n for n in ESTIMATORS if n != "evaluate_at"]), seed=seeds, shape=mats)
def test_same_seed_same_estimate(name, seed, shape):
    (x,) = _make_params([shape], [torch.float32], seed)
    a = _run(name, x, lambda: _objective([x]), 0.01, seed)
    b = _run(name, x, lambda: _objective([x]), 0.01, seed)
    if hasattr(a, "indices"):
        assert torch.equal(a.indices, b.indices) and torch.equal(a.values, b.values)
    else:
        assert torch.equal(a.scale, b.scale) and all(torch.equal(u, v) for u, v in zip(a.dense(x), b.dense(x)))


# --------------------------------------------------------------------------- bad arguments


def test_bad_arguments_name_the_argument():
    x = torch.zeros(4)
    cl = lambda: x.sum()
    g = make_generator(0)
    cases = [
        ("tau", lambda: est.jaguar_coordinates(x, cl, 0.0, generator=g)),
        ("tau", lambda: est.jaguar_coordinates(x, cl, -1.0, generator=g)),
        ("tau", lambda: est.gaussian_two_point(x, cl, float("nan"), seed=0)),
        ("tau", lambda: est.jaguar_coordinates(torch.zeros(3, 4), lambda: torch.zeros(3), torch.ones(2),
                                               generator=g, batch_dims=1)),
        ("k", lambda: est.jaguar_coordinates(x, cl, 0.1, k=0, generator=g)),
        ("k", lambda: est.jaguar_coordinates(x, cl, 0.1, k=5, generator=g)),
        ("generator", lambda: est.jaguar_coordinates(x, cl, 0.1)),
        ("generator", lambda: est.jaguar_block(x, cl, 0.1)),
        ("generator", lambda: est.jaguar_row(torch.zeros(2, 2), cl, 0.1)),
        ("indices", lambda: est.jaguar_coordinates(x, cl, 0.1, indices=torch.tensor([4]))),
        ("indices", lambda: est.jaguar_coordinates(x, cl, 0.1, indices=torch.tensor([[0]]))),
        ("indices", lambda: est.jaguar_coordinates(x, cl, 0.1, indices=torch.tensor([0.5]))),
        ("fraction", lambda: est.jaguar_block(x, cl, 0.1, fraction=0.0, generator=g)),
        ("fraction", lambda: est.jaguar_block(x, cl, 0.1, fraction=1.5, generator=g)),
        ("x", lambda: est.jaguar_row(x, cl, 0.1, generator=g)),
        ("row", lambda: est.jaguar_row(torch.zeros(2, 2), cl, 0.1, row=2)),
        ("batch_dims", lambda: est.jaguar_coordinates([x, x], cl, 0.1, generator=g, batch_dims=1)),
        ("batch_dims", lambda: est.gaussian_two_point(x, cl, 0.1, seed=0, batch_dims=2)),
        ("batch_dims", lambda: est.gaussian_two_point(x, cl, 0.1, seed=0, batch_dims=-1)),
        ("distribution", lambda: est.forward_difference(x, cl, 0.1, seed=0, distribution="uniform")),
        ("distribution", lambda: est.forward_grad(lambda v: v.sum(), x, seed=0, distribution="normal")),
        ("restore", lambda: est.gaussian_two_point(x, cl, 0.1, seed=0, restore="subtract")),
        ("seed", lambda: est.gaussian_two_point(x, cl, 0.1)),
        ("seed", lambda: est.gaussian_two_point(x, cl, 0.1, seed=1, z=torch.ones(4))),
        ("seed", lambda: est.sphere_two_point(x, cl, 0.1, seed=-2)),
        ("z", lambda: est.rademacher_two_point(x, cl, 0.1, z=torch.ones(5))),
        ("f0", lambda: est.forward_difference(x, cl, 0.1, seed=0, f0=float("inf"))),
        ("displacements", lambda: est.evaluate_at(x, cl, [])),
        ("displacements", lambda: est.evaluate_at(x, cl, [torch.ones(5)])),
        ("closure", lambda: est.gaussian_two_point(x, lambda: x, 0.1, seed=0)),
        ("params", lambda: est.gaussian_two_point([], cl, 0.1, seed=0)),
        ("params", lambda: est.gaussian_two_point(torch.zeros(3, dtype=torch.long), cl, 0.1, seed=0)),
    ]
    for name, call in cases:
        with pytest.raises(ValueError, match=name):
            call()
    assert torch.equal(x, torch.zeros(4))
