"""Zero-order update rules: purity, batching, determinism, descent, validation, and
the properties specific to each rule (momentum persistence, sign invariance, ...)."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zotheory import estimators
from zotheory.algorithms import (
    acc_zom,
    forward_grad,
    jaguar_signsgd,
    zo_adamm,
    zo_jaguar,
    zo_sgd,
    zo_sgd_cons,
    zo_signsgd,
)
from zotheory.estimates import CoordinateEstimate, DirectionEstimate
from zotheory.estimators import NonFiniteOracleError

A, B, W = 1.0, 1.0, 3.0  # f(t) = a/2 t^2 + b (1 - cos(w t)), b w^2 = 9 > a = 1: non-convex
TAU = 2.0**-10
F64 = torch.float64


def nonconvex(x: torch.Tensor, event_ndim: int) -> torch.Tensor:
    v = A / 2 * x * x + B * (1 - torch.cos(W * x))
    return v.sum(dim=tuple(range(-event_ndim, 0)))


class Oracle:
    def __init__(self, event_ndim: int = 1, nan_after: int | None = None):
        self.event_ndim, self.nan_after, self.calls = event_ndim, nan_after, 0

    def value(self, x):
        self.calls += 1
        v = nonconvex(x, self.event_ndim)
        if self.nan_after is not None and self.calls > self.nan_after:
            v = v * float("nan")
        return v


# name -> (module, event shape, gamma, hyperparameters, explicit-draw maker)
def _z(B_, shape, g):
    return {"z": torch.randn((*B_, *shape), generator=g, dtype=F64)}


ALGOS = {
    "jaguar_signsgd": (jaguar_signsgd, (6,), 0.01, {"beta": 0.9, "tau": TAU},
                       lambda B_, shape, g: {"indices": torch.randint(0, shape[0], (*B_, 1), generator=g)}),
    "zo_sgd": (zo_sgd, (6,), 0.02, {"tau": TAU}, _z),
    "zo_signsgd": (zo_signsgd, (6,), 0.01, {"tau": TAU}, _z),
    "zo_adamm": (zo_adamm, (6,), 0.02, {"tau": TAU, "beta1": 0.9, "beta2": 0.99, "eps": 1e-8}, _z),
    "acc_zom": (acc_zom, (6,), 0.02, {"tau": TAU, "alpha": 0.5}, _z),
    "zo_sgd_cons": (zo_sgd_cons, (6,), 0.05, {"tau": TAU}, _z),
    "forward_grad": (forward_grad, (6,), 0.02, {}, _z),
    "zo_jaguar": (zo_jaguar, (4, 3), 2.0, {"tau": 2.0**-6},
                  lambda B_, shape, g: {"row": torch.randint(0, shape[0], B_, generator=g)}),
}
NAMES = list(ALGOS)


def _slice_draws(draws: dict, b: int) -> dict:
    out = {}
    for k, v in draws.items():
        out[k] = int(v[b]) if k == "row" else v[b]
    return out


def _states_equal(s1, s2) -> bool:
    for f in dataclasses.fields(s1):
        a, b = getattr(s1, f.name), getattr(s2, f.name)
        if isinstance(a, torch.Tensor):
            if not torch.equal(a, b):
                return False
        elif a != b:
            return False
    return True


def _run(name, x, T, gen, **overrides):
    mod, shape, gamma, hp, _ = ALGOS[name]
    hp = {**hp, **overrides}
    state = mod.init(x)
    oracle = Oracle(len(shape))
    for _ in range(T):
        state = mod.step(x, oracle, state, gamma=gamma, generator=gen, **hp)
    return state


# --------------------------------------------------------------------------- generic


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_bitwise_identical(name):
    _, shape, *_ = ALGOS[name]
    x0 = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    x1, x2 = x0.clone(), x0.clone()
    s1 = _run(name, x1, 15, torch.Generator().manual_seed(5))
    s2 = _run(name, x2, 15, torch.Generator().manual_seed(5))
    assert torch.equal(x1, x2) and _states_equal(s1, s2)
    x3 = x0.clone()
    _run(name, x3, 15, torch.Generator().manual_seed(6))
    assert not torch.equal(x1, x3)


@pytest.mark.parametrize("name", NAMES)
def test_decreases_nonconvex_function(name):
    _, shape, *_ = ALGOS[name]
    x = torch.full(shape, 1.3, dtype=F64)
    f0 = float(nonconvex(x, len(shape)))
    _run(name, x, 300, torch.Generator().manual_seed(0))
    assert float(nonconvex(x, len(shape))) < 0.9 * f0


@pytest.mark.parametrize("name", NAMES)
def test_batched_step_equals_single_runs(name):
    mod, shape, gamma, hp, draw = ALGOS[name]
    Bn, T = 3, 6
    g = torch.Generator().manual_seed(11)
    x0 = torch.randn((Bn, *shape), generator=g, dtype=F64)
    # per-run hyperparameters (tensors of shape (B,)) for gamma and every real hyperparameter
    factors = torch.tensor([1.0, 0.5, 0.25], dtype=F64)
    gamma_b = gamma * factors
    hp_b = {k: (v * torch.tensor([1.0, 0.5, 2.0], dtype=F64) if k in ("tau", "eps") else
                v * torch.tensor([1.0, 0.9, 0.8], dtype=F64)) for k, v in hp.items()}
    draws = [draw((Bn,), shape, g) for _ in range(T)]

    xb = x0.clone()
    sb = mod.init(xb, batch_dims=1)
    ob = Oracle(len(shape))
    for t in range(T):
        sb = mod.step(xb, ob, sb, gamma=gamma_b, batch_dims=1, **hp_b, **draws[t])
    for b in range(Bn):
        xs = x0[b].clone()
        ss = mod.init(xs)
        os_ = Oracle(len(shape))
        for t in range(T):
            ss = mod.step(xs, os_, ss, gamma=float(gamma_b[b]), **{k: float(v[b]) for k, v in hp_b.items()},
                          **_slice_draws(draws[t], b))
        torch.testing.assert_close(xb[b], xs, rtol=1e-13, atol=1e-15)


def _estimate_and_kwargs(name, x, state, oracle, g):
    """A real estimate at x plus the update's keyword arguments."""
    mod, shape, gamma, hp, draw = ALGOS[name]
    dr = draw((), shape, g)
    closure = lambda: oracle.value(x)
    if name == "jaguar_signsgd":
        return estimators.jaguar_coordinates(x, closure, TAU, indices=dr["indices"]), {"beta": 0.9}
    if name == "zo_jaguar":
        return estimators.jaguar_row(x, closure, hp["tau"], row=dr["row"]), {"tau": hp["tau"]}
    if name == "forward_grad":
        return estimators.forward_grad(oracle.value, x, z=dr["z"]), {}
    est = estimators.gaussian_two_point(x, closure, TAU, z=dr["z"])
    if name == "zo_adamm":
        return est, {"beta1": 0.9, "beta2": 0.99, "eps": 1e-8}
    if name == "acc_zom":
        prev = estimators.gaussian_two_point(x * 0.9, lambda: oracle.value(x * 0.9), TAU, z=dr["z"])
        return est, {"alpha": 0.3, "x": x, "previous_estimate": prev}
    if name == "zo_sgd_cons":
        return est, {"candidate_values": torch.tensor([1.0, 0.5, 2.0], dtype=F64)}
    return est, {}


@pytest.mark.parametrize("name", NAMES)
def test_update_pure_and_inplace_agree(name):
    mod, shape, *_ = ALGOS[name]
    g = torch.Generator().manual_seed(3)
    x = torch.randn(shape, generator=g, dtype=F64)
    state = _run(name, x, 4, torch.Generator().manual_seed(2))  # non-trivial buffers
    oracle = Oracle(len(shape))
    est, kw = _estimate_and_kwargs(name, x, state, oracle, g)
    state_copy, est_copy, x_copy = copy.deepcopy(state), copy.deepcopy(est), x.clone()
    d1, s1 = mod.update(est, state, inplace=False, **kw)
    assert _states_equal(state, state_copy), "update(inplace=False) mutated the state"
    assert torch.equal(x, x_copy)
    for f in dataclasses.fields(est):
        a, b = getattr(est, f.name), getattr(est_copy, f.name)
        assert (torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b)
    d2, s2 = mod.update(est, copy.deepcopy(state), inplace=True, **kw)
    assert torch.equal(d1, d2) and _states_equal(s1, s2)
    assert s1.step == state.step + 1


# --------------------------------------------------------------------------- validation


BAD = [
    ("gamma", 0.0), ("gamma", -1.0), ("gamma", float("nan")), ("gamma", torch.tensor(-0.5, dtype=F64)),
    ("tau", 0.0), ("tau", float("inf")),
]
SPECIFIC_BAD = {
    "jaguar_signsgd": [("beta", 1.0), ("beta", -0.1), ("coords_per_step", 0)],
    "zo_adamm": [("beta1", 1.0), ("beta2", -0.5), ("eps", 0.0)],
    "acc_zom": [("alpha", 0.0), ("alpha", 1.5)],
    "zo_signsgd": [("queries", 0)],
}


@pytest.mark.parametrize("name", NAMES)
def test_bad_hyperparameters_raise(name):
    mod, shape, gamma, hp, _ = ALGOS[name]
    x = torch.ones(shape, dtype=F64)
    cases = [c for c in BAD if not (c[0] == "tau" and "tau" not in hp)] + SPECIFIC_BAD.get(name, [])
    for arg, bad in cases:
        kw = {"gamma": gamma, **hp, arg: bad}
        with pytest.raises(ValueError, match=arg):
            mod.step(x, Oracle(len(shape)), mod.init(x), generator=torch.Generator().manual_seed(0), **kw)
        assert torch.equal(x, torch.ones(shape, dtype=F64))


def test_bad_per_run_hyperparameter_names_range():
    x = torch.ones(2, 5, dtype=F64)
    st_ = jaguar_signsgd.init(x, batch_dims=1)
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\)"):
        jaguar_signsgd.step(x, Oracle(), st_, gamma=0.1, beta=torch.tensor([0.5, 1.0]), tau=TAU,
                            generator=torch.Generator().manual_seed(0), batch_dims=1)
    with pytest.raises(ValueError, match="gamma must be a finite number > 0"):
        jaguar_signsgd.step(x, Oracle(), st_, gamma=torch.tensor([0.1, -0.1]), beta=0.5, tau=TAU,
                            generator=torch.Generator().manual_seed(0), batch_dims=1)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("nan_after", [0, 1, 2, 3, 4])
def test_non_finite_oracle_raises_and_leaves_x(name, nan_after):
    mod, shape, gamma, hp, _ = ALGOS[name]
    x = torch.randn(shape, generator=torch.Generator().manual_seed(4), dtype=F64)
    state = _run(name, x, 2, torch.Generator().manual_seed(2))  # acc_zom: past its first step
    x_before, state_before = x.clone(), copy.deepcopy(state)
    oracle = Oracle(len(shape), nan_after=nan_after)
    try:
        mod.step(x, oracle, state, gamma=gamma, generator=torch.Generator().manual_seed(9), **hp)
    except NonFiniteOracleError as err:
        assert "f(" in str(err) or "jvp" in str(err) or "not finite" in str(err)
        assert torch.equal(x, x_before), "x must be left as it was"
        assert _states_equal(state, state_before)
    else:  # the step needed no more than nan_after finite calls
        assert oracle.calls <= nan_after


# --------------------------------------------------------------------------- JAGUAR SignSGD


def test_jaguar_momentum_persists_across_steps():
    """Entries written earlier keep their values; only the sampled coordinate changes.

    The authors' released code zeroed the buffer every step (so beta had no effect):
    that would make m_2 zero after the second step and x_2 stop moving.
    """
    d, beta, gamma = 8, 0.9, 0.01
    x = torch.linspace(-1, 1, d, dtype=F64)
    state = jaguar_signsgd.init(x)
    oracle = Oracle()
    state = jaguar_signsgd.step(x, oracle, state, gamma=gamma, beta=beta, tau=TAU, indices=torch.tensor([2]))
    m2 = jaguar_signsgd.dense_momentum(state)[2].item()
    assert m2 != 0 and torch.count_nonzero(jaguar_signsgd.dense_momentum(state)) == 1
    x2 = x[2].item()
    state = jaguar_signsgd.step(x, oracle, state, gamma=gamma, beta=beta, tau=TAU, indices=torch.tensor([5]))
    assert jaguar_signsgd.dense_momentum(state)[2].item() == m2, "momentum of an earlier coordinate must persist"
    assert x[2].item() == x2 - gamma * (1.0 if m2 > 0 else -1.0), "x_2 must keep moving by gamma sign(m_2)"
    assert torch.count_nonzero(jaguar_signsgd.dense_momentum(state)) == 2
    # random steps: each changes the momentum at its own index only
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        before = jaguar_signsgd.dense_momentum(state).clone()
        i = torch.randint(0, d, (1,), generator=g)
        state = jaguar_signsgd.step(x, oracle, state, gamma=gamma, beta=beta, tau=TAU, indices=i)
        changed = (jaguar_signsgd.dense_momentum(state) != before).nonzero().flatten().tolist()
        assert set(changed) <= {int(i)}
        mask = torch.ones(d, dtype=torch.bool)
        mask[i] = False
        assert torch.equal(jaguar_signsgd.dense_momentum(state)[mask], before[mask])


def test_jaguar_second_write_uses_beta():
    x = torch.zeros(3, dtype=F64)
    state = jaguar_signsgd.init(x)
    e1 = CoordinateEstimate(indices=torch.tensor([1]), values=torch.tensor([2.0], dtype=F64))
    e2 = CoordinateEstimate(indices=torch.tensor([1]), values=torch.tensor([-4.0], dtype=F64))
    d1, state = jaguar_signsgd.update(e1, state, beta=0.75)
    assert jaguar_signsgd.dense_momentum(state).tolist() == [0.0, 0.25 * 2.0, 0.0] and d1.tolist() == [0.0, 1.0, 0.0]
    d2, state = jaguar_signsgd.update(e2, state, beta=0.75)
    assert jaguar_signsgd.dense_momentum(state)[1].item() == 0.75 * 0.5 + 0.25 * -4.0
    assert d2.tolist() == [0.0, -1.0, 0.0]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(1e-3, 1e3), beta=st.floats(0.0, 0.99),
       k=st.integers(1, 4))
def test_jaguar_sign_invariant_to_positive_scaling(seed, scale, beta, k):
    g = torch.Generator().manual_seed(seed)
    d = 10
    m = torch.randn(d, generator=g, dtype=F64) * (torch.rand(d, generator=g, dtype=F64) < 0.7)
    idx = torch.randperm(d, generator=g)[:k]
    v = torch.randn(k, generator=g, dtype=F64)
    st1 = jaguar_signsgd.JaguarSignSGDState(momentum=m)
    st2 = jaguar_signsgd.JaguarSignSGDState(momentum=m * scale)
    d1, s1 = jaguar_signsgd.update(CoordinateEstimate(idx, v), st1, beta=beta)
    d2, s2 = jaguar_signsgd.update(CoordinateEstimate(idx, v * scale), st2, beta=beta)
    assert torch.equal(d1, d2)
    torch.testing.assert_close(s2.momentum, s1.momentum * scale, rtol=1e-12, atol=0)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(1e-3, 1e3))
def test_zo_signsgd_sign_invariant_to_positive_scaling(seed, scale):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(7, generator=g, dtype=F64)
    s = torch.randn((), generator=g, dtype=F64)
    state = zo_signsgd.init(torch.zeros(7, dtype=F64))
    d1, _ = zo_signsgd.update(DirectionEstimate(scale=s, z=z), state)
    d2, _ = zo_signsgd.update(DirectionEstimate(scale=s * scale, z=z), state)
    assert torch.equal(d1, d2) and torch.equal(d1, torch.sign(s * z))


def test_jaguar_sign_zero_does_not_move():
    x = torch.ones(5, dtype=F64)
    state = jaguar_signsgd.init(x)
    state = jaguar_signsgd.step(x, Oracle(), state, gamma=0.1, beta=0.5, tau=TAU, indices=torch.tensor([3]))
    moved = (x != 1.0).nonzero().flatten().tolist()
    assert moved == [3]


def test_jaguar_k_coordinates_and_block_mode():
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(0), dtype=F64)
    oracle = Oracle(event_ndim=2)
    # k > 1: each index gets its own central difference
    state = jaguar_signsgd.init(x)
    gen = torch.Generator().manual_seed(1)
    state = jaguar_signsgd.step(x, oracle, state, gamma=0.01, beta=0.5, tau=TAU, coords_per_step=4, generator=gen)
    assert torch.count_nonzero(jaguar_signsgd.dense_momentum(state)) == 4
    # block mode: one scalar written at every block index
    x = torch.randn(20, 20, generator=torch.Generator().manual_seed(0), dtype=F64)
    state = jaguar_signsgd.init(x)
    state = jaguar_signsgd.step(x, oracle, state, gamma=0.01, beta=0.5, tau=TAU, mode="block",
                                generator=torch.Generator().manual_seed(2))
    nz = jaguar_signsgd.dense_momentum(state)[jaguar_signsgd.dense_momentum(state) != 0]
    assert nz.numel() == 4 and torch.all(nz == nz[0])
    with pytest.raises(ValueError, match="mode"):
        jaguar_signsgd.step(x, oracle, state, gamma=0.01, beta=0.5, tau=TAU, mode="row",
                            generator=torch.Generator().manual_seed(2))


def test_jaguar_duplicate_indices_rejected():
    state = jaguar_signsgd.init(torch.zeros(4, dtype=F64))
    est = CoordinateEstimate(indices=torch.tensor([1, 1]), values=torch.tensor([1.0, 2.0], dtype=F64))
    with pytest.raises(ValueError, match="distinct"):
        jaguar_signsgd.update(est, state, beta=0.5)


def test_jaguar_needs_generator_or_indices():
    x = torch.zeros(4, dtype=F64)
    with pytest.raises(ValueError, match="generator"):
        jaguar_signsgd.step(x, Oracle(), jaguar_signsgd.init(x), gamma=0.1, beta=0.5, tau=TAU)


# --------------------------------------------------------------------------- other rules


def test_zo_jaguar_writes_sign_times_tau_into_row():
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    tau, gamma = 2.0**-6, 0.5
    state = zo_jaguar.init(x)
    x0 = x.clone()
    est = estimators.jaguar_row(x, lambda: nonconvex(x, 2), tau, row=2)
    state = zo_jaguar.step(x, Oracle(2), state, gamma=gamma, tau=tau, row=2)
    expected = torch.zeros(4, 3, dtype=F64)
    expected[2] = torch.sign(est.values[0]) * tau
    assert torch.equal(state.estimate, expected)
    assert torch.equal(x0 - x, gamma * expected)  # step is gamma * tau per entry
    state = zo_jaguar.step(x, Oracle(2), state, gamma=gamma, tau=tau, row=0)
    assert torch.equal(state.estimate[2], expected[2]), "row 2 persists in the estimate"


def test_acc_zom_alpha_one_is_zo_sgd():
    x1 = torch.randn(5, generator=torch.Generator().manual_seed(0), dtype=F64)
    x2 = x1.clone()
    s1, s2 = acc_zom.init(x1), zo_sgd.init(x2)
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    for _ in range(10):
        s1 = acc_zom.step(x1, Oracle(), s1, gamma=0.02, tau=TAU, alpha=1.0, generator=g1)
        s2 = zo_sgd.step(x2, Oracle(), s2, gamma=0.02, tau=TAU, generator=g2)
    assert torch.equal(x1, x2)


def test_acc_zom_recursion_and_oracle_calls():
    h = torch.tensor([1.0, 2.0, 3.0], dtype=F64)

    class Quad:
        calls = 0

        def value(self, x):
            Quad.calls += 1
            return 0.5 * (h * x * x).sum(-1)

    grad = lambda x: h * x
    x = torch.tensor([1.0, -1.0, 0.5], dtype=F64)
    state = acc_zom.init(x)
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(3, generator=g, dtype=F64), torch.randn(3, generator=g, dtype=F64)
    x0 = x.clone()
    state = acc_zom.step(x, Quad(), state, gamma=0.1, tau=TAU, alpha=0.3, z=z0)
    assert Quad.calls == 2
    v0 = (grad(x0) @ z0) * z0
    torch.testing.assert_close(state.v, v0, rtol=1e-10, atol=1e-12)
    x1 = x.clone()
    assert torch.equal(state.x_prev, x0)
    state = acc_zom.step(x, Quad(), state, gamma=0.1, tau=TAU, alpha=0.3, z=z1)
    assert Quad.calls == 6
    v1 = (grad(x1) @ z1) * z1 + 0.7 * (v0 - (grad(x0) @ z1) * z1)
    torch.testing.assert_close(state.v, v1, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(x, x1 - 0.1 * v1, rtol=1e-12, atol=1e-14)
    assert torch.equal(state.x_prev, x1)


def test_zo_sgd_cons_never_increases_and_chooses():
    x = torch.full((6,), 1.3, dtype=F64)
    state = zo_sgd_cons.init(x)
    g = torch.Generator().manual_seed(0)
    oracle = Oracle()
    prev = float(oracle.value(x))
    for _ in range(40):
        state = zo_sgd_cons.step(x, oracle, state, gamma=0.5, tau=TAU, generator=g)
        now = float(nonconvex(x, 1))
        assert now <= prev
        prev = now
    est = DirectionEstimate(scale=torch.tensor(2.0, dtype=F64), z=torch.ones(6, dtype=F64))
    for vals, c in [([1.0, 0.5, 2.0], 1.0), ([1.0, 2.0, 0.5], -1.0), ([0.5, 1.0, 2.0], 0.0), ([1.0, 1.0, 1.0], 0.0)]:
        d, _ = zo_sgd_cons.update(est, state, candidate_values=torch.tensor(vals, dtype=F64))
        assert torch.equal(d, c * 2.0 * torch.ones(6, dtype=F64))


def test_zo_adamm_by_hand():
    x = torch.zeros(3, dtype=F64)
    state = zo_adamm.init(x)
    gs = [torch.tensor([1.0, -2.0, 0.0], dtype=F64), torch.tensor([0.5, 1.0, 0.0], dtype=F64)]
    m = v = vh = torch.zeros(3, dtype=F64)
    for gt in gs:
        d, state = zo_adamm.update(DirectionEstimate(scale=torch.tensor(1.0, dtype=F64), z=gt), state,
                                   beta1=0.9, beta2=0.99, eps=1e-8)
        m = 0.9 * m + (1 - 0.9) * gt
        v = 0.99 * v + (1 - 0.99) * (gt * gt)
        vh = torch.maximum(vh, v)
        assert torch.equal(d, m / (vh.sqrt() + 1e-8))
    assert state.max_exp_avg_sq[0] >= state.exp_avg_sq[0]


def test_forward_grad_direction_on_quadratic():
    h = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=F64)

    class Quad:
        def value(self, x):
            return 0.5 * (h * x * x).sum(-1)

    x = torch.tensor([1.0, -1.0, 0.5, 2.0], dtype=F64)
    z = torch.randn(4, generator=torch.Generator().manual_seed(0), dtype=F64)
    x0 = x.clone()
    forward_grad.step(x, Quad(), forward_grad.init(x), gamma=0.1, z=z)
    torch.testing.assert_close(x, x0 - 0.1 * ((h * x0) @ z) * z, rtol=1e-13, atol=1e-15)


def test_zo_signsgd_queries_average():
    x = torch.randn(5, generator=torch.Generator().manual_seed(0), dtype=F64)
    zs = [torch.randn(5, generator=torch.Generator().manual_seed(i), dtype=F64) for i in range(3)]
    oracle = Oracle()
    ests = [estimators.gaussian_two_point(x, lambda: oracle.value(x), TAU, z=z) for z in zs]
    expected = torch.sign(sum(e.scale * e.z for e in ests) / 3)
    x0 = x.clone()
    zo_signsgd.step(x, oracle, zo_signsgd.init(x), gamma=0.1, tau=TAU, queries=3, z=zs)
    assert torch.equal(x, x0 - 0.1 * expected)
