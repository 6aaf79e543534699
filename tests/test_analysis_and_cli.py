"""Report statistics, argument checks and the command line."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zotheory import _checks
from zotheory.cli import main
from zotheory.synthetic import analysis as A


@settings(max_examples=30, deadline=None)
@given(slope=st.floats(-3, 3), scale=st.floats(1e-3, 1e3), n=st.integers(2, 12))
def test_loglog_slope_exact_on_power_laws(slope, scale, n):
    x = np.logspace(0, 4, n)
    assert A.loglog_slope(x, scale * x**slope) == pytest.approx(slope, abs=1e-9)


def test_crossing_interpolates_in_log_log():
    xs = np.array([10.0, 100.0, 1000.0])
    ys = 1.0 / np.sqrt(xs)
    assert A.crossing(xs, ys, 1 / math.sqrt(300.0)) == pytest.approx(300.0, rel=1e-9)
    assert math.isnan(A.crossing(xs, ys, 1e-6))


def test_bootstrap_ci_covers_the_seed_mean_slope():
    rng = np.random.default_rng(0)
    x = np.logspace(1, 4, 6)
    Y = np.exp(rng.normal(0, 0.05, size=(20, 6))) * x**-0.5
    point, lo, hi = A.bootstrap(Y, lambda m: A.loglog_slope(x, m))
    assert lo <= point <= hi and lo < -0.5 < hi


def test_tail_average_from_running_sums():
    t = np.array([1, 2, 5, 10])
    norms = np.arange(10, dtype=float)  # ||grad f(x^s)|| = s
    df = pd.DataFrame({"run_id": "r", "t": t, "T": 10, "sum_grad_l1": [norms[:k].sum() for k in t]})
    out = A.tail_average(df, "l1")
    assert out["tail_grad_l1"].iloc[0] == pytest.approx(norms[5:10].mean())


def test_checks_remember_validated_tensors_but_not_modified_ones():
    t = torch.tensor([0.5, 0.9])
    _checks.check_in_range("beta", t, 0.0, 1.0)
    _checks.check_in_range("beta", t, 0.0, 1.0)  # cached
    t[1] = 1.0  # an in-place change bumps the version counter: checked again
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\)"):
        _checks.check_in_range("beta", t, 0.0, 1.0)
    with pytest.raises(ValueError, match="gamma must be a finite number > 0"):
        _checks.check_positive("gamma", torch.tensor([1.0, float("nan")]))


def test_cli_help_and_algorithm_list(capsys):
    assert main([]) == 0
    assert main(["algorithms"]) == 0
    out = capsys.readouterr().out
    for name in ("jaguar_signsgd", "jaguar_muon", "zo_sgd", "adam"):
        assert name in out


def test_cli_rejects_unknown_experiment():
    with pytest.raises(SystemExit) as e:
        main(["rates", "--only", "no_such_experiment"])
    assert e.value.code == 2


def test_cli_plot_without_results_is_a_clear_error(tmp_path, capsys):
    assert main(["plot", "--results", str(tmp_path / "none")]) == 2
    assert "no results" in capsys.readouterr().err


def test_cli_rates_smoke_writes_results_figures_and_table(tmp_path):
    res, fig = tmp_path / "res", tmp_path / "fig"
    args = ["-m", "zotheory", "rates", "--preset", "smoke", "--only", "t_sweep", "--only", "gamma_scaling",
            "--results", str(res), "--figures", str(fig), "--no-progress"]
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    files = sorted(res.rglob("*.parquet"))
    assert len(files) > 0
    df = pd.concat(pd.read_parquet(p) for p in files)
    for col in ("run_id", "algorithm", "seed", "t", "oracle_calls", "f_gap", "grad_l1", "avg_grad_l1",
                "problem_L", "noise_sigma", "hp_gamma", "git_sha"):
        assert col in df.columns
    assert (fig / "rates_t_sweep.png").exists() and (fig / "rates_report.md").exists()
    table = pd.read_csv(fig / "rates_report.csv")
    assert {"t_sweep", "gamma_scaling", "bound_check"} <= set(table["experiment"])
    # a second run finds everything done
    again = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "0 computed" in again.stdout
