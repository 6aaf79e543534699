"""The runner contract, on the one synthetic driver (``synthetic.runner.run_group``): the output
index N(T), the norms at x^{N(T)}, the trajectory averages of exact gradient norms over
t = 0..T-1 (the left-hand side of Theorems 1 and 2), determinism, x0 untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zotheory.synthetic.problems import nuclear_norm
from zotheory.synthetic.registry import make_problem
from zotheory.synthetic.runner import RunSpec, run_group

VEC = {"family": "separable_cosine", "d": 5, "a": 1.0, "b": 0.5, "w": 2.0, "x0_scale": 1.0, "seed": 4}
MAT = {"family": "entrywise_cosine_matrix", "m": 4, "n": 3, "a": 1.0, "b": 0.5, "w": 2.0, "x0_scale": 1.0,
       "seed": 0}
T = 40


def _every_step(problem, algorithm, hp, seeds=range(6)):
    """A group logged at every step (n_log >= T), one frame per run."""
    specs = [RunSpec("contract", problem, algorithm, {"gamma": 0.01, **hp}, T, s,
                     {"sigma": 0.3, "Delta": 0.0, "delta_mode": "none"}) for s in seeds]
    frames = run_group(specs, n_log=10 * T)
    return [frames[s.run_id] for s in specs]


def _norms_at_x0(problem):
    g = make_problem(problem).grad(make_problem(problem).x0)
    return {"l1": float(g.abs().sum()), "l2": float(g.norm()),
            "nuc": float(nuclear_norm(g)) if g.ndim == 2 else float("nan")}


@pytest.mark.parametrize("algorithm,hp", [
    ("jaguar_signsgd", {"beta": 0.9, "tau": 1e-4}),
    ("zo_sgd", {"tau": 1e-4}),
    ("fo_sgd", {}),
])
def test_output_is_the_iterate_at_N_and_averages_are_exact(algorithm, hp):
    at0 = _norms_at_x0(VEC)
    for df in _every_step(VEC, algorithm, hp):
        assert df["t"].tolist() == list(range(1, T + 1))  # every step logged
        N = int(df["out_N"].iloc[0])
        assert 1 <= N <= T and df["out_N"].nunique() == 1
        row = df[df["t"] == N].iloc[0]
        for k in ("l1", "l2"):
            # the norms at the output iterate are those of x^{N}
            assert df[f"out_grad_{k}"].iloc[0] == row[f"grad_{k}"]
            # sum over s = 0..t-1 of ||grad f(x^s)||: x^0, then the logged iterates x^1..x^{t-1}
            grads = np.concatenate([[at0[k]], df[f"grad_{k}"].to_numpy()[:-1]])
            np.testing.assert_allclose(df[f"sum_grad_{k}"], np.cumsum(grads), rtol=1e-12)
            np.testing.assert_allclose(df[f"avg_grad_{k}"], np.cumsum(grads) / df["t"], rtol=1e-12)
        assert df["oracle_calls"].iloc[-1] == {"jaguar_signsgd": 2, "zo_sgd": 2, "fo_sgd": 1}[algorithm] * T
        assert df["grad_nuc"].isna().all() and df["out_grad_nuc"].isna().all()  # vectors: no nuclear norm


def test_matrix_runs_report_the_nuclear_norm():
    at0 = _norms_at_x0(MAT)
    for df in _every_step(MAT, "jaguar_muon", {"beta": 0.9, "tau": 1e-4, "orthogonalization": "exact"}, range(2)):
        grads = np.concatenate([[at0["nuc"]], df["grad_nuc"].to_numpy()[:-1]])
        np.testing.assert_allclose(df["sum_grad_nuc"], np.cumsum(grads), rtol=1e-12)
        assert df["avg_grad_nuc"].iloc[-1] < at0["nuc"]  # it made progress
        N = int(df["out_N"].iloc[0])
        assert df["out_grad_nuc"].iloc[0] == df.loc[df["t"] == N, "grad_nuc"].iloc[0]


def test_same_seed_same_trajectory_and_x0_untouched():
    problem = make_problem(VEC)
    x0 = problem.x0.clone()
    a = _every_step(VEC, "jaguar_signsgd", {"beta": 0.9, "tau": 1e-4}, range(3))
    b = _every_step(VEC, "jaguar_signsgd", {"beta": 0.9, "tau": 1e-4}, range(3))
    for fa, fb in zip(a, b):
        cols = [c for c in fa.columns if c != "wall_time_s"]
        assert fa[cols].equals(fb[cols])
    assert torch.equal(x0, make_problem(VEC).x0)
