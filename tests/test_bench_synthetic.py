"""The synthetic throughput benchmark: its NumPy loops are the same pseudocode as the torch
kernels (same iterates on a noise-free problem fed the same coordinates), and ``run`` returns
the documented table. No timing assertions (the machine is shared and noisy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zotheory.benchmarks import synthetic as bench
from zotheory.orthogonalize import orthogonalize

HYPER = {"gamma": 0.05, "beta": 0.5, "tau": 1e-2}


def _engine_coords(eng: bench.Engine, T: int, numel: int) -> np.ndarray:
    """The coordinates the engine's generator will draw (k = 1: one randint((B, 1)) per step)."""
    g = torch.Generator()
    g.set_state(eng.g_algo.get_state())
    B = eng.x.shape[0]
    return np.stack([torch.randint(0, numel, (B, 1), generator=g)[:, 0].numpy() for _ in range(T)])


@pytest.mark.parametrize("method,shape", [("jaguar_signsgd", (9,)), ("jaguar_muon", (3, 5))])
def test_numpy_loop_equals_torch_kernel(method, shape):
    B, T = 3, 40
    eng = bench.Engine(method, shape, B, "noise_free", hyper=HYPER)
    d = math.prod(shape)
    coords = _engine_coords(eng, T, d)
    prob = eng.problem
    xs = [prob.x0.numpy().astype(np.float64) for _ in range(B)]
    ms = [np.zeros_like(x) for x in xs]
    fn = bench.numpy_jaguar_signsgd if method == "jaguar_signsgd" else bench.numpy_jaguar_muon
    extra = {"ns_steps": 10} if method == "jaguar_muon" else {}
    moved = False
    for t in range(T):
        eng.step()
        for b in range(B):
            fn(xs[b], ms[b], 1, a=prob.a, b=prob.b, w=prob.w, coords=[coords[t, b]], **HYPER, **extra)
            np.testing.assert_allclose(eng.x[b].numpy(), xs[b], rtol=0, atol=1e-12)
            np.testing.assert_allclose(eng.state.momentum[b].numpy(), ms[b], rtol=1e-9, atol=1e-12)
        moved = moved or not np.array_equal(xs[0], prob.x0.numpy())
    assert moved
    assert len(set(coords.ravel().tolist())) > 1


def test_numpy_newton_schulz_is_ns3():
    A = torch.randn(4, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    np.testing.assert_allclose(bench.numpy_newton_schulz(A.numpy(), 10), orthogonalize(A, "ns3", 10).numpy(),
                               rtol=0, atol=1e-12)
    assert not bench.numpy_newton_schulz(np.zeros((2, 3))).any()


def test_per_run_loop_is_independent_runs_and_noise_is_drawn():
    x0 = np.linspace(-1.0, 1.0, 6)
    kw = dict(HYPER, a=1.0, b=0.5, w=2.0, sigma=1.0)
    runs = bench.per_run_loop("jaguar_signsgd", x0, 3, 20, seed=5, **kw)
    alone = bench.numpy_jaguar_signsgd(x0.copy(), np.zeros(6), 20, rng=np.random.default_rng(6), **kw)[0]
    np.testing.assert_array_equal(runs[1], alone)
    assert not np.array_equal(runs[0], runs[1])


def test_run_tiny_configuration(tmp_path):
    df = bench.run(quick=True, progress=False, signsgd_d=(8,), muon_shapes=((3, 4),), batches=(1, 4),
                   oracles=("noise_free", "gradient_noise"), reps=1, budget_s=0.003,
                   runner=[("jaguar_signsgd", (8,), 4)])
    for col in ("benchmark", "method", "d", "B", "shape", "impl", "run_steps_per_s", "seconds_per_step", "ratio"):
        assert col in df.columns
    assert set(df["impl"]) == {"engine", "numpy_loop", "runner"}
    assert set(df["method"]) == {"jaguar_signsgd", "jaguar_muon"}
    assert len(df) == 2 * 2 * 2 * 2 + 2  # oracles x shapes x B x (engine, numpy) + runner rows
    for col in ("run_steps_per_s", "seconds_per_step", "ratio", "ns_per_run_step_entry"):
        v = df[col].to_numpy(dtype=float)
        assert np.isfinite(v).all() and (v > 0).all(), col
    np.testing.assert_allclose(df["run_steps_per_s"] * df["seconds_per_step"], df["B"])
    assert (df.loc[df["impl"] == "numpy_loop", "ratio"] == 1.0).all()
    assert "linearity" in bench.target_check(df)
    (path,) = bench.plot(df, tmp_path)
    assert path.name == "bench_synthetic_throughput.png" and path.stat().st_size > 0


def test_profile_engine_breakdown():
    r = bench._profile_engine("jaguar_signsgd", (8,), 4, "noise_free", steps=2, reps=1)
    assert r["wall_us"] > 0 and r["wall_one_us"] > 0 and r["ops_per_step"] > 5
    assert 0.0 <= r["bulk_frac"] <= 1.0 and r["top"]


def test_run_rejects_unknown_oracle():
    with pytest.raises(ValueError, match="oracle"):
        bench.run(quick=True, progress=False, oracles=("bogus",))
