"""FW / GD problems of issue 14 (synthetic/fw_problems.py): gradients, batching, exact L and mu,
the constrained optima f*_Q with their FW-gap certificates, and the bundled data sets.

Tolerances (float64): gradients vs autograd ``1e-12 (1 + ||g||_inf)``; vs central differences
(h = 1e-6) ``1e-7 (1 + |f|)``; batched vs per-run ``1e-13`` relative; L vs the autograd Hessian's
spectral norm ``L (1 + 1e-10)`` (upper bound) and ``L (1 - 1e-10)`` at ``x = 0`` (attained);
certificates: FW gap ``<= 1e-10 max(1, R ||grad||_inf)`` at the returned point, and
``f >= f*_Q - 1e-12 max(1, |f*_Q|)`` at random feasible points.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zotheory.constraints import make_set
from zotheory.synthetic import fw_problems
from zotheory.synthetic.fw_problems import (
    Logistic,
    Quadratic,
    SinePL,
    SquaredHinge,
    load_dataset,
    sine_pl_mu,
)
from zotheory.synthetic.registry import make_problem

F64 = torch.float64
KINDS = ("simplex", "l1", "l2")


def _problems():
    return [
        Quadratic(6, mu=1.0, L=50.0, seed=3),
        Quadratic(5, mu=2.0, L=9.0, spectrum="linear", seed=1, rotation=False),
        Logistic("breast_cancer"),
        Logistic("digits", lam=1e-2),
        SquaredHinge("breast_cancer"),
        SquaredHinge("digits", lam=1e-2),
        SinePL(5, b=3.0, seed=2),
        SinePL(3, b=0.5, rotation=False),
    ]


PROBLEMS = _problems()
IDS = [f"{p.name}-{i}" for i, p in enumerate(PROBLEMS)]
CONVEX = [p for p in PROBLEMS if hasattr(p, "f_star_on")]
CONVEX_IDS = [f"{p.name}-{i}" for i, p in enumerate(CONVEX)]


def _points(p, k=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    scale = 0.5 if p.name in ("logistic", "squared_hinge") else 2.0
    return scale * torch.randn(k, p.d, generator=g, dtype=F64)


def _autograd_hessian(p, x):
    """The Hessian as the Jacobian of the closed-form gradient (smooth where ``value``'s stable
    log-sum form has ``|m|`` kinks at ``m = 0`` that autograd's second derivative gets wrong)."""
    H = torch.autograd.functional.jacobian(p.grad, x)
    assert torch.allclose(H, H.T, rtol=0, atol=1e-12 * (1 + float(H.abs().max())))
    return H


# ----------------------------------------------------------------------------- data


def test_data_sets_are_deterministic_standardised_and_binary():
    for name, shape in (("breast_cancer", (569, 30)), ("digits", (1797, 61))):
        A, y = load_dataset(name)
        A2, y2 = load_dataset(name)
        assert A.shape == shape and y.shape == (shape[0],) and A.dtype == F64
        assert torch.equal(A, A2) and torch.equal(y, y2)
        assert set(y.tolist()) == {-1.0, 1.0}
        assert torch.allclose(A.mean(0), torch.zeros(shape[1], dtype=F64), atol=1e-12)
        assert torch.allclose(A.std(0, unbiased=False), torch.ones(shape[1], dtype=F64), atol=1e-12)
        A.zero_()  # a copy: the cached data are untouched
        assert not torch.equal(load_dataset(name)[0], A)
    # the labels follow the stated rules
    from sklearn import datasets
    assert (load_dataset("digits")[1] == torch.from_numpy(np.where(datasets.load_digits().target % 2 == 0, 1.0, -1.0))).all()
    with pytest.raises(ValueError, match="dataset"):
        load_dataset("mnist")


def test_registry_builds_the_new_families():
    p = make_problem({"family": "logistic", "dataset": "digits", "lam": 0.01})
    assert isinstance(p, Logistic) and p.d == 61
    c = p.constants()
    assert c["lam"] == 0.01 and c["dataset"] == "digits" and c["L"] == p.L
    assert isinstance(make_problem({"family": "squared_hinge"}), SquaredHinge)
    assert make_problem({"family": "quadratic", "d": 200}).constants()["mu"] == 1.0
    assert isinstance(make_problem({"family": "sine_pl", "d": 4}), SinePL)


# ----------------------------------------------------------------------------- value / grad


@pytest.mark.parametrize("p", PROBLEMS, ids=IDS)
def test_gradient_matches_autograd_and_finite_differences(p):
    X = _points(p)
    for x in X:
        xa = x.clone().requires_grad_(True)
        (ga,) = torch.autograd.grad(p.value(xa), xa)
        g = p.grad(x)
        assert (g - ga).abs().max() <= 1e-12 * (1 + g.abs().max())
        v = torch.randn(p.d, generator=torch.Generator().manual_seed(7), dtype=F64)
        v /= v.norm()
        h = 1e-6
        fd = (p.value(x + h * v) - p.value(x - h * v)) / (2 * h)
        assert abs(float(fd - g @ v)) <= 1e-7 * (1 + abs(float(p.value(x))))


@pytest.mark.parametrize("p", PROBLEMS, ids=IDS)
def test_batched_equals_per_run(p):
    X = _points(p, k=6).reshape(2, 3, p.d)
    V, G = p.value(X), p.grad(X)
    assert V.shape == (2, 3) and G.shape == X.shape and V.dtype == F64
    for i in range(2):
        for j in range(3):
            v, g = p.value(X[i, j]), p.grad(X[i, j])
            assert abs(float(V[i, j] - v)) <= 1e-13 * (1 + abs(float(v)))
            assert (G[i, j] - g).abs().max() <= 1e-13 * (1 + g.abs().max())


# ----------------------------------------------------------------------------- exact constants


@pytest.mark.parametrize("p", PROBLEMS, ids=IDS)
def test_L_bounds_the_hessian_and_is_attained_at_zero(p):
    for x in _points(p, k=4, seed=1):
        H = _autograd_hessian(p, x)
        assert torch.linalg.matrix_norm(H, ord=2) <= p.L * (1 + 1e-10)
    H0 = _autograd_hessian(p, torch.zeros(p.d, dtype=F64) if p.name != "quadratic" else p.minimiser)
    assert torch.linalg.matrix_norm(H0, ord=2) >= p.L * (1 - 1e-10)


def test_logistic_and_hinge_L_formulas():
    A, _ = load_dataset("breast_cancer")
    lmax = float(torch.linalg.eigvalsh(A.T @ A)[-1])
    n = A.shape[0]
    assert Logistic("breast_cancer", lam=0.1).L == pytest.approx(lmax / (4 * n) + 0.1, rel=1e-13)
    assert SquaredHinge("breast_cancer", lam=0.1).L == pytest.approx(2 * lmax / n + 0.1, rel=1e-13)


def test_quadratic_spectrum_is_exact():
    for spectrum in ("log", "linear"):
        q = Quadratic(200, mu=1.0, L=1000.0, spectrum=spectrum, seed=5)
        ev = torch.linalg.eigvalsh(q.A)
        assert ev[-1] == pytest.approx(1000.0, rel=1e-12) and ev[0] == pytest.approx(1.0, rel=1e-10)
        assert torch.allclose(ev, torch.sort(q.eigenvalues).values, rtol=1e-10)
        assert q.L == 1000.0 and q.mu == 1.0 and q.f_star == 0.0
        assert float(q.value(q.minimiser)) == 0.0 and float(q.grad(q.minimiser).abs().max()) == 0.0
        assert q.c.norm().item() == pytest.approx(2.0, rel=1e-14)
    assert torch.allclose(Quadratic(5, spectrum="log").eigenvalues,
                          torch.logspace(0, 3, 5, dtype=F64), rtol=1e-14)


def test_sine_pl_constant_is_exact_and_pl_holds():
    b = 3.0
    mu = sine_pl_mu(b)
    t = np.arange(1e-5, 60.0, 1e-5)
    ratio = (2 * t + b * np.sin(2 * t)) ** 2 / (2 * (t * t + b * np.sin(t) ** 2))
    assert ratio.min() >= mu * (1 - 1e-12)
    assert ratio.min() <= mu * (1 + 1e-8)  # attained (tight)
    assert mu > 1 / 32  # Karimi et al.'s certified lower bound for b = 3
    p = SinePL(6, b=b, seed=4)
    X = 3.0 * torch.randn(500, 6, generator=torch.Generator().manual_seed(0), dtype=F64)
    g2 = (p.grad(X) ** 2).sum(-1)
    assert (g2 >= 2 * mu * (p.value(X) - p.f_star) * (1 - 1e-12)).all()
    assert not p.is_convex and p.L == 8.0


# ----------------------------------------------------------------------------- f* certificates


def _random_feasible(Q, d, x_star, k=2000, seed=0):
    g = torch.Generator().manual_seed(seed)
    far = Q.project(3.0 * torch.randn(k // 2, d, generator=g, dtype=F64))
    near = Q.project(x_star + 1e-3 * torch.randn(k // 2, d, generator=g, dtype=F64))
    vertices = torch.stack([Q.lmo(torch.randn(d, generator=g, dtype=F64)) for _ in range(20)])
    return torch.cat([far, near, vertices])


@pytest.mark.parametrize("p", CONVEX, ids=CONVEX_IDS)
@pytest.mark.parametrize("kind", KINDS)
def test_constrained_optimum_is_certified(p, kind):
    R = 1.0
    Q = make_set(kind, R)
    res = p.f_star_on(kind, R)
    x = res.x
    assert bool(Q.contains(x))
    g = p.grad(x)
    gap = float(Q.fw_gap(x, g))
    assert gap == res.fw_gap
    assert -1e-12 <= gap <= 1e-10 * max(1.0, R * float(g.abs().max()))
    assert res.f_star == float(p.value(x)) and res.lower_bound == res.f_star - res.fw_gap
    Y = _random_feasible(Q, p.d, x)
    assert bool(Q.contains(Y).all())
    assert float(p.value(Y).min()) >= res.f_star - 1e-12 * max(1.0, abs(res.f_star))


def test_constrained_optimum_is_cached_and_returns_copies():
    p = Logistic("digits", lam=1e-2)
    a = p.f_star_on("l2", 0.5)
    hits = fw_problems._constrained_optimum_cached.cache_info().hits
    a.x.zero_()
    b = Logistic("digits", lam=1e-2).f_star_on("l2", 0.5)  # a new instance with the same parameters
    assert fw_problems._constrained_optimum_cached.cache_info().hits == hits + 1
    assert b.f_star == a.f_star and b.x.abs().max() > 0
    assert b.radius == 0.5 and b.set_kind == "l2" and float(b.x.norm()) <= 0.5 + 1e-15


def test_unconstrained_optimum_of_regularised_losses():
    for p in (Logistic("breast_cancer"), SquaredHinge("digits", lam=1e-2)):
        x = p.minimiser
        g = p.grad(x)
        assert float(g @ g) / (2 * p.lam) <= 1e-14 * max(1.0, p.f_star)
        assert float(p.value(x)) == p.f_star
        Y = x + 0.1 * torch.randn(200, p.d, generator=torch.Generator().manual_seed(1), dtype=F64)
        assert float(p.value(Y).min()) >= p.f_star
        assert p.delta0 == pytest.approx(float(p.value(p.x0)) - p.f_star)


def test_unregularised_loss_has_no_unconstrained_f_star_but_a_constrained_one():
    p = Logistic("breast_cancer", lam=0.0)
    assert math.isnan(p.f_star) and math.isnan(p.delta0)
    res = p.f_star_on("l2", 1.0)
    assert res.fw_gap <= 1e-10 and bool(make_set("l2", 1.0).contains(res.x))


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(ValueError, match="L must be >= mu"):
        Quadratic(3, mu=2.0, L=1.0)
    with pytest.raises(ValueError, match="b must be in"):
        SinePL(3, b=5.0)
    with pytest.raises(ValueError, match="set_kind"):
        Quadratic(3).f_star_on("box", 1.0)
    with pytest.raises(ValueError, match="lam"):
        Logistic(lam=-1.0)
