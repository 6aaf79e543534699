"""The single-run driver: x^{N(T)}, trajectory averages of exact gradient norms, determinism."""

from __future__ import annotations

import pytest
import torch

from zotheory.runner import grad_norms, run
from zotheory.synthetic.noise import StochasticOracle
from zotheory.synthetic.problems import EntrywiseCosineMatrix, SeparableCosine


def _problem():
    return SeparableCosine(d=5, a=1.0, b=0.5, w=2.0, x0_scale=1.0, seed=4)


@pytest.mark.parametrize("algorithm,hp", [
    ("jaguar_signsgd", {"beta": 0.9, "tau": 1e-4}),
    ("zo_sgd", {"tau": 1e-4}),
    ("fo_sgd", {}),
])
def test_output_is_the_iterate_at_N_and_averages_are_exact(algorithm, hp):
    p = _problem()
    oracle = StochasticOracle(p, sigma=0.3)
    res = run(algorithm, p.x0, oracle, 40, gamma=0.01, generator=torch.Generator().manual_seed(1),
              true_grad=p.grad, **hp)
    assert 1 <= res.N <= 40 and res.oracle_calls > 0

    # replay with the same seeds, recording every iterate
    iterates = [p.x0.clone()]
    again = run(algorithm, p.x0, oracle, res.N, gamma=0.01, generator=torch.Generator().manual_seed(1),
                output_generator=torch.Generator().manual_seed(12345), **hp)
    assert torch.equal(again.x_last, res.x_out)

    # trajectory average over t = 0..T-1, recomputed by replaying step by step
    total = {"l1": 0.0, "l2": 0.0}
    for T in range(1, 41):
        r = run(algorithm, p.x0, oracle, T, gamma=0.01, generator=torch.Generator().manual_seed(1),
                output_generator=torch.Generator().manual_seed(999), **hp)
        iterates.append(r.x_last)
    for x in iterates[:40]:
        for k, v in grad_norms(p.grad(x)).items():
            total[k] += v
    assert res.avg_grad_norms["l1"] == pytest.approx(total["l1"] / 40, rel=1e-12)
    assert res.avg_grad_norms["l2"] == pytest.approx(total["l2"] / 40, rel=1e-12)
    assert res.out_grad_norms["l1"] == pytest.approx(grad_norms(p.grad(res.x_out))["l1"], rel=1e-12)


def test_same_seed_same_trajectory_and_x0_untouched():
    p = _problem()
    x0 = p.x0.clone()
    a = run("jaguar_signsgd", x0, StochasticOracle(p, sigma=0.5), 30, gamma=0.02,
            generator=torch.Generator().manual_seed(7), beta=0.9, tau=1e-4)
    b = run("jaguar_signsgd", x0, StochasticOracle(p, sigma=0.5), 30, gamma=0.02,
            generator=torch.Generator().manual_seed(7), beta=0.9, tau=1e-4)
    assert torch.equal(a.x_last, b.x_last) and torch.equal(a.x_out, b.x_out) and a.N == b.N
    assert torch.equal(x0, p.x0)


def test_matrix_runs_report_the_nuclear_norm_and_a_plain_function_is_an_oracle():
    p = EntrywiseCosineMatrix(4, 3, a=1.0, b=0.5, w=2.0, x0_scale=1.0, seed=0)
    res = run("jaguar_muon", p.x0, p.value, 25, gamma=0.01, generator=torch.Generator().manual_seed(0),
              true_grad=p.grad, beta=0.9, tau=1e-4, orthogonalization="exact")
    assert set(res.avg_grad_norms) == {"l1", "l2", "nuc"}
    assert res.avg_grad_norms["nuc"] < grad_norms(p.grad(p.x0))["nuc"]  # it made progress


def test_gamma_schedule_and_bad_T():
    p = _problem()
    seen = []

    def gamma(t):
        seen.append(t)
        return 0.01 / (1 + t)

    run("fo_sgd", p.x0, p.value, 5, gamma=gamma, generator=torch.Generator().manual_seed(0))
    assert seen == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="T must be an integer >= 1"):
        run("fo_sgd", p.x0, p.value, 0, gamma=0.1, generator=torch.Generator())
    with pytest.raises(ValueError, match="unknown algorithm"):
        run("nope", p.x0, p.value, 3, gamma=0.1, generator=torch.Generator())
