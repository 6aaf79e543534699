"""JAGUAR Muon, ZO-Muon and the first-order references (SGD, Signum, Muon, Adam)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zotheory.algorithms import adam, fo_muon, fo_sgd, fo_signsgd_momentum, jaguar_muon, zo_muon
from zotheory.estimates import CoordinateEstimate, DirectionEstimate
from zotheory.orthogonalize import orthogonalize
from zotheory.reference import jaguar_muon as reference

SETTINGS = settings(max_examples=15, deadline=None)
dims = st.integers(min_value=1, max_value=6)
seeds = st.integers(min_value=0, max_value=2**31 - 1)
betas = st.floats(min_value=0.0, max_value=0.99)


# --------------------------------------------------------------------------- problem

A_COEF, B_COEF, W_COEF = 1.0, 1.0, 3.0  # entrywise a/2 t^2 + b (1 - cos(w t)): b w^2 > a, non-convex


class Problem:
    """f(X) = sum_entries a/2 t^2 + b (1 - cos(w t)) over the event dimensions (min 0 at X = 0),
    plus an optional iteration-dependent linear term (a stand-in for xi^t)."""

    def __init__(self, batch_dims: int = 0, noise: torch.Tensor | None = None) -> None:
        self.batch_dims = batch_dims
        self.noise = noise  # same shape as x, or None

    def _event_sum(self, t: torch.Tensor) -> torch.Tensor:
        return t.sum(dim=tuple(range(self.batch_dims, t.ndim)))

    def value(self, x: torch.Tensor) -> torch.Tensor:
        v = A_COEF / 2 * x**2 + B_COEF * (1 - torch.cos(W_COEF * x))
        if self.noise is not None:
            v = v + self.noise * x
        return self._event_sum(v)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        g = A_COEF * x + B_COEF * W_COEF * torch.sin(W_COEF * x)
        return g if self.noise is None else g + self.noise


def _x0(shape=(6, 4), seed=0) -> torch.Tensor:
    return 1.5 * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- JAGUAR Muon: momentum


@SETTINGS
@given(m=dims, n=dims, seed=seeds, beta=betas, steps=st.integers(1, 40))
def test_jaguar_muon_momentum_persists_and_only_the_sampled_entry_changes(m, n, seed, beta, steps):
    """Guards against the released code's bug (momentum buffer zeroed every step):
    M must equal a dict-based model in which each write touches one entry only."""
    g = _gen(seed)
    state = jaguar_muon.init(torch.zeros(m, n, dtype=torch.float64))
    model: dict[int, float] = {}
    for _ in range(steps):
        p = int(torch.randint(0, m * n, (1,), generator=g))
        v = float(torch.randn(1, generator=g, dtype=torch.float64))
        before = jaguar_muon.dense_momentum(state).clone()
        est = CoordinateEstimate(indices=torch.tensor([p]), values=torch.tensor([v], dtype=torch.float64))
        _, state = jaguar_muon.update(est, state, beta=beta)
        model[p] = beta * model.get(p, 0.0) + (1 - beta) * v
        changed = (jaguar_muon.dense_momentum(state) != before).reshape(-1)
        changed[p] = False
        assert not bool(changed.any()), "an entry other than the sampled one changed"
        expected = torch.zeros(m * n, dtype=torch.float64)
        for q, val in model.items():
            expected[q] = val
        assert torch.equal(jaguar_muon.dense_momentum(state).reshape(-1), expected)
    assert state.step == steps


def test_jaguar_muon_step_keeps_earlier_entries():
    """Through ``step`` with a real oracle: after the second step the first entry's momentum is still there."""
    x = _x0()
    state = jaguar_muon.init(x)
    oracle = Problem()
    state = jaguar_muon.step(x, oracle, state, gamma=0.01, beta=0.5, tau=1e-4, indices=torch.tensor([3]))
    first = jaguar_muon.dense_momentum(state).reshape(-1)[3].item()
    assert first != 0.0
    for p in (7, 11, 20):
        state = jaguar_muon.step(x, oracle, state, gamma=0.01, beta=0.5, tau=1e-4, indices=torch.tensor([p]))
        assert jaguar_muon.dense_momentum(state).reshape(-1)[3].item() == first
    assert int((jaguar_muon.dense_momentum(state) != 0).sum()) == 4
    assert state.step == 4


def test_jaguar_muon_k_coordinates_write_exactly_those_entries():
    """Named generalisation coords_per_step = k: k separate central differences, k writes."""
    x = _x0()
    state = jaguar_muon.init(x)
    g = _gen(2)
    state = jaguar_muon.step(x, Problem(), state, gamma=0.01, beta=0.0, tau=1e-5, generator=g, coords_per_step=5)
    nz = torch.nonzero(jaguar_muon.dense_momentum(state).reshape(-1)).reshape(-1)
    assert nz.numel() == 5
    x0 = _x0()
    torch.testing.assert_close(
        jaguar_muon.dense_momentum(state).reshape(-1)[nz], Problem().grad(x0).reshape(-1)[nz], atol=1e-8, rtol=0
    )


@SETTINGS
@given(m=dims, n=dims, seed=seeds, beta=betas, method=st.sampled_from(["exact", "ns3", "ns5"]))
def test_jaguar_muon_update_pure_and_inplace_agree(m, n, seed, beta, method):
    g = _gen(seed)
    M0 = torch.randn(m, n, generator=g, dtype=torch.float64)
    k = min(2, m * n)
    idx = torch.randperm(m * n, generator=g)[:k]
    est = CoordinateEstimate(indices=idx, values=torch.randn(k, generator=g, dtype=torch.float64))
    state = jaguar_muon.JaguarMuonState(momentum=M0.clone(), step=5)
    d_pure, s_pure = jaguar_muon.update(est, state, beta=beta, orthogonalization=method)
    assert torch.equal(state.momentum, M0) and state.step == 5  # untouched
    d_in, s_in = jaguar_muon.update(est, state, beta=beta, orthogonalization=method, inplace=True)
    assert torch.equal(d_pure, d_in) and torch.equal(s_pure.momentum, s_in.momentum)
    assert s_in.momentum is state.momentum and s_pure.step == s_in.step == 6
    torch.testing.assert_close(d_pure, orthogonalize(s_pure.momentum, method), atol=0, rtol=0)


@pytest.mark.parametrize("method", ["exact", "ns3", "ns5"])
def test_jaguar_muon_batched_step_equals_single_runs(method):
    B, m, n, T = 3, 5, 4, 12
    g = _gen(1)
    X = torch.stack([_x0(seed=s) for s in range(B)])
    gamma = torch.tensor([0.01, 0.02, 0.005], dtype=torch.float64)
    beta = torch.tensor([0.0, 0.5, 0.9], dtype=torch.float64)
    tau = torch.tensor([1e-3, 1e-4, 1e-2], dtype=torch.float64)
    idx = torch.randint(0, m * n, (T, B, 1), generator=g)
    Xb = X.clone()
    sb = jaguar_muon.init(Xb, batch_dims=1)
    singles = [X[b].clone() for b in range(B)]
    ss = [jaguar_muon.init(s) for s in singles]
    for t in range(T):
        sb = jaguar_muon.step(
            Xb, Problem(batch_dims=1), sb, gamma=gamma, beta=beta, tau=tau,
            orthogonalization=method, batch_dims=1, indices=idx[t],
        )
        for b in range(B):
            ss[b] = jaguar_muon.step(
                singles[b], Problem(), ss[b], gamma=float(gamma[b]), beta=float(beta[b]),
                tau=float(tau[b]), orthogonalization=method, indices=idx[t, b],
            )
    # The batched oracle sums over dims (1, 2), the single one over (0, 1): f may differ
    # in the last bit (|f| ~ 30, so ~1e-14), and the central difference divides that by
    # 2 tau >= 2e-4, hence momentum agreement to ~1e-10, not bitwise.
    for b in range(B):
        torch.testing.assert_close(Xb[b], singles[b], atol=1e-9, rtol=0)
        torch.testing.assert_close(sb.momentum[b], ss[b].momentum, atol=1e-9, rtol=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"gamma": 0.0}, r"gamma must be a finite number > 0"),
        ({"gamma": -1.0}, r"gamma must be a finite number > 0"),
        ({"gamma": torch.tensor(float("nan"))}, r"gamma must be a finite number > 0"),
        ({"beta": 1.0}, r"beta must be in \[0, 1\)"),
        ({"beta": -0.1}, r"beta must be in \[0, 1\)"),
        ({"tau": 0.0}, r"tau must be a finite number > 0"),
        ({"ns_steps": 0}, r"ns_steps must be an integer >= 1"),
        ({"ns_steps": 1.5}, r"ns_steps must be an integer >= 1"),
        ({"orthogonalization": "svd"}, r"orthogonalization must be one of \['exact', 'ns3', 'ns5'\]"),
        ({"coords_per_step": 0}, r"coords_per_step must be an integer >= 1"),
    ],
)
def test_jaguar_muon_bad_hyperparameters_raise(kwargs, message):
    x = _x0()
    state = jaguar_muon.init(x)
    args = dict(gamma=0.1, beta=0.5, tau=1e-3, generator=_gen(0))
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        jaguar_muon.step(x, Problem(), state, **args)
    assert torch.equal(x, _x0())  # nothing moved


def test_jaguar_muon_wrong_rank_raises():
    with pytest.raises(ValueError, match=r"x must have .*2.*got shape \(5,\)"):
        jaguar_muon.init(torch.zeros(5))
    with pytest.raises(ValueError, match=r"x must have 2 dimension\(s\) after 0 batch.*\(2, 3, 4\)"):
        jaguar_muon.init(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match=r"x must have .*after 1 batch dimension.*\(2, 3\)"):
        jaguar_muon.init(torch.zeros(2, 3), batch_dims=1)
    state = jaguar_muon.init(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="x must have 2 dimension"):
        jaguar_muon.step(torch.zeros(2, 3, 4), Problem(), state, gamma=0.1, beta=0.5, tau=1e-3, generator=_gen(0))
    with pytest.raises(ValueError, match="beta must be in"):
        jaguar_muon.update(
            CoordinateEstimate(torch.tensor([0]), torch.tensor([1.0])), state, beta=1.5
        )


# --------------------------------------------------------------------------- JAGUAR Muon vs the literal reference


@pytest.mark.parametrize("shape", [(4, 6), (5, 5), (6, 3)])
@pytest.mark.parametrize("seed", [0, 7])
def test_jaguar_muon_equals_literal_reference_step_by_step(shape, seed):
    """Same generator seed -> same flat indices -> the same float64 iterates.

    Wide and square X: bitwise equal (same draws, same central difference, the same
    cubic iteration ``(A A^T) A``). Tall X: ``orthogonalize`` iterates on ``A^T`` (as
    muon.py does), i.e. computes ``A (A^T A)`` where the reference computes ``(A A^T) A``;
    the rounding differs by ~1e-16 per product and the iterates drift apart by
    ~2e-12 over these 41 steps, so tall shapes are checked to 1e-10."""
    T, gamma, beta, tau, K = 40, 0.02, 0.7, 1e-4, 10
    X0 = _x0(shape, seed=seed)
    noise = [0.1 * torch.randn(shape, generator=_gen(1000 + t), dtype=torch.float64) for t in range(T + 1)]

    def f(X, t):
        return Problem(noise=noise[t]).value(X)

    ref = reference.run(f, X0, T, gamma, beta, tau, K, _gen(seed))
    assert len(ref) == T + 2
    x = X0.clone()
    state = jaguar_muon.init(x)
    g = _gen(seed)
    for t in range(T + 1):
        state = jaguar_muon.step(
            x, Problem(noise=noise[t]), state, gamma=gamma, beta=beta, tau=tau,
            generator=g, orthogonalization="ns3", ns_steps=K,
        )
        if shape[0] <= shape[1]:
            assert torch.equal(x, ref[t + 1]), f"iterate {t + 1}: {(x - ref[t + 1]).abs().max()}"
        else:
            torch.testing.assert_close(x, ref[t + 1], atol=1e-10, rtol=0, msg=f"iterate {t + 1}")


def test_reference_newton_schulz_matches_orthogonalize():
    A = _x0((4, 6), seed=3)
    for K in (1, 5, 10):
        torch.testing.assert_close(reference.newton_schulz(A, K), orthogonalize(A, "ns3", K), atol=1e-14, rtol=0)
    assert torch.equal(reference.newton_schulz(torch.zeros(2, 3)), torch.zeros(2, 3))


# --------------------------------------------------------------------------- ZO-Muon


@SETTINGS
@given(m=dims, n=dims, seed=seeds, scale=st.floats(-10, 10).filter(lambda s: abs(s) > 1e-3))
def test_zo_muon_update_is_signed_polar_factor_of_z(m, n, seed, scale):
    z = torch.randn(m, n, generator=_gen(seed), dtype=torch.float64)
    state = zo_muon.init(z)
    est = DirectionEstimate(scale=torch.tensor(scale, dtype=torch.float64), z=z)
    d, new = zo_muon.update(est, state, orthogonalization="exact")
    torch.testing.assert_close(d, math.copysign(1.0, scale) * orthogonalize(z, "exact"), atol=1e-10, rtol=0)
    assert new.step == 1 and state.step == 0


def test_zo_muon_seeded_step_is_reproducible_and_batched_matches_single():
    x1, x2 = _x0(), _x0()
    s1, s2 = zo_muon.init(x1), zo_muon.init(x2)
    g1, g2 = _gen(5), _gen(5)
    for _ in range(5):
        s1 = zo_muon.step(x1, Problem(), s1, gamma=0.05, tau=1e-3, generator=g1)
        s2 = zo_muon.step(x2, Problem(), s2, gamma=0.05, tau=1e-3, generator=g2)
    assert torch.equal(x1, x2) and s1.step == 5
    # batched with explicit z and per-run gamma equals single runs
    B = 2
    X = torch.stack([_x0(seed=s) for s in range(B)])
    Z = torch.randn(B, 6, 4, generator=_gen(9), dtype=torch.float64)
    gamma = torch.tensor([0.05, 0.01], dtype=torch.float64)
    Xb = X.clone()
    zo_muon.step(Xb, Problem(batch_dims=1), zo_muon.init(Xb, batch_dims=1), gamma=gamma, tau=1e-3, z=Z, batch_dims=1)
    for b in range(B):
        xs = X[b].clone()
        zo_muon.step(xs, Problem(), zo_muon.init(xs), gamma=float(gamma[b]), tau=1e-3, z=Z[b])
        torch.testing.assert_close(Xb[b], xs, atol=1e-12, rtol=0)


def test_zo_muon_bad_arguments_raise():
    x = _x0()
    s = zo_muon.init(x)
    with pytest.raises(ValueError, match="gamma must be"):
        zo_muon.step(x, Problem(), s, gamma=0.0, tau=1e-3, generator=_gen(0))
    with pytest.raises(ValueError, match="tau must be"):
        zo_muon.step(x, Problem(), s, gamma=0.1, tau=-1.0, generator=_gen(0))
    with pytest.raises(ValueError, match="ns_steps must be"):
        zo_muon.step(x, Problem(), s, gamma=0.1, tau=1e-3, generator=_gen(0), ns_steps=0)
    with pytest.raises(ValueError, match="x must have"):
        zo_muon.init(torch.zeros(4))


# --------------------------------------------------------------------------- first-order references


def test_fo_sgd_and_signum_follow_their_formulas():
    x = _x0()
    g = Problem().grad(x)
    d, s = fo_sgd.update(g, fo_sgd.init(x))
    assert d is g and s.step == 1
    state = fo_signsgd_momentum.init(x)
    m = torch.zeros_like(x)
    for beta in (0.9, 0.5, 0.0):
        g = Problem().grad(x) * (1 + beta)
        d, state = fo_signsgd_momentum.update(g, state, beta=beta)
        m = beta * m + (1 - beta) * g
        assert torch.equal(state.momentum, m) and torch.equal(d, torch.sign(m))


@pytest.mark.parametrize("nesterov", [True, False])
def test_fo_muon_matches_keller_jordan_update(nesterov):
    """muon.py: momentum.lerp_(grad, 1 - beta); update = grad.lerp_(momentum, beta) if nesterov
    else momentum; NS5; * max(1, m/n) ** 0.5 -- transcribed here in float64."""
    beta = 0.95
    x = _x0((6, 4))
    state = fo_muon.init(x)
    buf = torch.zeros_like(x)
    for t in range(4):
        grad = Problem().grad(x) + t
        buf.lerp_(grad, 1 - beta)
        upd = grad.clone().lerp_(buf, beta) if nesterov else buf
        expected = orthogonalize(upd, "ns5", 5) * max(1, 6 / 4) ** 0.5
        d, state = fo_muon.update(grad, state, beta=beta, nesterov=nesterov)
        torch.testing.assert_close(d, expected, atol=1e-14, rtol=0)
        torch.testing.assert_close(state.momentum, buf, atol=1e-14, rtol=0)


def test_adam_matches_torch_optim_adam():
    x = _x0()
    p = torch.nn.Parameter(x.clone())
    opt = torch.optim.Adam([p], lr=0.01, betas=(0.8, 0.99), eps=1e-6)
    state = adam.init(x)
    for _ in range(20):
        p.grad = Problem().grad(p.detach())
        opt.step()
        state = adam.step(x, Problem(), state, gamma=0.01, beta1=0.8, beta2=0.99, eps=1e-6)
    torch.testing.assert_close(x, p.detach(), atol=1e-12, rtol=0)
    assert state.step == 20


FO_CASES = {
    "fo_sgd": (fo_sgd, {}),
    "signum": (fo_signsgd_momentum, {"beta": 0.9}),
    "fo_muon": (fo_muon, {"beta": 0.9}),
    "adam": (adam, {"beta1": 0.9, "beta2": 0.99}),
}


@pytest.mark.parametrize("name", list(FO_CASES))
def test_fo_rules_pure_inplace_and_batched(name):
    module, hyper = FO_CASES[name]
    B = 3
    X = torch.stack([_x0(seed=s) for s in range(B)])
    gamma = torch.tensor([0.01, 0.03, 0.002], dtype=torch.float64)
    # pure vs inplace
    state = module.init(X[0])
    state = module.update(Problem().grad(X[0]), state, inplace=True, **hyper)[1]
    snapshot = copy.deepcopy(state)
    d1, s1 = module.update(Problem().grad(X[1]), state, **hyper)
    for f in vars(state):
        a, b = getattr(state, f), getattr(snapshot, f)
        assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b
    d2, s2 = module.update(Problem().grad(X[1]), state, inplace=True, **hyper)
    assert torch.equal(d1, d2)
    # batched with per-run gamma equals single runs
    Xb = X.clone()
    sb = module.init(Xb, batch_dims=1)
    singles = [X[b].clone() for b in range(B)]
    ss = [module.init(s) for s in singles]
    for _ in range(5):
        sb = module.step(Xb, Problem(batch_dims=1), sb, gamma=gamma, batch_dims=1, **hyper)
        for b in range(B):
            ss[b] = module.step(singles[b], Problem(), ss[b], gamma=float(gamma[b]), **hyper)
    for b in range(B):
        torch.testing.assert_close(Xb[b], singles[b], atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="gamma must be a finite number > 0"):
        module.step(X[0].clone(), Problem(), module.init(X[0]), gamma=-0.1, **hyper)


def test_fo_bad_hyperparameters_raise():
    x = _x0()
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\)"):
        fo_signsgd_momentum.step(x, Problem(), fo_signsgd_momentum.init(x), gamma=0.1, beta=1.0)
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\)"):
        fo_muon.step(x, Problem(), fo_muon.init(x), gamma=0.1, beta=-0.5)
    with pytest.raises(ValueError, match=r"beta2 must be in \[0, 1\)"):
        adam.step(x, Problem(), adam.init(x), gamma=0.1, beta2=1.0)
    with pytest.raises(ValueError, match=r"eps must be a finite number > 0"):
        adam.step(x, Problem(), adam.init(x), gamma=0.1, eps=0.0)
    with pytest.raises(ValueError, match="x must have"):
        fo_muon.init(torch.zeros(3))


# --------------------------------------------------------------------------- every rule decreases f


def _run(name: str, T: int) -> tuple[float, float]:
    x = _x0()
    oracle = Problem()
    f0 = float(oracle.value(x))
    g = _gen(123)
    if name.startswith("jaguar_muon"):
        method = name.split(":")[1]
        s = jaguar_muon.init(x)
        for _ in range(T):
            s = jaguar_muon.step(x, oracle, s, gamma=0.02, beta=0.5, tau=1e-4, generator=g, orthogonalization=method)
    elif name == "zo_muon":
        s = zo_muon.init(x)
        for _ in range(T):
            s = zo_muon.step(x, oracle, s, gamma=0.05, tau=1e-4, generator=g)
    else:
        module, hyper = FO_CASES[name]
        gamma = {"fo_sgd": 0.05, "signum": 0.01, "fo_muon": 0.01, "adam": 0.01}[name]
        s = module.init(x)
        for _ in range(T):
            s = module.step(x, oracle, s, gamma=gamma, **hyper)
    return f0, float(oracle.value(x))


@pytest.mark.parametrize(
    "name", ["jaguar_muon:ns3", "jaguar_muon:exact", "jaguar_muon:ns5", "zo_muon", *FO_CASES]
)
def test_every_rule_decreases_the_nonconvex_objective(name):
    # From this start f0 = 56.6; gradient descent run to convergence stops at 25.57 (several
    # entries sit in the local minima near +-1.87 of a/2 t^2 + b (1 - cos 3t)), so the
    # reachable decrease is ~55%. Measured after 300 steps: ZO rules 24-30, FO rules 25.6.
    f0, fT = _run(name, 300)
    assert math.isfinite(fT)
    assert fT < 0.6 * f0, (name, f0, fT)
