"""The batched synthetic runner against the single-run kernels, and the sweep's resume guarantee."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from zotheory.algorithms import get_algorithm
from zotheory.synthetic.noise import StochasticOracle
from zotheory.synthetic.problems import nuclear_norm
from zotheory.synthetic.registry import make_problem
from zotheory.synthetic.runner import RunSpec, _generator, group_runs, log_points, run_group

VEC = {"family": "separable_cosine", "d": 6, "a": 1.0, "b": 0.5, "w": 2.0, "x0_scale": 1.5, "seed": 1}
MAT = {"family": "entrywise_cosine_matrix", "m": 4, "n": 3, "a": 1.0, "b": 0.5, "w": 2.0, "x0_scale": 1.5,
       "seed": 2}


def _replicate(specs: list[RunSpec]) -> dict[str, pd.DataFrame]:
    """Each run of a group, re-run alone with the single-run kernel (batch_dims=0), fed the
    group's draws (coordinates and xi) row by row."""
    first = specs[0]
    key = first.group_key()
    B = len(specs)
    problem = make_problem(first.problem)
    algo = get_algorithm(first.algorithm)
    options = {k: v for k, v in first.hyper.items() if k not in ("gamma", "beta", "tau")}
    g_algo, g_noise = _generator(key, 1), _generator(key, 2)
    xs = [problem.x0.clone() for _ in range(B)]
    states = [algo.init(x) for x in xs]
    oracles = [StochasticOracle(problem, sigma=s.noise["sigma"], Delta=0.0) for s in specs]
    shape = problem.shape
    out: dict[str, list[dict]] = {s.run_id: [] for s in specs}
    sums = [0.0] * B
    T_max = max(s.T for s in specs)
    for t in range(T_max):
        z = torch.randn((B, *shape), generator=g_noise, dtype=torch.float64) if first.noise["sigma"] > 0 else None
        idx = torch.randint(0, problem.d, (B, 1), generator=g_algo)
        for b, spec in enumerate(specs):
            if t >= spec.T:
                continue
            g = problem.grad(xs[b])
            sums[b] += float(nuclear_norm(g) if problem.is_matrix else g.abs().sum())
            xi = None if z is None else oracles[b].noise_std * z[b]
            it = oracles[b].iteration_with(xi)
            states[b] = algo.step(xs[b], it, states[b], gamma=spec.hyper["gamma"], beta=spec.hyper["beta"],
                                  tau=spec.hyper["tau"], indices=idx[b], **options)
            if t + 1 in log_points(spec.T):
                out[spec.run_id].append({"t": t + 1, "f_gap": float(problem.value(xs[b])),
                                         "sum": sums[b]})
    return {k: pd.DataFrame(v) for k, v in out.items()}


@pytest.mark.parametrize("problem,algorithm,options", [
    (VEC, "jaguar_signsgd", {}),
    (MAT, "jaguar_muon", {"orthogonalization": "exact"}),
    (MAT, "jaguar_muon", {"orthogonalization": "ns3", "ns_steps": 10}),
])
@pytest.mark.parametrize("sigma", [0.0, 0.7])
def test_batched_runner_equals_single_run_kernels(problem, algorithm, options, sigma):
    specs = [
        RunSpec("test", problem, algorithm, {"gamma": g, "beta": b, "tau": 1e-4, **options}, T, seed,
                {"sigma": sigma, "Delta": 0.0, "delta_mode": "none"})
        for seed, (g, b, T) in enumerate([(0.02, 0.9, 120), (0.005, 0.0, 60), (0.05, 0.5, 120)])
    ]
    (group,) = group_runs(specs)
    frames = run_group(group)
    ref = _replicate(group)
    key = "nuc" if problem is MAT else "l1"
    for spec in group:
        got, want = frames[spec.run_id], ref[spec.run_id]
        assert list(got["t"]) == list(want["t"]) and got["t"].iloc[-1] == spec.T
        np.testing.assert_allclose(got["f_gap"], want["f_gap"], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(got[f"sum_grad_{key}"], want["sum"], rtol=1e-10, atol=1e-12)


def test_log_points_and_output_index():
    pts = log_points(1000)
    assert pts[0] == 1 and pts[-1] == 1000 and 500 in pts and pts == sorted(set(pts))
    specs = [RunSpec("test", VEC, "jaguar_signsgd", {"gamma": 0.01, "beta": 0.9, "tau": 1e-4}, T, s)
             for s, T in enumerate([10, 40, 40])]
    frames = run_group(specs)
    for spec in specs:
        df = frames[spec.run_id]
        assert 1 <= df["out_N"].iloc[0] <= spec.T
        assert np.isfinite(df["out_grad_l1"].iloc[0])
        np.testing.assert_allclose(df["avg_grad_l1"], df["sum_grad_l1"] / df["t"])


def test_same_config_gives_identical_results():
    specs = [RunSpec("test", VEC, "jaguar_signsgd", {"gamma": 0.01, "beta": 0.9, "tau": 1e-4}, 50, s,
                     {"sigma": 0.5, "Delta": 0.0, "delta_mode": "none"}) for s in range(3)]
    a, b = run_group(specs), run_group(specs)
    for rid in a:
        pd.testing.assert_frame_equal(a[rid].drop(columns="wall_time_s"), b[rid].drop(columns="wall_time_s"))


def test_run_group_rejects_mixed_groups():
    specs = [RunSpec("test", VEC, "jaguar_signsgd", {"gamma": 0.01, "beta": 0.9, "tau": 1e-4}, 10, 0),
             RunSpec("test", MAT, "jaguar_muon", {"gamma": 0.01, "beta": 0.9, "tau": 1e-4}, 10, 0)]
    with pytest.raises(ValueError, match="one group"):
        run_group(specs)


# --------------------------------------------------------------------------- resume

_SWEEP_SCRIPT = textwrap.dedent("""
    import sys
    from zotheory.synthetic.runner import RunSpec
    from zotheory.synthetic.sweep import run_specs
    VEC = {VEC!r}
    specs = [RunSpec("resume", {{**VEC, "seed": g}}, "jaguar_signsgd",
                     {{"gamma": 0.01, "beta": 0.9, "tau": 1e-4}}, 1500, s,
                     {{"sigma": 0.5, "Delta": 0.0, "delta_mode": "none"}})
             for g in range(5) for s in range(2)]
    run_specs(specs, sys.argv[1], progress=False)
""").format(VEC=VEC)


def _run_sweep(root: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _SWEEP_SCRIPT, str(root)])


def _read_all(root: Path) -> dict[str, pd.DataFrame]:
    volatile = ["wall_time_s", "git_sha"]
    return {p.name: pd.read_parquet(p).drop(columns=volatile) for p in sorted(root.rglob("*.parquet"))}


def test_killed_sweep_resumes_to_identical_results(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert _run_sweep(full).wait(timeout=300) == 0
    reference = _read_all(full)
    assert len(reference) == 10

    # kill the second sweep (SIGKILL: no cleanup) once some but not all files exist
    proc = _run_sweep(killed)
    deadline = time.time() + 300
    while time.time() < deadline:
        n = len(list(killed.rglob("*.parquet")))
        if n >= 2 or proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = len(list(killed.rglob("*.parquet")))
    assert partial < 10, "the sweep finished before it could be killed; make the test sweep longer"
    for p in killed.rglob("*.parquet"):  # whatever exists is complete (atomic writes)
        pd.read_parquet(p)

    assert _run_sweep(killed).wait(timeout=300) == 0
    resumed = _read_all(killed)
    assert set(resumed) == set(reference)
    for name in reference:
        pd.testing.assert_frame_equal(resumed[name], reference[name])
    assert not list(killed.rglob("*.tmp")), "a temporary file was left behind"


MATRIX_ONLY = {"jaguar_muon", "zo_muon", "fo_muon", "zo_jaguar"}
NO_TAU = {"forward_grad", "fo_sgd", "fo_signsgd_momentum", "fo_muon", "adam"}
EXTRA = {"jaguar_signsgd": {"beta": 0.9}, "jaguar_muon": {"beta": 0.9}, "acc_zom": {"alpha": 0.5},
         "jaguar_signsgd_released": {"beta": 0.9}}


@pytest.mark.parametrize("algorithm", sorted(__import__("zotheory.algorithms", fromlist=["ALGORITHMS"]).ALGORITHMS))
def test_the_registry_says_truly_which_algorithms_run_on_the_synthetic_engine(algorithm, capsys):
    from zotheory.algorithms import ALGORITHMS
    from zotheory.cli import main, runs_on

    hyper = {"gamma": 0.01, **({} if algorithm in NO_TAU else {"tau": 1e-3}), **EXTRA.get(algorithm, {})}
    if ALGORITHMS[algorithm].constrained:  # a convex problem with f*_Q, on a set
        specs = [RunSpec("test", {"family": "quadratic", "d": 6, "L": 10.0}, algorithm, hyper, 20, s,
                         constraint={"set": "l1", "R": 1.0}) for s in (0, 1)]
    else:
        specs = [RunSpec("test", MAT if algorithm in MATRIX_ONLY else VEC, algorithm, hyper, 20, s) for s in (0, 1)]
    if ALGORITHMS[algorithm].batched:
        frames = run_group(specs)
        assert all(np.isfinite(f["f_gap"]).all() for f in frames.values())
        assert runs_on(algorithm) in ("both", "synthetic")
    else:
        with pytest.raises(ValueError):
            run_group(specs)
        assert runs_on(algorithm) == "model"
    assert main(["algorithms"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(algorithm + " "))
    assert f" {runs_on(algorithm)} " in line
