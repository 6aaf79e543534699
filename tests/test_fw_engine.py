"""JAGUAR Frank-Wolfe / projected GD on the rate engine (issue 14 item 2, engine part).

A group of constrained runs in ``run_group`` equals per-run calls of ``jaguar_fw.step`` fed the
same coordinate draws, with the schedules computed here from ``zotheory.constraints``; the logged
``fw_gap`` and ``f_gap`` are exact at the logged steps; existing specs keep their run ids and
group keys (the generators' seeds); the ``fw_smoke`` experiment runs and the report skips it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zotheory import constraints as C
from zotheory.algorithms import jaguar_fw
from zotheory.synthetic import experiments as E
from zotheory.synthetic.registry import make_problem
from zotheory.synthetic.runner import RunSpec, _generator, group_runs, log_points, run_group

pytestmark = [pytest.mark.usefixtures("one_thread")]

QUAD = {"family": "quadratic", "d": 6, "mu": 1.0, "L": 20.0, "seed": 3}


class _Exact:
    """Noise-free one-iteration oracle of a problem (what the engine's oracle is at sigma = 0)."""

    def __init__(self, problem):
        self.problem = problem

    def value(self, x):
        return self.problem.value(x)


def _per_run(spec: RunSpec, indices: list[torch.Tensor], b: int):
    """Run ``spec`` alone with ``jaguar_fw.step`` (schedule computed here), coordinates ``indices[t][b]``.

    Returns the iterates x^0..x^T."""
    p = make_problem(spec.problem)
    Q = C.make_set(spec.constraint["set"], spec.constraint["R"])
    x = Q.project(p.x0.to(torch.float64).clone())
    hp = spec.hyper
    state = jaguar_fw.init(x, variant=hp["variant"])
    d = x.shape[-1]
    xs = [x.clone()]
    for k in range(spec.T):
        gamma, eta = hp["gamma"], hp.get("eta")
        if hp["schedule"] == "deterministic":
            gamma = hp["gamma"] * C.fw_step_deterministic(k, d)
        elif hp["schedule"] == "stochastic":
            gamma = hp["gamma"] * C.fw_step_stochastic(k, d)
            eta = C.momentum_stochastic(k, d) if hp["variant"] == "s" else None
        state = jaguar_fw.step(x, _Exact(p), state, gamma=gamma, tau=hp["tau"], Q=Q, method=hp["method"],
                               eta=eta, indices=indices[k][b])
        xs.append(x.clone())
    return xs


CASES = [
    ({"variant": "d", "schedule": "deterministic", "method": "fw", "gamma": 1.0}, "simplex"),
    ({"variant": "s", "schedule": "stochastic", "method": "fw", "gamma": 1.0}, "l1"),
    ({"variant": "s", "schedule": "constant", "method": "pgd", "gamma": 0.02, "eta": 0.3}, "l2"),
    ({"variant": "d", "schedule": "constant", "method": "fw", "gamma": 0.05}, "simplex"),
]


@pytest.mark.parametrize("options,kind", CASES)
def test_a_group_equals_per_run_kernel_calls_and_logs_exact_gaps(options, kind):
    T, d = 60, QUAD["d"]
    specs = [RunSpec("fw_test", QUAD, "jaguar_fw", {"tau": 1e-6, **options}, T, s,
                     constraint={"set": kind, "R": 1.5}) for s in (0, 1, 2)]
    (group,) = group_runs(specs)
    frames = run_group(group)
    # the engine's coordinate stream: one draw of shape (B, 1) per step from the group's generator 1
    g = _generator(group[0].group_key(), 1)
    indices = [torch.randint(0, d, (len(group), 1), generator=g) for _ in range(T)]
    p = make_problem(QUAD)
    opt = p.f_star_on(kind, 1.5)
    Q = C.make_set(kind, 1.5)
    for b, spec in enumerate(group):
        xs = _per_run(spec, indices, b)
        df = frames[spec.run_id]
        assert df["t"].tolist() == log_points(T)
        for _, row in df.iterrows():
            x = xs[int(row["t"])]
            assert row["f_gap"] == pytest.approx(float(p.value(x)) - opt.f_star, rel=1e-12, abs=1e-13)
            assert row["fw_gap"] == pytest.approx(float(Q.fw_gap(x, p.grad(x))), rel=1e-12, abs=1e-13)
            assert row["fw_gap"] >= -1e-12 and row["fw_gap"] >= row["f_gap"] - 1e-9  # convex: gap bounds f - f*_Q
        assert (df["problem_f_star_Q"] == opt.f_star).all()
        assert (df["problem_f_star_Q_certificate"] == opt.fw_gap).all()
        assert (df["constraint_set"] == kind).all() and (df["constraint_R"] == 1.5).all()
        assert (df["oracle_calls"] == 2 * df["t"]).all()
        assert bool(Q.contains(xs[-1]))


def test_full_start_counts_its_oracle_calls():
    spec = RunSpec("fw_test", QUAD, "jaguar_fw", {"gamma": 1.0, "tau": 1e-6, "variant": "d",
                                                  "schedule": "deterministic", "start": "full"}, 20, 0,
                   constraint={"set": "simplex", "R": 1.0})
    (df,) = run_group([spec]).values()
    assert (df["oracle_calls"] == 2 * df["t"] + 2 * QUAD["d"]).all()


def test_constraint_validation_and_ids():
    hp = {"gamma": 1.0, "tau": 1e-6, "variant": "d", "schedule": "deterministic"}
    with pytest.raises(ValueError, match="constraint is needed"):
        RunSpec("x", QUAD, "jaguar_fw", hp, 10, 0)
    with pytest.raises(ValueError, match="constrained algorithms only"):
        RunSpec("x", QUAD, "zo_sgd", {"gamma": 0.1, "tau": 1e-3}, 10, 0, constraint={"set": "l2", "R": 1.0})
    with pytest.raises(ValueError, match="set"):
        RunSpec("x", QUAD, "jaguar_fw", hp, 10, 0, constraint={"set": "box", "R": 1.0})
    with pytest.raises(ValueError, match="R"):
        RunSpec("x", QUAD, "jaguar_fw", hp, 10, 0, constraint={"set": "l2", "R": -1.0})
    with pytest.raises(ValueError, match="unknown key"):
        RunSpec("x", QUAD, "jaguar_fw", {**hp, "bogus": 1}, 10, 0, constraint={"set": "l2", "R": 1.0})
    a = RunSpec("x", QUAD, "jaguar_fw", hp, 10, 0, constraint={"set": "l2", "R": 1.0})
    b = RunSpec("x", QUAD, "jaguar_fw", hp, 10, 0, constraint={"set": "l1", "R": 1.0})
    assert a.run_id != b.run_id and a.group_key() != b.group_key()
    assert "constraint" in a.config()


#: (experiment, run id, group key) of the first smoke spec of each pre-issue-14 experiment, computed
#: before RunSpec.constraint existed (the files of `zotheory rates --preset smoke` were then
#: compared bit for bit before / after). The group key seeds the generators.
EXPECTED_IDS = [
    ("t_sweep", "419d462345e314ae", "f2cd3f61cce2514a"),
    ("tau_sweep", "8b65fbaecd7cffa3", "329982d17a92343c"),
    ("delta_floor", "956b451050b434c9", "4f2174938965cbdc"),
    ("beta_ablation", "77bce630fdc5fe13", "9dba686e786c71d4"),
    ("dimension", "0922ac8d5a142124", "9511422505f991ba"),
    ("jaguar_vs_gaussian", "c958f7ae49ba650a", "1e7f12cfed625806"),
    ("muon_orthogonalization", "5558475d43156b3b", "27b64873105d868d"),
    ("gamma_scaling", "32e0d6919f9e67eb", "1c5916c36f80e1e2"),
]


@pytest.mark.parametrize("experiment,run_id,group_key", EXPECTED_IDS)
def test_existing_specs_keep_their_run_ids_and_group_keys(experiment, run_id, group_key):
    spec = E.EXPERIMENTS[experiment]("smoke")[0]
    assert spec.constraint is None and "constraint" not in spec.config()
    assert (spec.run_id, spec.group_key()) == (run_id, group_key)


def test_fw_smoke_runs_in_smoke_and_the_report_skips_it(tmp_path):
    from zotheory.synthetic.report import make_report
    from zotheory.synthetic.sweep import run_specs

    specs = E.build("smoke", ["fw_smoke"])
    assert len(specs) == 4 and {s.hyper["variant"] for s in specs} == {"d", "s"}
    assert E.fw_smoke("full") == []
    run_specs(specs, tmp_path / "results", progress=False)
    from zotheory.synthetic.results import load_results

    df = load_results(tmp_path / "results")
    assert len(df["run_id"].unique()) == 4
    assert np.isfinite(df[["f_gap", "fw_gap", "problem_f_star_Q"]].to_numpy()).all()
    assert (df["fw_gap"] >= -1e-12).all()
    out = make_report(tmp_path / "results", tmp_path / "figures")
    assert out["table"].exists()


def test_schedule_values_are_the_papers_at_k():
    d = 7
    for k in (0, 1, 5):
        g, e = jaguar_fw.schedule_values("stochastic", k, d, "s", 1.0, None)
        assert g == 4 / (k + 8 * d ** 1.5) and e == pytest.approx(4 / (k + 8 * d ** 1.5) ** (2 / 3), rel=1e-15)
        g, e = jaguar_fw.schedule_values("deterministic", k, d, "d", 2.0, None)
        assert g == 2.0 * 4 / (k + 8 * d) and e is None
    assert jaguar_fw.schedule_values("constant", 3, d, "s", 0.1, 0.2) == (0.1, 0.2)
    with pytest.raises(ValueError, match="eta"):
        jaguar_fw.schedule_values("stochastic", 0, d, "s", 1.0, 0.5)
    assert math.isclose(jaguar_fw.schedule_values("stochastic", 0, 1, "s", 1.0, None)[1], 1.0)
