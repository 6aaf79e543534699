"""JAGUAR-d / JAGUAR-s (arXiv 2409.10442), the full difference, l2 smoothing, one- and two-point
feedback: kernel == literal reference, and the properties the paper's lemmas rest on.

* kernel == :mod:`zotheory.reference.jaguar_fw` step by step, bitwise (float64, same stream);
* ``E_i rho = full difference``: exact enumeration over all ``d`` choices of ``i`` (one batched
  run per ``i``), for arbitrary ``h_old`` and coordinate values;
* JAGUAR-d after one sweep over every coordinate holds exactly the full difference;
* l2 smoothing is unbiased for linear ``f`` (exactly over the symmetric set ``+-e_j``, and by
  Monte Carlo over the sphere), and is ``sphere_two_point`` bit for bit;
* OPF's coordinate-difference variance is ``(sigma_f(x+)^2 + sigma_f(x-)^2) / (4 tau^2)``, TPF's
  ``s_i^2`` (6-standard-error chi-square tolerances; the noise term is exactly Gaussian);
* adversarial noise shifts the full difference by exactly ``-(Delta / tau) sign(grad f)``;
* batched == per-run; ``inplace`` does not change values; one-line ValueErrors.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zotheory import constraints, estimators
from zotheory.algorithms import jaguar_fw
from zotheory.estimates import CoordinateEstimate
from zotheory.reference import jaguar_fw as ref
from zotheory.synthetic.noise import StochasticOracle
from zotheory.synthetic.problems import SeparableCosine

from test_reference import IterationOracle as Iteration, make_f  # noqa: E402

F64 = torch.float64


def _start(kind: str, d: int, seed: int, batch: tuple[int, ...] = ()) -> torch.Tensor:
    r = torch.randn(*batch, d, generator=torch.Generator().manual_seed(seed), dtype=F64)
    if kind == "simplex":
        return torch.softmax(r, -1)
    return 0.5 * r / r.abs().sum(-1, keepdim=True)


DYADIC_TAU = st.sampled_from([2.0**-6, 2.0**-10])


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), d=st.integers(1, 9), variant=st.sampled_from(["d", "s"]),
       kind=st.sampled_from(["simplex", "l1"]), start=st.sampled_from(["zeros", "full"]),
       schedule=st.booleans(), tau=DYADIC_TAU, eta_c=st.floats(0.01, 1.0))
def test_kernel_equals_reference(seed, d, variant, kind, start, schedule, tau, eta_c):
    T = 30
    f = make_f(d, seed + 1)
    x0 = _start(kind, d, seed)
    if schedule:
        gamma = (lambda k: constraints.fw_step_deterministic(k, d)) if variant == "d" else \
            (lambda k: constraints.fw_step_stochastic(k, d))
        eta = lambda k: constraints.momentum_stochastic(k, d)  # noqa: E731
    else:
        gamma, eta = (lambda k: 0.1), (lambda k: eta_c)
    xs, hs, gs = ref.run(f, x0, T, variant=variant, gamma=gamma, tau=tau, eta=eta if variant == "s" else None,
                         kind=kind, start=start, generator=torch.Generator().manual_seed(seed))
    x = x0.clone()
    state = jaguar_fw.init(x, variant=variant, start=start, oracle=Iteration(f, 0), tau=tau)
    assert state.oracle_calls == (2 * d if start == "full" else 0)
    Q = constraints.make_set(kind, 1.0)
    gen = torch.Generator().manual_seed(seed)
    for k in range(T):
        state = jaguar_fw.step(x, Iteration(f, k), state, gamma=gamma(k), tau=tau, Q=Q,
                               eta=eta(k) if variant == "s" else None, generator=gen)
        assert torch.equal(state.memory, torch.tensor(hs[k], dtype=F64)), f"h differs at k={k}"
        if variant == "s":
            assert torch.equal(state.momentum, torch.tensor(gs[k], dtype=F64)), f"g differs at k={k}"
        assert torch.equal(x, torch.tensor(xs[k + 1], dtype=F64)), f"x differs at k={k}"
    assert state.step == T


def test_full_difference_is_every_coordinate_in_order():
    d, tau = 6, 2.0**-8
    f = make_f(d, 3)
    x = torch.randn(3, d, generator=torch.Generator().manual_seed(0), dtype=F64)
    est = estimators.full_coordinate_difference(x, lambda: f(x, 0), tau, batch_dims=1)
    assert est.oracle_calls == 2 * d and est.k == d
    for b in range(3):
        assert est.values[b].tolist() == ref.full_difference(f, x[b].tolist(), tau)
    same = estimators.jaguar_coordinates(x, lambda: f(x, 0), tau, indices=torch.arange(d).repeat(3, 1), batch_dims=1)
    assert torch.equal(est.values, same.values)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), d=st.integers(1, 10))
def test_expectation_over_i_of_rho_is_the_full_difference(seed, d):
    """One batched run per choice of i, the same h_old and coordinate values c: with eta = 1 the
    new momentum is rho; (1/d) sum_i rho(i) = h_old + sum_i (c_i - h_old_i) e_i = c."""
    gen = torch.Generator().manual_seed(seed)
    h_old = torch.randn(d, generator=gen, dtype=F64)
    c = torch.randn(d, generator=gen, dtype=F64)
    state = jaguar_fw.JaguarFWState(memory=h_old.repeat(d, 1), momentum=torch.randn(d, d, generator=gen, dtype=F64),
                                    variant="s", batch_dims=1)
    i = torch.arange(d).reshape(d, 1)
    rho, new = jaguar_fw.update(CoordinateEstimate(indices=i, values=c.reshape(d, 1)), state, eta=1.0)
    assert torch.allclose(rho.mean(0), c, rtol=0, atol=1e-12 * d * (1 + h_old.abs().max() + c.abs().max()))
    # and the memory had coordinate i replaced (from h_old), nothing else
    expect = h_old.repeat(d, 1)
    expect[torch.arange(d), torch.arange(d)] = c
    assert torch.equal(new.memory, expect)
    # the memory-based rho differs from the (wrong) one built from the new memory
    if d > 1 and not torch.equal(h_old, c):
        assert not torch.equal(rho, new.memory)


def test_jaguar_d_after_a_sweep_holds_the_full_difference():
    d, tau = 7, 2.0**-9
    f = make_f(d, 5)
    x = torch.randn(d, generator=torch.Generator().manual_seed(1), dtype=F64)
    state = jaguar_fw.init(x, variant="d")
    for i in torch.randperm(d, generator=torch.Generator().manual_seed(2)).tolist():
        direction, state = jaguar_fw.estimate(x, Iteration(f, 0), state, tau=tau, indices=torch.tensor([i]))
    full = estimators.full_coordinate_difference(x, lambda: f(x, 0), tau)
    assert torch.equal(direction, full.values) and torch.equal(state.memory, full.values)
    # the full-difference start is the same memory
    assert torch.equal(jaguar_fw.init(x, variant="d", start="full", oracle=Iteration(f, 0), tau=tau).memory,
                       full.values)


def test_l2_smoothing_is_sphere_two_point_and_unbiased_for_linear_f():
    d, tau = 5, 0.3
    a = torch.randn(d, generator=torch.Generator().manual_seed(0), dtype=F64)
    x = torch.randn(d, generator=torch.Generator().manual_seed(1), dtype=F64)
    lin = lambda y: (a * y).sum(-1) + 2.0  # noqa: E731
    # exact over the symmetric set {+e_j, -e_j} (points of the unit sphere)
    dirs = torch.cat([torch.eye(d, dtype=F64), -torch.eye(d, dtype=F64)])
    est = [estimators.l2_smoothing(x, lambda: lin(x), tau, z=z.clone()).dense(x)[0] for z in dirs]
    assert torch.allclose(torch.stack(est).mean(0), a, rtol=1e-12, atol=1e-12)
    # Monte Carlo over the sphere, batched: mean within 6 standard errors
    n = 20000
    X = x.repeat(n, 1)
    e = estimators.l2_smoothing(X, lambda: lin(X), tau, seed=7, batch_dims=1)
    same = estimators.sphere_two_point(X, lambda: lin(X), tau, seed=7, batch_dims=1)
    assert torch.equal(e.scale, same.scale) and e.distribution == "sphere"
    v = e.dense(X)[0]
    assert torch.allclose(v.norm(dim=-1) / d, (e.scale.abs() / d), rtol=1e-12)  # |z| = 1
    se = v.std(0) / math.sqrt(n)
    assert bool(((v.mean(0) - a).abs() <= 6 * se).all())


def _coordinate_samples(feedback: str, n: int, tau: float, i: int):
    problem = SeparableCosine(4, seed=3)
    oracle = StochasticOracle(problem, sigma=1.5, sigma_profile="harmonic", feedback=feedback)
    x = (problem.x0 + 0.7).repeat(n, 1)
    it = oracle.iteration(x, torch.Generator().manual_seed(11))
    est = estimators.jaguar_coordinates(x, lambda: it.value(x), tau, indices=torch.full((n, 1), i), batch_dims=1)
    clean = estimators.jaguar_coordinates(x[:1], lambda: problem.value(x[:1]), tau, indices=torch.tensor([[i]]),
                                          batch_dims=1)
    e_i = torch.zeros(4, dtype=F64)
    e_i[i] = tau
    pred_opf = (oracle.sigma_f(x[:1] + e_i) ** 2 + oracle.sigma_f(x[:1] - e_i) ** 2) / (4 * tau * tau)
    return est.values[:, 0], clean.values[0, 0], oracle.noise_std[i] ** 2, pred_opf[0], it


@pytest.mark.parametrize("feedback", ["two_point", "one_point"])
def test_feedback_variance_of_a_coordinate_difference(feedback):
    n, tau, i = 20000, 0.05, 1
    g, clean, var_tpf, var_opf, it = _coordinate_samples(feedback, n, tau, i)
    assert it.calls == 2
    var = var_tpf if feedback == "two_point" else var_opf
    assert float(var_opf) > 50 * float(var_tpf)  # the sigma_f / tau term dominates here
    rel = 6 * math.sqrt(2 / (n - 1))
    assert abs(float(g.var()) / float(var) - 1) < rel
    assert abs(float(g.mean() - clean)) < 6 * math.sqrt(float(var) / n)


def test_two_point_is_the_default_and_one_point_draws_per_call():
    problem = SeparableCosine(3, seed=1)
    assert StochasticOracle(problem, sigma=1.0).feedback == "two_point"
    o = StochasticOracle(problem, sigma=1.0, feedback="one_point")
    it = o.iteration(problem.x0, torch.Generator().manual_seed(0))
    assert it.xi is None and it.value(problem.x0) != it.value(problem.x0)
    tp = StochasticOracle(problem, sigma=1.0).iteration(problem.x0, torch.Generator().manual_seed(0))
    assert tp.value(problem.x0) == tp.value(problem.x0)
    s = o.noise_std.reshape(-1)
    assert torch.allclose(o.sigma_f(problem.x0), ((s * problem.x0.reshape(-1)) ** 2).sum().sqrt(), rtol=1e-14)


def test_adversarial_noise_shifts_the_full_difference_by_delta_over_tau():
    problem = SeparableCosine(5, seed=2)
    tau, Delta = 0.01, 1e-3
    x = problem.x0 + 0.3
    o = StochasticOracle(problem, Delta=Delta, delta_mode="adversarial")
    it = o.iteration(x)
    noisy = estimators.full_coordinate_difference(x, lambda: it.value(x), tau).values
    clean = estimators.full_coordinate_difference(x, lambda: problem.value(x), tau).values
    shift = -(Delta / tau) * torch.sign(problem.grad(x).reshape(-1))
    assert torch.allclose(noisy - clean, shift, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("variant,method,kind", [("d", "fw", "simplex"), ("s", "fw", "l1"), ("d", "pgd", "l2"),
                                                 ("s", "pgd", "simplex")])
def test_batched_equals_per_run(variant, method, kind):
    d, Bn, T, tau = 5, 3, 12, 2.0**-7
    f = make_f(d, 9)
    X = _start(kind, d, 4, (Bn,))
    idx = torch.randint(0, d, (T, Bn, 1), generator=torch.Generator().manual_seed(5))
    Q = constraints.make_set(kind, 1.0)
    gam = 0.2 if method == "fw" else 0.05
    eta = torch.tensor([0.3, 0.6, 1.0], dtype=F64) if variant == "s" else None
    st_b = jaguar_fw.init(X, variant=variant, start="full", oracle=Iteration(f, 0), tau=tau, batch_dims=1)
    for k in range(T):
        st_b = jaguar_fw.step(X, Iteration(f, k), st_b, gamma=gam, tau=tau, Q=Q, method=method, eta=eta,
                              indices=idx[k], batch_dims=1)
    for b in range(Bn):
        x = _start(kind, d, 4, (Bn,))[b].clone()
        st = jaguar_fw.init(x, variant=variant, start="full", oracle=Iteration(f, 0), tau=tau)
        for k in range(T):
            st = jaguar_fw.step(x, Iteration(f, k), st, gamma=gam, tau=tau, Q=Q, method=method,
                                eta=None if eta is None else float(eta[b]), indices=idx[k, b])
        assert torch.equal(x, X[b]) and torch.equal(st.memory, st_b.memory[b])


@pytest.mark.parametrize("variant", ["d", "s"])
def test_inplace_and_pure_updates_agree(variant):
    d = 6
    gen = torch.Generator().manual_seed(0)
    state = jaguar_fw.JaguarFWState(memory=torch.randn(d, generator=gen, dtype=F64),
                                    momentum=torch.randn(d, generator=gen, dtype=F64) if variant == "s" else None,
                                    variant=variant)
    before = (state.memory.clone(), None if state.momentum is None else state.momentum.clone())
    est = CoordinateEstimate(indices=torch.tensor([2]), values=torch.tensor([0.25], dtype=F64))
    eta = 0.4 if variant == "s" else None
    D1, s1 = jaguar_fw.update(est, state, eta=eta)
    assert torch.equal(state.memory, before[0]) and (variant == "d" or torch.equal(state.momentum, before[1]))
    D2, s2 = jaguar_fw.update(est, state, eta=eta, inplace=True)
    assert torch.equal(D1, D2) and torch.equal(s1.memory, s2.memory)


def test_errors_are_one_line_value_errors():
    x = torch.full((4,), 0.25, dtype=F64)
    f = make_f(4, 0)
    s_state = jaguar_fw.init(x, variant="s")
    d_state = jaguar_fw.init(x, variant="d")
    Q = constraints.make_set("simplex")
    est = CoordinateEstimate(indices=torch.tensor([1]), values=torch.tensor([1.0], dtype=F64))
    est2 = CoordinateEstimate(indices=torch.tensor([1, 2]), values=torch.tensor([1.0, 2.0], dtype=F64))
    cases = [
        (lambda: jaguar_fw.update(est, s_state, eta=0.0), "eta must be in (0, 1]"),
        (lambda: jaguar_fw.update(est, s_state, eta=1.5), "eta must be in (0, 1]"),
        (lambda: jaguar_fw.update(est, s_state, eta=float("nan")), "eta must be in (0, 1]"),
        (lambda: jaguar_fw.update(est, s_state), "eta must be given"),
        (lambda: jaguar_fw.update(est, d_state, eta=0.5), "eta is for JAGUAR-s only"),
        (lambda: jaguar_fw.update(est2, s_state, eta=0.5), "k = 1"),
        (lambda: jaguar_fw.init(x, variant="q"), "variant must be one of"),
        (lambda: jaguar_fw.init(x, start="full"), "start='full' needs"),
        (lambda: jaguar_fw.step(x, Iteration(f, 0), d_state, gamma=0.1, tau=0.0, Q=Q,
                                generator=torch.Generator()), "tau must be"),
        (lambda: jaguar_fw.step(x, Iteration(f, 0), d_state, gamma=1.5, tau=0.1, Q=Q,
                                generator=torch.Generator()), "gamma must be"),
        (lambda: jaguar_fw.step(x, Iteration(f, 0), d_state, gamma=0.1, tau=0.1, Q=Q, method="sgd",
                                generator=torch.Generator()), "method must be one of"),
        (lambda: jaguar_fw.step(x, Iteration(f, 0), d_state, gamma=0.1, tau=0.1, Q=None,
                                generator=torch.Generator()), "Q must be"),
        (lambda: jaguar_fw.step(x, Iteration(f, 0), d_state, gamma=0.1, tau=0.1, Q=Q), "generator must be"),
        (lambda: StochasticOracle(SeparableCosine(3), feedback="three_point"), "feedback must be one of"),
        (lambda: StochasticOracle(SeparableCosine(3), sigma=1.0, feedback="one_point").iteration_with(
            torch.zeros(3, dtype=F64)), "xi cannot be given"),
    ]
    for call, msg in cases:
        with pytest.raises(ValueError, match=msg.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                           .replace("]", r"\]")) as err:
            call()
        assert "\n" not in str(err.value)
