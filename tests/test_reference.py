"""Fast kernels == literal references, step by step, on the same random stream (float64).

Exact equality is asserted: both sides perform the same IEEE double operations in the
same order (x_i + tau, (f+ - f-) / (2 tau), beta m + (1 - beta) g, x - gamma sign(m);
x + tau z, x - gamma (g z)), and the kernels draw exactly as the references do
(``torch.randint(0, d, (1,), generator=g)`` per step for Algorithm 1, one seed per
step + ``torch.randn`` from a generator seeded with it for ZO-SGD).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zotheory.algorithms import jaguar_signsgd, zo_sgd
from zotheory.reference import jaguar_signsgd as ref_jaguar
from zotheory.reference import zo_sgd as ref_zo_sgd

A, B, W = 1.0, 0.7, 3.0  # b w^2 > a: non-convex


def make_f(d: int, noise_seed: int):
    """f(x, t) = sum a/2 x^2 + b (1 - cos(w x)) + <xi^t, x>: xi^t is the iteration's sample."""
    xis = torch.randn(200, d, generator=torch.Generator().manual_seed(noise_seed), dtype=torch.float64) * 0.1

    def f(x: torch.Tensor, t: int) -> torch.Tensor:
        return (A / 2 * x * x + B * (1 - torch.cos(W * x))).sum(-1) + (xis[t] * x).sum(-1)

    return f


class IterationOracle:
    def __init__(self, f, t):
        self.f, self.t = f, t

    def value(self, x):
        return self.f(x, self.t)


# tau values exactly representable in float32 (see test_generic_tau for arbitrary tau)
DYADIC_TAU = st.sampled_from([2.0**-6, 2.0**-10, 2.0**-13])
SETTINGS = settings(max_examples=12, deadline=None)


@SETTINGS
@given(
    seed=st.integers(0, 2**31 - 1),
    d=st.integers(1, 12),
    gamma=st.floats(1e-4, 0.1),
    beta=st.floats(0.0, 0.99),
    tau=DYADIC_TAU,
)
def test_jaguar_signsgd_equals_reference(seed, d, gamma, beta, tau):
    T = 40
    f = make_f(d, seed + 1)
    x0 = torch.randn(d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    xs, ms = ref_jaguar.run(f, x0, T, gamma=gamma, beta=beta, tau=tau, generator=torch.Generator().manual_seed(seed))
    x = x0.clone()
    state = jaguar_signsgd.init(x)
    gen = torch.Generator().manual_seed(seed)
    for t in range(T):
        state = jaguar_signsgd.step(x, IterationOracle(f, t), state, gamma=gamma, beta=beta, tau=tau, generator=gen)
        assert torch.equal(jaguar_signsgd.dense_momentum(state), torch.tensor(ms[t], dtype=torch.float64)), f"momentum differs at t={t}"
        assert torch.equal(x, torch.tensor(xs[t + 1], dtype=torch.float64)), f"x differs at t={t}"
    assert state.step == T


@SETTINGS
@given(
    seed=st.integers(0, 2**31 - 1),
    d=st.integers(1, 12),
    gamma=st.floats(1e-4, 0.05),
    tau=DYADIC_TAU,
)
def test_zo_sgd_equals_reference(seed, d, gamma, tau):
    T = 40
    f = make_f(d, seed + 1)
    x0 = torch.randn(d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    xs = ref_zo_sgd.run(f, x0, T, gamma=gamma, tau=tau, generator=torch.Generator().manual_seed(seed))
    x = x0.clone()
    state = zo_sgd.init(x)
    gen = torch.Generator().manual_seed(seed)
    for t in range(T):
        state = zo_sgd.step(x, IterationOracle(f, t), state, gamma=gamma, tau=tau, generator=gen)
        assert torch.equal(x, torch.tensor(xs[t + 1], dtype=torch.float64)), f"x differs at t={t}"


@pytest.mark.parametrize("tau", [1e-3, 0.3e-2, 1e-5])
def test_generic_tau(tau):
    """Arbitrary (non-dyadic) tau: float64 must stay float64 end to end (estimators included).

    Fails if a Python-float ``tau`` is rounded through float32 anywhere (e.g.
    ``torch.tensor(float(tau))`` before ``.to(float64)``): the perturbation would then be
    ``fl32(tau)`` instead of ``tau``.
    """
    d, T, seed = 6, 30, 7
    f = make_f(d, 3)
    x0 = torch.linspace(-1.5, 1.2, d, dtype=torch.float64)
    xs, ms = ref_jaguar.run(f, x0, T, gamma=0.01, beta=0.9, tau=tau, generator=torch.Generator().manual_seed(seed))
    x, state, gen = x0.clone(), jaguar_signsgd.init(x0), torch.Generator().manual_seed(seed)
    for t in range(T):
        state = jaguar_signsgd.step(x, IterationOracle(f, t), state, gamma=0.01, beta=0.9, tau=tau, generator=gen)
    assert torch.equal(jaguar_signsgd.dense_momentum(state), torch.tensor(ms[-1], dtype=torch.float64))
    assert torch.equal(x, torch.tensor(xs[-1], dtype=torch.float64))
    xs = ref_zo_sgd.run(f, x0, T, gamma=0.01, tau=tau, generator=torch.Generator().manual_seed(seed))
    x, state, gen = x0.clone(), zo_sgd.init(x0), torch.Generator().manual_seed(seed)
    for t in range(T):
        state = zo_sgd.step(x, IterationOracle(f, t), state, gamma=0.01, tau=tau, generator=gen)
    assert torch.equal(x, torch.tensor(xs[-1], dtype=torch.float64))


def test_reference_alg1_by_hand():
    """The reference itself, on f(x) = x_0 - 2 x_1 (exact differences): two steps by hand."""
    f = lambda x, t: x[0] - 2 * x[1]
    gen = torch.Generator().manual_seed(0)
    idx = [int(torch.randint(0, 2, (1,), generator=gen)[0]) for _ in range(2)]
    xs, ms = ref_jaguar.run(f, [0.0, 0.0], 2, gamma=0.5, beta=0.5, tau=0.25, generator=torch.Generator().manual_seed(0))
    grad = [1.0, -2.0]
    m = [0.0, 0.0]
    x = [0.0, 0.0]
    for t, i in enumerate(idx):
        m[i] = 0.5 * m[i] + 0.5 * grad[i]
        x = [x[j] - 0.5 * (math.copysign(1.0, m[j]) if m[j] != 0 else 0.0) for j in range(2)]
        assert ms[t] == m and xs[t + 1] == x
