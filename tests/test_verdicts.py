"""Tests that can fail for what the report's verdicts rest on (issue 13, item 4).

* ``synthetic.report._verdict``: cases that must agree and cases that must disagree (a
  verdict that always says "agrees" fails here).
* N(T) ~ Uniform{1..T}: a chi-square test on the output index drawn by the synthetic engine
  (the one driver), with fixed seeds and a stated threshold (p > 1e-4): drawing
  from {1..T-1}, or always returning N = T, fails it.
* Slope fits recover a known exponent exactly and their bootstrap CI excludes a wrong one.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from zotheory.synthetic.analysis import bootstrap, loglog_slope
from zotheory.synthetic.report import _verdict
from zotheory.synthetic.runner import RunSpec, run_group

P_THRESHOLD = 1e-4  # a uniform draw fails this with probability 1e-4; the seeds are fixed, so it never flakes


@pytest.mark.parametrize("lo, hi, predicted, tol, expected", [
    (-0.51, -0.49, -0.5, 0.03, "agrees"),       # inside the CI
    (-0.48, -0.46, -0.5, 0.03, "agrees"),       # within tol of the CI
    (-0.46, -0.44, -0.5, 0.03, "disagrees"),    # 0.06 away
    (-0.30, -0.26, -0.5, 0.03, "disagrees"),    # the -1/4 regime is not the -1/2 one
    (-0.27, -0.24, -0.25, 0.03, "agrees"),
    (0.97, 1.02, 1.0, 0.1, "agrees"),
    (0.6, 0.8, 1.0, 0.1, "disagrees"),
    (1.2, 1.4, 1.0, 0.1, "disagrees"),          # above as well as below
    (float("nan"), 1.0, 1.0, 0.1, "n/a"),
])
def test_verdict_agrees_only_within_the_tolerance(lo, hi, predicted, tol, expected):
    assert _verdict(lo, hi, predicted, tol) == expected


def _chi_square_p(draws: np.ndarray, T: int) -> float:
    counts = np.bincount(draws, minlength=T + 2)
    assert counts[0] == 0 and counts[T + 1:].sum() == 0, "N(T) outside {1..T}"
    return float(stats.chisquare(counts[1:T + 1]).pvalue)


def test_the_batched_engine_draws_N_uniformly_on_1_to_T():
    T = 4
    problem = {"family": "separable_cosine", "d": 2, "a": 1.0, "b": 0.5, "w": 2.0, "x0_scale": 1.0, "seed": 0}
    specs = [RunSpec("nt", problem, "zo_sgd", {"gamma": 0.01, "tau": 1e-3}, T, s) for s in range(800)]
    frames = run_group(specs)
    draws = np.array([int(f["out_N"].iloc[0]) for f in frames.values()])
    assert len(draws) == 800
    p = _chi_square_p(draws, T)
    assert p > P_THRESHOLD, f"N(T) is not uniform on 1..{T}: chi-square p = {p:.2e}"


def test_slope_fits_recover_the_exponent_and_the_ci_excludes_a_wrong_one():
    rng = np.random.default_rng(0)
    T = np.logspace(3, 6, 10)
    seeds = np.stack([3.0 * T ** -0.5 * np.exp(rng.normal(0, 0.02, T.size)) for _ in range(16)])
    assert loglog_slope(T, 3.0 * T ** -0.5) == pytest.approx(-0.5, abs=1e-12)
    point, lo, hi = bootstrap(seeds, lambda mean: loglog_slope(T, mean), seed=0)
    assert point == pytest.approx(-0.5, abs=0.01) and lo <= -0.5 <= hi
    assert _verdict(lo, hi, -0.5) == "agrees" and _verdict(lo, hi, -0.25) == "disagrees"


def test_output_ratio_has_mean_one_over_the_output_index():
    """The report's check of x^{N(T)}: given a trajectory, ||grad f(x^N)|| over its expectation
    (1/T) sum_{t=1..T} g_t averages to exactly 1 over N in {1..T} (and not over {0..T-1})."""
    import pandas as pd

    from zotheory.synthetic.analysis import output_ratio

    T, g0 = 6, 9.0
    g = np.array([5.0, 4.0, 2.5, 3.0, 1.0, 0.5])  # ||grad f(x^t)||, t = 1..T
    sums = np.cumsum(np.concatenate([[g0], g[:-1]]))  # sum over s = 0..t-1
    frames = [pd.DataFrame({"run_id": f"r{N}", "T": T, "t": np.arange(1, T + 1), "grad_l1": g, "sum_grad_l1": sums,
                            "out_grad_l1": g[N - 1], "out_N": N}) for N in range(1, T + 1)]
    ratio = output_ratio(pd.concat(frames), "l1")["output_ratio"].to_numpy()
    assert len(ratio) == T and ratio.mean() == pytest.approx(1.0, abs=1e-12)
    assert ratio.max() / ratio.min() == pytest.approx(g.max() / g.min())
