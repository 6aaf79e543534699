"""Synthetic problems: exact gradients, exact L (upper bound and attainment), f*, batching.

Tolerances (float64):
* gradient vs central differences with h = 1e-5: ``|fd - g| <= 1e-6 (1 + |f| + ||g||_inf)``
  (truncation h^2 |f'''| / 6 and rounding 1e-16 |f| / h are both far below), plus
  ``L h`` for the kinked quadratic when a coordinate lies within h of the kink;
* L as an upper bound: ``||g(x + h v) - g(x)|| / h <= L (1 + 1e-9) + 1e-12 ||g|| / h``;
* L attained: the same ratio along the known sup direction is ``>= L (1 - 1e-6)``.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zotheory.synthetic.problems import (
    CauchyRegression,
    EntrywiseCosineMatrix,
    KinkedQuadratic,
    MatrixSensing,
    Problem,
    SeparableCosine,
    nuclear_norm,
)

F64 = torch.float64
SETTINGS = settings(max_examples=20, deadline=None)

seeds = st.integers(min_value=0, max_value=2**16)
scales = st.floats(min_value=0.1, max_value=5.0)


@st.composite
def problems(draw) -> Problem:
    family = draw(st.sampled_from(["cosine", "cosine_matrix", "kinked", "cauchy", "sensing"]))
    seed = draw(seeds)
    x0_scale = draw(scales)
    if family in ("cosine", "cosine_matrix"):
        a = draw(st.floats(min_value=0.1, max_value=3.0))
        b = draw(st.floats(min_value=0.0, max_value=3.0))
        w = draw(st.floats(min_value=0.2, max_value=5.0))
        rotation = draw(st.booleans())
        if family == "cosine":
            d = draw(st.integers(1, 8))
            return SeparableCosine(d, a, b, w, x0_scale, seed, rotation=rotation)
        m, n = draw(st.integers(1, 5)), draw(st.integers(1, 5))
        return EntrywiseCosineMatrix(m, n, a, b, w, x0_scale, seed, rotation=rotation)
    if family == "kinked":
        d = draw(st.integers(1, 8))
        L = draw(st.floats(min_value=0.1, max_value=10.0))
        eps = draw(st.floats(min_value=0.01, max_value=0.99))
        return KinkedQuadratic(d, L, eps, x0_scale, seed)
    if family == "cauchy":
        d = draw(st.integers(1, 6))
        n_samples = draw(st.integers(1, 20))
        c = draw(st.floats(min_value=0.3, max_value=3.0))
        return CauchyRegression(n_samples, d, c, seed, x0_scale=x0_scale)
    m, n = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    rank = draw(st.integers(1, min(m, n)))
    p = draw(st.integers(1, 30))
    return MatrixSensing(m, n, rank, p, seed, x0_scale=x0_scale)


def _random_points(problem: Problem, seed: int, batch: int, scale: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return problem.minimiser + scale * torch.randn(batch, *problem.shape, generator=g, dtype=F64)


def _flat(x: torch.Tensor, problem: Problem) -> torch.Tensor:
    return x.reshape(*x.shape[: x.ndim - len(problem.shape)], problem.d)


# ----------------------------------------------------------------------------- gradients


@SETTINGS
@given(problem=problems(), seed=seeds, scale=scales)
def test_grad_matches_central_differences(problem: Problem, seed: int, scale: float) -> None:
    h = 1e-5
    x = _random_points(problem, seed, 1, scale)[0]
    d = problem.d
    E = torch.eye(d, dtype=F64).reshape(d, *problem.shape)
    fd = (problem.value(x + h * E) - problem.value(x - h * E)) / (2 * h)  # batched over d
    g = problem.grad(x).reshape(d)
    tol = 1e-6 * (1 + problem.value(x).abs().item() + g.abs().max().item())
    if isinstance(problem, KinkedQuadratic):
        tol += problem.L * h
    assert (fd - g).abs().max().item() <= tol


# ----------------------------------------------------------------------------- L


@SETTINGS
@given(problem=problems(), seed=seeds, scale=scales, h=st.sampled_from([1e-3, 1e-1, 1.0, 10.0]))
def test_gradient_difference_quotient_never_exceeds_L(problem: Problem, seed: int, scale: float, h: float) -> None:
    g = torch.Generator().manual_seed(seed + 1)
    x = _random_points(problem, seed, 64, scale)
    v = torch.randn(x.shape, generator=g, dtype=F64)
    v = v / _flat(v, problem).norm(dim=-1).reshape(-1, *([1] * len(problem.shape)))
    gx, gy = problem.grad(x), problem.grad(x + h * v)
    ratio = _flat(gy - gx, problem).norm(dim=-1) / h
    slack = 1e-12 * (_flat(gx, problem).norm(dim=-1) + _flat(gy, problem).norm(dim=-1)) / h
    assert bool((ratio <= problem.L * (1 + 1e-9) + slack).all()), (ratio.max().item(), problem.L)


def _sup_direction(problem: Problem) -> tuple[torch.Tensor, torch.Tensor, float]:
    """A point, a unit direction and a step along which grad f changes at rate (close to) L."""
    if isinstance(problem, SeparableCosine):
        e = torch.zeros(problem.d, dtype=F64)
        e[0] = 1.0
        v = e if problem.Q is None else problem.Q.T @ e
        return problem.minimiser, v, 1e-4 / problem.w
    if isinstance(problem, EntrywiseCosineMatrix):
        E = torch.zeros(problem.shape, dtype=F64)
        E[0, 0] = 1.0
        v = E if problem.U is None else problem.U.T @ E @ problem.V
        return problem.minimiser, v, 1e-4 / problem.w
    if isinstance(problem, KinkedQuadratic):
        return problem.minimiser, torch.ones(problem.d, dtype=F64) / math.sqrt(problem.d), 1.0
    if isinstance(problem, CauchyRegression):
        v = torch.linalg.eigh(problem.A.T @ problem.A).eigenvectors[:, -1]
        h = 1e-4 * problem.c / max((problem.A @ v).abs().max().item(), 1e-300)
        return problem.minimiser, v, h
    if isinstance(problem, MatrixSensing):
        M = problem.A.reshape(problem.n_measurements, problem.d)
        v = torch.linalg.eigh(M.T @ M).eigenvectors[:, -1].reshape(problem.shape)
        return problem.x0, v, 1.0
    raise AssertionError(type(problem))


@SETTINGS
@given(problem=problems())
def test_L_is_attained(problem: Problem) -> None:
    x, v, h = _sup_direction(problem)
    assert abs(v.norm().item() - 1) < 1e-12
    ratio = (problem.grad(x + h * v) - problem.grad(x)).norm().item() / h
    assert problem.L * (1 - 1e-6) <= ratio <= problem.L * (1 + 1e-9)


def test_L_formulas_independently() -> None:
    cos = SeparableCosine(4, a=0.5, b=2.0, w=3.0)
    assert cos.L == 0.5 + 2.0 * 9.0
    assert not cos.is_convex and SeparableCosine(4, a=2.0, b=0.1, w=1.0).is_convex
    cr = CauchyRegression(30, 5, c=0.7, seed=3)
    assert math.isclose(cr.L, torch.linalg.matrix_norm(cr.A, 2).item() ** 2 / 30, rel_tol=1e-12)
    ms = MatrixSensing(4, 3, 2, 17, seed=5)
    M = ms.A.reshape(17, 12)
    assert math.isclose(ms.L, torch.linalg.matrix_norm(M, 2).item() ** 2 / 17, rel_tol=1e-12)
    assert KinkedQuadratic(3, L=2.5).L == 2.5


def test_cauchy_rho_second_derivative_range() -> None:
    """rho'' = c^2 (c^2 - r^2) / (c^2 + r^2)^2 spans [-1/8, 1]: max at 0, min at r = sqrt(3) c."""
    cr = CauchyRegression(3, 2, c=1.7)
    r = torch.linspace(-20, 20, 400_001, dtype=F64)
    h = 1e-6
    rho2 = (cr.drho(r + h) - cr.drho(r - h)) / (2 * h)
    assert abs(rho2.max().item() - 1.0) < 1e-8 and abs(rho2.min().item() + 1 / 8) < 1e-8
    r_min = r[rho2.argmin()].abs().item()
    assert abs(r_min - math.sqrt(3) * 1.7) < 1e-3
    # drho is the derivative of rho
    assert torch.allclose((cr.rho(r + h) - cr.rho(r - h)) / (2 * h), cr.drho(r), atol=1e-7)


# ----------------------------------------------------------------------------- f*, x0, constants


@SETTINGS
@given(problem=problems(), seed=seeds, scale=st.floats(min_value=0.01, max_value=100.0))
def test_minimiser_and_lower_bound(problem: Problem, seed: int, scale: float) -> None:
    xs = problem.minimiser
    assert problem.value(xs).item() == pytest.approx(problem.f_star, abs=1e-12)
    assert problem.grad(xs).abs().max().item() <= 1e-12
    x = _random_points(problem, seed, 32, scale)
    assert bool((problem.value(x) >= problem.f_star).all())


@SETTINGS
@given(problem=problems())
def test_constants(problem: Problem) -> None:
    c = problem.constants()
    for key in ("name", "L", "f_star", "delta0", "grad0_norm2", "d", "m", "n", "seed", "x0_scale"):
        assert key in c
    x0 = problem.x0
    assert x0.shape == problem.shape and x0.dtype == F64
    assert c["delta0"] == pytest.approx(problem.value(x0).item() - problem.f_star, rel=1e-14, abs=1e-300)
    assert c["grad0_norm2"] == pytest.approx(problem.grad(x0).norm().item(), rel=1e-14, abs=1e-300)
    assert c["d"] == x0.numel() and problem.is_matrix == (len(problem.shape) == 2)
    if problem.is_matrix:
        assert (c["m"], c["n"]) == problem.shape
    else:
        assert c["m"] is None and c["n"] is None
    x0.add_(1.0)  # callers get copies
    assert not torch.equal(problem.x0, x0)
    # x0 = minimiser + x0_scale * z is reproducible from the seed
    twin = type(problem)(**{k: v for k, v in _ctor_args(problem).items()})
    assert torch.equal(twin.x0, problem.x0) and twin.L == problem.L


def _ctor_args(p: Problem) -> dict:
    if isinstance(p, SeparableCosine):
        return dict(d=p.d, a=p.a, b=p.b, w=p.w, x0_scale=p.x0_scale, seed=p.seed, rotation=p.rotation)
    if isinstance(p, EntrywiseCosineMatrix):
        return dict(m=p.m, n=p.n, a=p.a, b=p.b, w=p.w, x0_scale=p.x0_scale, seed=p.seed, rotation=p.rotation)
    if isinstance(p, KinkedQuadratic):
        return dict(d=p.d, L=p.L, eps=p.eps, x0_scale=p.x0_scale, seed=p.seed)
    if isinstance(p, CauchyRegression):
        return dict(n_samples=p.n_samples, d=p.d, c=p.c, seed=p.seed, x0_scale=p.x0_scale)
    return dict(m=p.m, n=p.n, rank=p.rank, n_measurements=p.n_measurements, seed=p.seed, x0_scale=p.x0_scale)


def test_seed_changes_the_instance() -> None:
    assert not torch.equal(SeparableCosine(5, seed=1).x0, SeparableCosine(5, seed=2).x0)
    assert not torch.equal(CauchyRegression(8, 3, seed=1).A, CauchyRegression(8, 3, seed=2).A)
    # x0 is drawn before the rotation, so it does not depend on it
    assert torch.equal(SeparableCosine(5, seed=1).x0, SeparableCosine(5, seed=1, rotation=True).x0)
    assert torch.linalg.matrix_rank(MatrixSensing(5, 4, 2, 10, seed=3).X_star).item() == 2


# ----------------------------------------------------------------------------- batching


@SETTINGS
@given(problem=problems(), seed=seeds, b1=st.integers(1, 3), b2=st.integers(1, 3))
def test_batched_equals_per_row(problem: Problem, seed: int, b1: int, b2: int) -> None:
    x = _random_points(problem, seed, b1 * b2, 2.0).reshape(b1, b2, *problem.shape)
    v, g = problem.value(x), problem.grad(x)
    assert v.shape == (b1, b2) and g.shape == x.shape
    assert problem.value(x[0, 0]).ndim == 0
    for i in range(b1):
        for j in range(b2):
            vi, gi = problem.value(x[i, j]), problem.grad(x[i, j])
            assert torch.allclose(v[i, j], vi, rtol=1e-12, atol=1e-12)
            assert torch.allclose(g[i, j], gi, rtol=1e-12, atol=1e-12 * (1 + gi.abs().max().item()))


def test_float32_input_stays_float32() -> None:
    for p in (SeparableCosine(4, rotation=True), CauchyRegression(10, 4), MatrixSensing(3, 2, 1, 8)):
        x64 = p.x0
        x32 = x64.float()
        assert p.value(x32).dtype == torch.float32 and p.grad(x32).dtype == torch.float32
        assert torch.allclose(p.value(x32).double(), p.value(x64), rtol=1e-5)


def test_bad_inputs() -> None:
    p = SeparableCosine(3)
    with pytest.raises(ValueError, match="shape"):
        p.value(torch.zeros(4, dtype=F64))
    with pytest.raises(ValueError, match="floating"):
        p.value(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="torch.Tensor"):
        p.grad([0.0, 0.0, 0.0])


@pytest.mark.parametrize(
    "ctor, match",
    [
        (lambda: SeparableCosine(0), "d must be"),
        (lambda: SeparableCosine(3, a=-1.0), "a must be"),
        (lambda: SeparableCosine(3, w=0.0), "w must be"),
        (lambda: SeparableCosine(3, a=0.0, b=0.0), "a \\+ b w\\^2"),
        (lambda: SeparableCosine(3, seed=-1), "seed"),
        (lambda: SeparableCosine(3, rotation=1), "rotation"),
        (lambda: SeparableCosine(3, x0_scale=float("nan")), "x0_scale"),
        (lambda: EntrywiseCosineMatrix(2, 0), "n must be"),
        (lambda: KinkedQuadratic(3, eps=1.0), "eps must be in \\(0, 1\\)"),
        (lambda: KinkedQuadratic(3, eps=0.0), "eps"),
        (lambda: KinkedQuadratic(3, L=0.0), "L must be"),
        (lambda: KinkedQuadratic(3, L=torch.tensor(1.0)), "L must be a real Python number"),
        (lambda: CauchyRegression(0, 3), "n_samples"),
        (lambda: CauchyRegression(5, 3, c=0.0), "c must be"),
        (lambda: MatrixSensing(3, 2, 3, 10), "rank must be in"),
        (lambda: MatrixSensing(3, 2, 1, 0), "n_measurements"),
        (lambda: KinkedQuadratic(3).stall_gradient(0.0), "tau"),
    ],
)
def test_constructor_validation(ctor, match) -> None:
    with pytest.raises(ValueError, match=match):
        ctor()


# ----------------------------------------------------------------------------- kinked quadratic


@SETTINGS
@given(
    d=st.integers(1, 6),
    L=st.floats(min_value=0.1, max_value=10.0),
    eps=st.floats(min_value=0.01, max_value=0.99),
    tau=st.floats(min_value=1e-4, max_value=1.0),
)
def test_kinked_central_difference_vanishes_at_stall_point(d: int, L: float, eps: float, tau: float) -> None:
    p = KinkedQuadratic(d, L, eps)
    t = p.stall_point(tau)
    assert t == pytest.approx(-tau * (1 - math.sqrt(eps)) / (1 + math.sqrt(eps)), rel=1e-15)
    x = torch.full((d,), t, dtype=F64)
    E = torch.eye(d, dtype=F64)
    cd = (p.value(x + tau * E) - p.value(x - tau * E)) / (2 * tau)
    assert cd.abs().max().item() <= 1e-9 * p.stall_gradient(tau)
    # |phi'(t_tau)| = eps L |t_tau| = c(eps) L tau
    assert torch.allclose(p.grad(x).abs(), torch.full((d,), p.stall_gradient(tau), dtype=F64), rtol=1e-13)
    assert p.stall_gradient(tau) == pytest.approx(
        eps * (1 - math.sqrt(eps)) / (1 + math.sqrt(eps)) * L * tau, rel=1e-13
    )
    # it is an attractor of sign(estimate): the estimate is < 0 below t_tau and > 0 above
    for shift, sign in ((-0.1 * tau, -1.0), (0.1 * tau, 1.0)):
        xs = x + shift
        est = (p.value(xs + tau * E) - p.value(xs - tau * E)) / (2 * tau)
        assert bool((torch.sign(est) == sign).all())
    # the bias at the minimiser
    zero = torch.zeros(d, dtype=F64)
    cd0 = (p.value(zero + tau * E) - p.value(zero - tau * E)) / (2 * tau)
    assert torch.allclose(cd0, torch.full((d,), p.bias_at_minimiser(tau), dtype=F64), rtol=1e-12)
    # c(eps) is largest at EPS_WORST, where it is ((sqrt 5 - 1)/2)^5
    worst = KinkedQuadratic(1, L, KinkedQuadratic.EPS_WORST)
    assert worst.stall_coefficient >= p.stall_coefficient - 1e-15
    assert worst.stall_coefficient == pytest.approx(((math.sqrt(5) - 1) / 2) ** 5, rel=1e-13)


def test_kinked_sign_descent_stalls_at_predicted_gradient() -> None:
    """Sign descent on the exact central difference settles within gamma of t_tau in every coordinate."""
    d, L, tau, gamma = 5, 3.0, 0.2, 1e-3
    p = KinkedQuadratic(d, L, x0_scale=1.0, seed=7)
    x = p.x0
    E = torch.eye(d, dtype=F64)
    for _ in range(6000):
        est = (p.value(x + tau * E) - p.value(x - tau * E)) / (2 * tau)
        x = x - gamma * torch.sign(est)
    t = p.stall_point(tau)
    assert (x - t).abs().max().item() <= gamma * (1 + 1e-9)
    stall = p.stall_gradient(tau)
    assert (p.grad(x).abs() - stall).abs().max().item() <= L * gamma
    assert p.grad(x).abs().sum().item() == pytest.approx(d * stall, abs=d * L * gamma)


def test_kinked_tensor_tau() -> None:
    p = KinkedQuadratic(2, 2.0, 0.25)
    tau = torch.tensor([0.1, 0.2], dtype=F64)
    assert torch.allclose(p.stall_gradient(tau), p.stall_coefficient * 2.0 * tau)


# ----------------------------------------------------------------------------- nuclear norm


@SETTINGS
@given(seed=seeds, b=st.integers(1, 3), m=st.integers(1, 5), n=st.integers(1, 5))
def test_nuclear_norm(seed: int, b: int, m: int, n: int) -> None:
    G = torch.randn(b, 2, m, n, generator=torch.Generator().manual_seed(seed), dtype=F64)
    nn = nuclear_norm(G)
    assert nn.shape == (b, 2)
    assert torch.allclose(nn, torch.linalg.svdvals(G).sum(-1), rtol=1e-12)
    assert nuclear_norm(G[0, 0]).ndim == 0


def test_nuclear_norm_rejects_vectors() -> None:
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        nuclear_norm(torch.zeros(3))
