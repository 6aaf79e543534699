"""Stochastic oracle: exact sigma (Assumption 2), |delta| <= Delta (Assumption 3), one xi per iteration.

Statistical checks use fixed seeds and 6-standard-error tolerances from the known
variances: ``Var ||xi||^2 = 2 sum_i s_i^4`` (Gaussian), ``Var delta^2 = 4 Delta^4 / 45``
and ``Var delta = Delta^2 / 3`` for ``delta ~ U[-Delta, Delta]``.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zotheory.synthetic.noise import DELTA_MODES, SIGMA_PROFILES, StochasticOracle
from zotheory.synthetic.problems import CauchyRegression, MatrixSensing, Problem, SeparableCosine

F64 = torch.float64
SETTINGS = settings(max_examples=15, deadline=None)
seeds = st.integers(min_value=0, max_value=2**16)


@st.composite
def problems(draw) -> Problem:
    seed = draw(seeds)
    kind = draw(st.sampled_from(["cosine", "cauchy", "sensing"]))
    if kind == "cosine":
        return SeparableCosine(draw(st.integers(1, 8)), seed=seed, rotation=draw(st.booleans()))
    if kind == "cauchy":
        return CauchyRegression(draw(st.integers(1, 12)), draw(st.integers(1, 6)), seed=seed)
    m, n = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return MatrixSensing(m, n, 1, draw(st.integers(1, 12)), seed=seed)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _points(problem: Problem, batch: int, seed: int) -> torch.Tensor:
    return problem.x0 + torch.randn(batch, *problem.shape, generator=_gen(seed), dtype=F64)


def _basis(problem: Problem) -> torch.Tensor:
    return torch.eye(problem.d, dtype=F64).reshape(problem.d, *problem.shape)


# ----------------------------------------------------------------------------- gradient noise


@pytest.mark.parametrize("profile", SIGMA_PROFILES)
def test_profile_sums_to_sigma_squared(profile: str) -> None:
    for problem in (SeparableCosine(7), MatrixSensing(3, 4, 2, 5)):
        o = StochasticOracle(problem, sigma=1.7, sigma_profile=profile)
        assert o.noise_std.shape == problem.shape
        assert (o.noise_std**2).sum().item() == pytest.approx(1.7**2, rel=1e-14)
    s = StochasticOracle(SeparableCosine(4), sigma=2.0, sigma_profile="uniform").noise_std
    assert torch.allclose(s, torch.full((4,), 2.0 / math.sqrt(4), dtype=F64))


@SETTINGS
@given(problem=problems(), sigma=st.floats(min_value=0.01, max_value=10.0),
       profile=st.sampled_from(SIGMA_PROFILES), seed=seeds)
def test_gradient_noise_has_exact_variance(problem: Problem, sigma: float, profile: str, seed: int) -> None:
    B = 4000
    o = StochasticOracle(problem, sigma=sigma, sigma_profile=profile)
    x = _points(problem, B, seed)
    it = o.iteration(x, _gen(seed + 1))
    noise = it.grad(x) - problem.grad(x)  # grad f(x, xi) - grad f(x)
    assert torch.allclose(noise, it.xi, rtol=1e-12, atol=1e-12 * (1 + problem.grad(x).abs().max().item()))
    sq = it.xi.reshape(B, -1).pow(2).sum(-1)
    s = o.noise_std.reshape(-1)
    se = math.sqrt(2 * (s**4).sum().item() / B)
    assert abs(sq.mean().item() - sigma**2) <= 6 * se
    # mean zero, coordinate-wise
    mean = it.xi.reshape(B, -1).mean(0)
    assert bool((mean.abs() <= 6 * s / math.sqrt(B) + 1e-300).all())
    # E f(x, xi) = f(x): the linear term has mean zero
    lin = it.stochastic_value(x) - problem.value(x)
    assert torch.allclose(lin, (it.xi * x).reshape(B, -1).sum(-1), rtol=1e-9, atol=1e-9)


@SETTINGS
@given(problem=problems(), seed=seeds, tau=st.floats(min_value=1e-3, max_value=1.0),
       mode=st.sampled_from(["none", "quantize", "adversarial"]))
def test_one_xi_per_iteration(problem: Problem, seed: int, tau: float, mode: str) -> None:
    """Both calls of a central difference see the same xi: its linear part contributes exactly xi_i."""
    Delta = 0.0 if mode == "none" else 1e-3
    o = StochasticOracle(problem, sigma=0.5, Delta=Delta, delta_mode=mode)
    gen = _gen(seed)
    x = _points(problem, 1, seed)[0]
    it = o.iteration(x, gen)
    state = gen.get_state()
    E = _basis(problem)
    cd_noisy = (it.stochastic_value(x + tau * E) - it.stochastic_value(x - tau * E)) / (2 * tau)
    cd_clean = (problem.value(x + tau * E) - problem.value(x - tau * E)) / (2 * tau)
    scale = 1e-12 * (1 + problem.value(x).abs().item() + (it.xi * x).abs().sum().item()) / tau
    assert torch.allclose(cd_noisy - cd_clean, it.xi.reshape(-1), rtol=0, atol=scale)
    g1 = it.grad(x) - problem.grad(x)
    g2 = it.grad(x + 1.0) - problem.grad(x + 1.0)
    assert torch.allclose(g1, g2, atol=1e-12 * (1 + problem.grad(x + 1.0).abs().max().item()))
    it.value(x + tau * E)
    it.value(x)
    assert torch.equal(gen.get_state(), state)  # calls draw nothing in these modes
    assert it.calls == 2


def test_iteration_with_uses_given_xi_and_common_random_numbers() -> None:
    p = SeparableCosine(5, rotation=True)
    o = StochasticOracle(p, sigma=1.0)
    xi = torch.arange(5, dtype=F64)
    x = p.x0
    it = o.iteration_with(xi)
    assert it.value(x).item() == pytest.approx(p.value(x).item() + (xi * x).sum().item(), rel=1e-14)
    assert torch.allclose(it.grad(x), p.grad(x) + xi)
    # same generator seed: xi scales with sigma (common random numbers); reproducible
    xa = StochasticOracle(p, sigma=1.0).iteration(x, _gen(3)).xi
    xb = StochasticOracle(p, sigma=2.5).iteration(x, _gen(3)).xi
    assert torch.allclose(xb, 2.5 * xa, rtol=1e-14)
    assert torch.equal(xa, StochasticOracle(p, sigma=1.0).iteration(x, _gen(3)).xi)
    # sigma = 0 and no oracle noise: no generator needed, the oracle is f itself
    it0 = StochasticOracle(p).iteration(x)
    assert it0.xi is None and torch.equal(it0.value(x), p.value(x)) and torch.equal(it0.grad(x), p.grad(x))


def test_batched_iteration_shapes() -> None:
    p = MatrixSensing(3, 2, 1, 6)
    o = StochasticOracle(p, sigma=0.3, Delta=0.1, delta_mode="uniform")
    x = p.x0.expand(4, 5, 3, 2).clone()
    it = o.iteration(x, _gen(0))
    assert it.xi.shape == x.shape and it.value(x).shape == (4, 5) and it.grad(x).shape == x.shape


# ----------------------------------------------------------------------------- oracle noise


@SETTINGS
@given(problem=problems(), mode=st.sampled_from(DELTA_MODES[1:]), seed=seeds,
       Delta=st.floats(min_value=1e-6, max_value=10.0), sigma=st.sampled_from([0.0, 1.0]))
def test_delta_is_bounded(problem: Problem, mode: str, seed: int, Delta: float, sigma: float) -> None:
    o = StochasticOracle(problem, sigma=sigma, Delta=Delta, delta_mode=mode)
    gen = _gen(seed)
    x_t = _points(problem, 64, seed)
    it = o.iteration(x_t, gen)
    for x in (x_t, x_t + 0.01 * torch.randn(x_t.shape, generator=gen, dtype=F64), x_t + 3.0):
        clean = it.stochastic_value(x)
        delta = it.value(x) - clean
        ulp = 8 * torch.finfo(F64).eps * (clean.abs() + Delta)  # rounding of the grid / the subtraction
        assert bool((delta.abs() <= Delta + ulp).all()), (delta.abs().max().item(), Delta)


def test_uniform_delta_moments() -> None:
    N, Delta = 20000, 0.3
    p = SeparableCosine(3)
    o = StochasticOracle(p, Delta=Delta, delta_mode="uniform")
    x = p.x0.expand(N, 3)
    it = o.iteration(x, _gen(11))
    delta = it.value(x) - it.stochastic_value(x)
    assert delta.abs().max().item() <= Delta
    ms = delta.pow(2).mean().item()
    assert abs(ms - Delta**2 / 3) <= 6 * math.sqrt(4 * Delta**4 / 45 / N)
    assert abs(delta.mean().item()) <= 6 * Delta / math.sqrt(3 * N)
    # independent across calls of one iteration, reproducible from the generator
    delta2 = it.value(x) - it.stochastic_value(x)
    assert not torch.equal(delta, delta2)
    assert abs(torch.corrcoef(torch.stack([delta, delta2]))[0, 1].item()) <= 6 / math.sqrt(N)
    again = o.iteration(x, _gen(11))
    assert torch.equal(again.value(x), it.stochastic_value(x) + delta)


def test_quantize_is_on_grid_and_deterministic() -> None:
    p = CauchyRegression(10, 4, seed=2)
    Delta = 0.05
    o = StochasticOracle(p, sigma=0.2, Delta=Delta, delta_mode="quantize")
    x = _points(p, 500, 1)
    it = o.iteration(x, _gen(2))
    v = it.value(x)
    k = v / (2 * Delta)
    assert torch.allclose(k, k.round(), atol=1e-9)
    assert torch.equal(v, it.value(x))
    delta = v - it.stochastic_value(x)
    assert delta.abs().max().item() <= Delta * (1 + 1e-12)
    # values spread over many cells: E delta^2 ~ Delta^2 / 3 (a loose sanity check, not a contract)
    assert 0.2 * Delta**2 <= delta.pow(2).mean().item() <= 0.5 * Delta**2


@SETTINGS
@given(problem=problems(), seed=seeds, tau=st.floats(min_value=1e-3, max_value=1.0),
       Delta=st.floats(min_value=1e-4, max_value=1.0), sigma=st.sampled_from([0.0, 0.7]))
def test_adversarial_shifts_central_difference(problem: Problem, seed: int, tau: float, Delta: float,
                                               sigma: float) -> None:
    o = StochasticOracle(problem, sigma=sigma, Delta=Delta, delta_mode="adversarial")
    x = _points(problem, 1, seed)[0]
    it = o.iteration(x, _gen(seed))
    E = _basis(problem)
    plus, minus = x + tau * E, x - tau * E
    shift = (it.value(plus) - it.value(minus)) / (2 * tau) - (
        it.stochastic_value(plus) - it.stochastic_value(minus)
    ) / (2 * tau)
    expected = -(Delta / tau) * torch.sign(problem.grad(x).reshape(-1))
    tol = 8 * torch.finfo(F64).eps * (it.stochastic_value(plus).abs().max().item() + Delta) / tau
    assert torch.allclose(shift, expected, rtol=0, atol=tol)
    assert it.value(x).item() == it.stochastic_value(x).item()  # delta(x_t) = 0
    # along a direction z: -(Delta/tau) sign(<grad f(x_t), z>)
    z = torch.randn(problem.shape, generator=_gen(seed + 5), dtype=F64)
    sz = (it.value(x + tau * z) - it.value(x - tau * z)) - (
        it.stochastic_value(x + tau * z) - it.stochastic_value(x - tau * z)
    )
    assert sz.item() / (2 * tau) == pytest.approx(
        -(Delta / tau) * torch.sign((problem.grad(x) * z).sum()).item(), abs=tol
    )


def test_adversarial_snapshots_the_iterate() -> None:
    p = SeparableCosine(4)
    o = StochasticOracle(p, Delta=0.1, delta_mode="adversarial")
    x = p.x0
    it = o.iteration(x)
    g = p.grad(x)
    x.add_(1.0)  # the estimator perturbs x in place; the adversary's reference must not move
    assert torch.equal(it.x_t, p.x0) and torch.equal(it.grad_t, g)
    i = int(g.abs().argmax())
    e = torch.zeros(4, dtype=F64)
    e[i] = 1.0
    delta = (it.value(p.x0 + 0.1 * e) - it.stochastic_value(p.x0 + 0.1 * e)).item()
    assert delta == pytest.approx(-0.1 * torch.sign(g[i]).item(), rel=1e-12)


# ----------------------------------------------------------------------------- constants and validation


def test_constants() -> None:
    o = StochasticOracle(SeparableCosine(3), sigma=0.5, Delta=0.01, delta_mode="quantize", sigma_profile="harmonic")
    assert o.constants() == {"sigma": 0.5, "Delta": 0.01, "delta_mode": "quantize", "sigma_profile": "harmonic",
                            "feedback": "two_point"}
    assert o.L == o.problem.L


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(sigma=-1.0), "sigma must be"),
        (dict(sigma=float("inf")), "sigma must be"),
        (dict(Delta=-0.1, delta_mode="uniform"), "Delta must be"),
        (dict(delta_mode="gaussian"), "delta_mode must be one of"),
        (dict(sigma_profile="linear"), "sigma_profile must be one of"),
        (dict(Delta=0.1), "Delta must be 0 when delta_mode is 'none'"),
        (dict(sigma=torch.tensor(1.0)), "sigma must be a number or a 1-D float tensor"),
        (dict(Delta=torch.tensor([0.1, -0.1]), delta_mode="uniform"), "Delta must be a finite number >= 0"),
        (dict(generator_device="not-a-device"), "generator_device"),
    ],
)
def test_oracle_validation(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        StochasticOracle(SeparableCosine(3), **kwargs)


def test_iteration_validation() -> None:
    p = SeparableCosine(3)
    with pytest.raises(ValueError, match="problem must be"):
        StochasticOracle("f")
    with pytest.raises(ValueError, match="generator must be a torch.Generator"):
        StochasticOracle(p, sigma=1.0).iteration(p.x0)
    with pytest.raises(ValueError, match="generator must be a torch.Generator"):
        StochasticOracle(p, Delta=0.1, delta_mode="uniform").iteration_with(None)
    with pytest.raises(ValueError, match="x_t must be given"):
        StochasticOracle(p, Delta=0.1, delta_mode="adversarial").iteration_with(None)
    with pytest.raises(ValueError, match="generator_device"):
        StochasticOracle(p, sigma=1.0, generator_device="meta").iteration(p.x0, _gen(0))
    with pytest.raises(ValueError, match="shape"):
        StochasticOracle(p, sigma=1.0).iteration(torch.zeros(4, dtype=F64), _gen(0))


@pytest.mark.parametrize("mode", ["uniform", "quantize", "adversarial"])
def test_per_run_constants_equal_separate_oracles(mode):
    """sigma and Delta given per batched run act row by row like scalar oracles."""
    p = SeparableCosine(d=5, a=1.0, b=0.5, w=2.0, x0_scale=1.0, seed=3)
    sigmas = torch.tensor([0.0, 0.5, 2.0], dtype=torch.float64)
    deltas = torch.tensor([0.0, 1e-3, 1e-1], dtype=torch.float64)
    batched = StochasticOracle(p, sigma=sigmas, Delta=deltas, delta_mode=mode)
    x_t = p.x0.expand(3, 5).clone()
    x = x_t + 0.01 * torch.arange(15, dtype=torch.float64).reshape(3, 5)
    z = torch.randn(3, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    xi = batched.noise_std * z
    for b in range(3):
        single = StochasticOracle(p, sigma=float(sigmas[b]), Delta=float(deltas[b]),
                                  delta_mode=mode if deltas[b] > 0 else "none")
        assert torch.allclose(single.noise_std * z[b], xi[b], rtol=0, atol=1e-15)
    g_b = torch.Generator().manual_seed(1)
    it = batched.iteration_with(xi, x_t=x_t, generator=g_b)
    v = it.value(x)
    for b in range(3):
        single = StochasticOracle(p, sigma=float(sigmas[b]), Delta=float(deltas[b]),
                                  delta_mode=mode if deltas[b] > 0 else "none")
        it1 = single.iteration_with(xi[b], x_t=x_t[b], generator=torch.Generator().manual_seed(1))
        exact = it1.stochastic_value(x[b])
        assert abs(float(v[b]) - float(exact)) <= float(deltas[b]) * (1 + 1e-12) + 1e-12
        if mode != "uniform":  # deterministic modes agree exactly row by row
            assert torch.allclose(v[b], it1.value(x[b]), rtol=0, atol=1e-12)
