r"""Throughput of the batched synthetic engine against a per-run NumPy loop (issue 5).

What is timed
-------------
``engine``: one iteration of a group of ``B`` runs, made exactly as
:func:`zotheory.synthetic.runner.run_group` makes it (same problem from
:mod:`zotheory.synthetic.registry`, :class:`~zotheory.synthetic.noise.StochasticOracle`
with per-run ``sigma``/``Delta`` tensors, per-run ``gamma``/``beta``/``tau`` tensors,
``batch_dims=1``)::

    it = oracle.iteration(x, g_noise)
    state = algo.step(x, it, state, gamma=gamma, generator=g_algo, batch_dims=1, **hp, **options)

on the rate experiments' problems: JAGUAR SignSGD (Algorithm 1) on the separable cosine
(:func:`zotheory.synthetic.experiments.cosine_vector`, ``R^d``) and JAGUAR Muon
(Algorithm 2, ``orthogonalization="ns3"``, ``K = 10`` as the pseudocode) on the
entrywise matrix cosine (:func:`~zotheory.synthetic.experiments.cosine_matrix`, ``m x n``).
``oracle="noise_free"`` is ``sigma = 0``; ``"gradient_noise"`` is ``sigma = 1``
(Assumption 2's ``f(x) + <xi, x>``, ``xi`` drawn once per iteration, uniform profile).

``runner`` (optional rows): :func:`~zotheory.synthetic.runner.run_group`'s step loop, i.e.
the engine plus what the rate experiments compute every step (exact gradient norms at
``x^t`` for the theorem's averages, nuclear norm for matrices, finiteness check). Its
per-step cost is a difference of two horizons, ``(time(T2) - time(T1)) / (T2 - T1)`` with
``T2 = 2 T1``, which cancels the set-up; the result frames (a fixed cost per run) are
skipped and the log rows kept the same for both horizons (``n_log=1``).

``numpy_loop``: the same pseudocode written the way a pilot study is usually written,
one run at a time in NumPy float64 (:func:`numpy_jaguar_signsgd`,
:func:`numpy_jaguar_muon`; :func:`per_run_loop` is the ``for run in range(B)`` form).
Its cost is linear in ``B`` by construction (the runs are independent, sequential and
identical in work), so it is measured on **one run** for ``n`` steps and scaled:
``seconds_per_step(B) = B * seconds_per_run_step``; its ``run_steps_per_s`` does not
depend on ``B``.

Throughput is in **run-steps per second** (one run-step = one iteration of one run):
``run_steps_per_s = B / seconds_per_step``. ``ratio = engine (or runner) throughput /
numpy_loop throughput`` for the same method, oracle, shape and ``B`` (1 on the NumPy rows).
For each problem (method, oracle, shape) the engine at every ``B``, the NumPy loop and the
runner rows are timed in the same process as one alternating set
(:func:`zotheory.benchmarks.timing.interleaved_times`: A B C A B C ...), one thread
(``torch.set_num_threads(1)``; NumPy's OpenBLAS is set to the same thread count through its
``openblas_set_num_threads``, column ``numpy_blas_threads``), so that load on the shared
machine cancels in the ratios and in the comparison across ``B``.

Functions: :func:`run` (the tidy table), :func:`target_check` (the issue's targets: ratio
>= 50 at ``B = 256, d = 100``; cost linear in ``B*d`` out of cache), :func:`profile_summary`
(where the engine's time goes, torch.profiler), :func:`plot`.
Reproduce: ``.venv/bin/python -m zotheory.benchmarks.synthetic [--full] [--out DIR]``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from .timing import interleaved_times

__all__ = [
    "COLUMNS",
    "HYPER",
    "SIGMA",
    "numpy_jaguar_signsgd",
    "numpy_jaguar_muon",
    "numpy_newton_schulz",
    "per_run_loop",
    "Engine",
    "NumpyLoop",
    "run",
    "target_check",
    "profile_summary",
    "plot",
]

COLUMNS = [
    "benchmark", "method", "oracle", "d", "m", "n", "B", "Bd", "shape", "impl",
    "run_steps_per_s", "seconds_per_step", "ratio", "ns_per_run_step_entry",
    "steps_timed", "runs_timed", "reps", "threads",
]

#: Hyperparameters of the timed runs (speed does not depend on them). Per-run tensors in
#: the engine, as the runner passes them.
HYPER = {"gamma": 1e-3, "beta": 0.9, "tau": 1e-4}
#: Gradient-noise level of ``oracle="gradient_noise"``.
SIGMA = 1.0
MUON_OPTIONS = {"orthogonalization": "ns3", "ns_steps": 10}
ORACLES = ("noise_free", "gradient_noise")

FULL = {"signsgd_d": (100, 1000, 10000), "muon_shapes": ((10, 10), (25, 40), (100, 100)),
        "batches": (1, 16, 256), "oracles": ORACLES, "reps": 7, "budget_s": 0.1, "runner": True}
QUICK = {"signsgd_d": (100, 1000), "muon_shapes": ((10, 10), (25, 40)),
         "batches": (1, 16, 256), "oracles": ("noise_free",), "reps": 7, "budget_s": 0.03,
         "runner": ((("jaguar_signsgd", (100,), 256), ("jaguar_muon", (10, 10), 256)))}


# ----------------------------------------------------------------------------- problems


def problem_spec(method: str, shape: Sequence[int]) -> dict:
    """The rate experiments' problem for ``method`` (vector cosine / matrix cosine)."""
    from zotheory.synthetic import experiments

    if method == "jaguar_signsgd":
        (d,) = shape
        return experiments.cosine_vector(int(d))
    if method == "jaguar_muon":
        m, n = shape
        return experiments.cosine_matrix(int(m), int(n))
    raise ValueError(f"method must be 'jaguar_signsgd' or 'jaguar_muon', got {method!r}")


def _cosine_value(x: np.ndarray, a: float, b: float, w: float) -> float:
    """``sum phi(x)``, ``phi(t) = a/2 t^2 + b (1 - cos(w t))`` (the cosine problems, no rotation)."""
    return float(np.sum(0.5 * a * x * x + b * (1.0 - np.cos(w * x))))


# ----------------------------------------------------------------------------- NumPy loops


def numpy_jaguar_signsgd(x: np.ndarray, m: np.ndarray, T: int, *, gamma: float, beta: float, tau: float,
                         a: float, b: float, w: float, sigma: float = 0.0,
                         rng: np.random.Generator | None = None,
                         coords: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Algorithm 1 for ``T`` steps on the separable cosine, one run, NumPy float64.

    ``x`` and ``m`` (momentum) are updated in place and returned. Gradient noise
    (``sigma > 0``): ``f(x, xi) = f(x) + <xi, x>``, ``xi = sigma/sqrt(d) * N(0, I)`` drawn
    once per step. ``coords`` fixes the coordinate sequence (else ``rng.integers(d)``).
    """
    d = x.size
    s = sigma / math.sqrt(d)
    for t in range(T):
        i = int(coords[t]) if coords is not None else rng.integers(d)
        xi = s * rng.standard_normal(d) if sigma > 0 else None
        xp = x.copy()
        xp[i] += tau
        xm = x.copy()
        xm[i] -= tau
        fp = _cosine_value(xp, a, b, w)
        fm = _cosine_value(xm, a, b, w)
        if xi is not None:
            fp += xi @ xp
            fm += xi @ xm
        g = (fp - fm) / (2 * tau)
        m[i] = beta * m[i] + (1 - beta) * g
        x -= gamma * np.sign(m)
    return x, m


def numpy_newton_schulz(A: np.ndarray, K: int = 10) -> np.ndarray:
    """The pseudocode's subroutine: ``A / ||A||_F`` then ``K`` times ``1.5 X - 0.5 X X^T X``."""
    nrm = np.linalg.norm(A)
    if nrm == 0:
        return np.zeros_like(A)
    X = A / nrm
    for _ in range(K):
        X = 1.5 * X - 0.5 * X @ X.T @ X
    return X


def numpy_jaguar_muon(X: np.ndarray, M: np.ndarray, T: int, *, gamma: float, beta: float, tau: float,
                      a: float, b: float, w: float, sigma: float = 0.0, ns_steps: int = 10,
                      rng: np.random.Generator | None = None,
                      coords: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Algorithm 2 for ``T`` steps on the matrix cosine, one run, NumPy float64 (NS with matmuls).

    ``(i_t, j_t) = divmod(p, n)`` for a flat index ``p`` (``coords``, else ``rng.integers(m n)``).
    ``X`` and ``M`` are updated in place and returned.
    """
    m_, n_ = X.shape
    s = sigma / math.sqrt(m_ * n_)
    for t in range(T):
        p = int(coords[t]) if coords is not None else rng.integers(m_ * n_)
        i, j = divmod(p, n_)
        xi = s * rng.standard_normal((m_, n_)) if sigma > 0 else None
        Xp = X.copy()
        Xp[i, j] += tau
        Xm = X.copy()
        Xm[i, j] -= tau
        fp = _cosine_value(Xp, a, b, w)
        fm = _cosine_value(Xm, a, b, w)
        if xi is not None:
            fp += np.vdot(xi, Xp)
            fm += np.vdot(xi, Xm)
        g = (fp - fm) / (2 * tau)
        M[i, j] = beta * M[i, j] + (1 - beta) * g
        X -= gamma * numpy_newton_schulz(M, ns_steps)
    return X, M


def per_run_loop(method: str, x0: np.ndarray, B: int, T: int, *, seed: int = 0, **kw: Any) -> list[np.ndarray]:
    """The pilot-study form: ``for run in range(B): for t in range(T): ...``; final iterates."""
    step = numpy_jaguar_signsgd if method == "jaguar_signsgd" else numpy_jaguar_muon
    out = []
    for run in range(B):
        rng = np.random.default_rng(seed + run)
        x, _ = step(np.array(x0, dtype=np.float64), np.zeros_like(x0, dtype=np.float64), T, rng=rng, **kw)
        out.append(x)
    return out


class NumpyLoop:
    """One NumPy run of ``method`` on the problem of :func:`problem_spec`, continued by :meth:`steps`."""

    def __init__(self, method: str, shape: Sequence[int], oracle: str, *, seed: int = 0,
                 hyper: dict | None = None) -> None:
        from zotheory.synthetic.registry import make_problem

        problem = make_problem(problem_spec(method, shape))
        self.method = method
        self.x = problem.x0.numpy().astype(np.float64)
        self.m = np.zeros_like(self.x)
        self.rng = np.random.default_rng(seed)
        self.kw = dict(HYPER if hyper is None else hyper, a=problem.a, b=problem.b, w=problem.w,
                       sigma=SIGMA if oracle == "gradient_noise" else 0.0)
        if method == "jaguar_muon":
            self.kw["ns_steps"] = MUON_OPTIONS["ns_steps"]

    def steps(self, n: int) -> None:
        fn = numpy_jaguar_signsgd if self.method == "jaguar_signsgd" else numpy_jaguar_muon
        fn(self.x, self.m, n, rng=self.rng, **self.kw)


# ----------------------------------------------------------------------------- the engine


class Engine:
    """A group of ``B`` runs set up as :func:`zotheory.synthetic.runner.run_group` sets it up.

    :meth:`steps` does ``n`` iterations with the runner's two calls per iteration
    (``oracle.iteration`` and ``algo.step`` with ``batch_dims=1``).
    """

    def __init__(self, method: str, shape: Sequence[int], B: int, oracle: str, *, seed: int = 0,
                 hyper: dict | None = None) -> None:
        from zotheory.algorithms import get_algorithm
        from zotheory.synthetic.noise import StochasticOracle
        from zotheory.synthetic.registry import make_problem

        if oracle not in ORACLES:
            raise ValueError(f"oracle must be one of {ORACLES}, got {oracle!r}")
        dtype = torch.float64
        self.problem = make_problem(problem_spec(method, shape))
        sigma = SIGMA if oracle == "gradient_noise" else 0.0
        self.oracle = StochasticOracle(self.problem, sigma=torch.full((B,), sigma, dtype=dtype),
                                       Delta=torch.zeros(B, dtype=dtype), delta_mode="none")
        self.algo = get_algorithm(method)
        self.hp = {k: torch.full((B,), float(v), dtype=dtype) for k, v in (HYPER if hyper is None else hyper).items()}
        self.gamma = self.hp.pop("gamma")
        self.options = dict(MUON_OPTIONS) if method == "jaguar_muon" else {}
        self.g_algo = torch.Generator().manual_seed(seed * 2 + 1)
        self.g_noise = torch.Generator().manual_seed(seed * 2 + 2)
        self.x = self.problem.x0.to(dtype).expand(B, *self.problem.shape).clone()
        self.state = self.algo.init(self.x, batch_dims=1)

    def step(self) -> None:
        it = self.oracle.iteration(self.x, self.g_noise)
        self.state = self.algo.step(self.x, it, self.state, gamma=self.gamma, generator=self.g_algo,
                                    batch_dims=1, **self.hp, **self.options)

    def steps(self, n: int) -> None:
        for _ in range(n):
            self.step()


def _runner_specs(method: str, shape: Sequence[int], B: int, oracle: str, T: int) -> list:
    from zotheory.synthetic.runner import RunSpec, group_runs

    hyper = dict(HYPER, **(MUON_OPTIONS if method == "jaguar_muon" else {}))
    noise = {"sigma": SIGMA if oracle == "gradient_noise" else 0.0, "Delta": 0.0, "delta_mode": "none"}
    specs = [RunSpec("bench_synthetic", problem_spec(method, shape), method, hyper, T, seed, noise)
             for seed in range(B)]
    (group,) = group_runs(specs)
    return group


# ----------------------------------------------------------------------------- timing


def _openblas():
    """NumPy's bundled OpenBLAS (ctypes handle, get, set), or None when it cannot be found."""
    import ctypes
    import glob
    import os

    libs = glob.glob(os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs", "*openblas*.so*"))
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for get, set_ in (("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
                          ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
                          ("openblas_get_num_threads", "openblas_set_num_threads")):
            if hasattr(lib, get) and hasattr(lib, set_):
                return getattr(lib, get), getattr(lib, set_)
    return None


class _BlasThreads:
    """Context: NumPy's BLAS limited to ``n`` threads (best effort; the torch side uses
    ``torch.set_num_threads``). ``self.threads`` is the count in force (-1 if unknown)."""

    def __init__(self, n: int) -> None:
        self.n, self.old, self.threads, self.api = int(n), None, -1, _openblas()

    def __enter__(self) -> "_BlasThreads":
        if self.api is not None:
            get, set_ = self.api
            self.old = int(get())
            set_(self.n)
            self.threads = int(get())
        return self

    def __exit__(self, *exc) -> None:
        if self.api is not None and self.old is not None:
            self.api[1](self.old)



def _calibrate(fn: Callable[[int], None], budget_s: float, cap: int = 100_000) -> int:
    """Steps per timed call so that one call takes about ``budget_s`` (after a warm-up call)."""
    fn(1)
    t0 = time.perf_counter()
    fn(1)
    one = max(time.perf_counter() - t0, 1e-7)
    if one < budget_s / 20:  # a better estimate for cheap steps
        n = max(1, int(budget_s / 20 / one))
        t0 = time.perf_counter()
        fn(n)
        one = max((time.perf_counter() - t0) / n, 1e-7)
    return int(min(cap, max(1, round(budget_s / one))))


def _shape_str(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


def _row(method, oracle, shape, B, impl, seconds_per_step, steps, runs, reps) -> dict:
    d = math.prod(shape)
    return {
        "benchmark": "synthetic_throughput", "method": method, "oracle": oracle, "d": d,
        "m": shape[0] if len(shape) == 2 else None, "n": shape[1] if len(shape) == 2 else None,
        "B": B, "Bd": B * d, "shape": _shape_str(shape), "impl": impl,
        "run_steps_per_s": B / seconds_per_step, "seconds_per_step": seconds_per_step,
        "ratio": float("nan"), "ns_per_run_step_entry": seconds_per_step / (B * d) * 1e9,
        "steps_timed": steps, "runs_timed": runs, "reps": reps, "threads": torch.get_num_threads(),
    }


def run(quick: bool = True, progress: bool = True, *, signsgd_d: Iterable[int] | None = None,
        muon_shapes: Iterable[Sequence[int]] | None = None, batches: Iterable[int] | None = None,
        oracles: Iterable[str] | None = None, reps: int | None = None, budget_s: float | None = None,
        runner: bool | Iterable[tuple[str, Sequence[int], int]] | None = None,
        threads: int = 1):
    """Throughput of the engine (and runner) against the per-run NumPy loop: a tidy DataFrame.

    Defaults: :data:`QUICK` (``quick=True``, well under a minute) or :data:`FULL`; every
    keyword overrides one entry. ``budget_s`` is the target duration of one timed call;
    ``runner`` is ``True`` (runner rows for every configuration), ``False``, or a list of
    ``(method, shape, B)`` to add runner rows for. Columns: :data:`COLUMNS`.
    """
    import pandas as pd

    cfg = dict(QUICK if quick else FULL)
    for k, v in (("signsgd_d", signsgd_d), ("muon_shapes", muon_shapes), ("batches", batches),
                 ("oracles", oracles), ("reps", reps), ("budget_s", budget_s), ("runner", runner)):
        if v is not None:
            cfg[k] = v
    for o in cfg["oracles"]:
        if o not in ORACLES:
            raise ValueError(f"oracles must be among {ORACLES}, got {o!r}")
    configs = [("jaguar_signsgd", (int(d),)) for d in cfg["signsgd_d"]]
    configs += [("jaguar_muon", (int(m), int(n))) for m, n in cfg["muon_shapes"]]
    runner_set = cfg["runner"]
    if runner_set is True or runner_set is False:
        want_runner = lambda method, shape, B: bool(runner_set)  # noqa: E731
    else:
        chosen = {(mth, tuple(int(s) for s in shp), int(b)) for mth, shp, b in runner_set}
        want_runner = lambda method, shape, B: (method, tuple(shape), B) in chosen  # noqa: E731
    budget = float(cfg["budget_s"])
    nreps = int(cfg["reps"])

    old_threads = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    blas = _BlasThreads(threads).__enter__()
    rows: list[dict] = []
    t_start = time.perf_counter()
    try:
        for oracle in cfg["oracles"]:
            for method, shape in configs:
                # Every B of this problem, the NumPy loop and the runner rows: one interleaved set,
                # so that the ratios (and the comparison across B) see the same machine load.
                loop = NumpyLoop(method, shape, oracle)
                n_np = _calibrate(loop.steps, budget)
                fns: dict[str, Callable[[], object]] = {"numpy": lambda: loop.steps(n_np)}
                engines, n_eng, runner_T = {}, {}, {}
                for B in (int(b) for b in cfg["batches"]):
                    eng = engines[B] = Engine(method, shape, B, oracle)
                    n_eng[B] = _calibrate(eng.steps, budget)
                    fns[f"engine{B}"] = (lambda e=eng, n=n_eng[B]: e.steps(n))
                    if want_runner(method, shape, B):
                        T1 = int(max(2, min(999, n_eng[B])))
                        runner_T[B] = T1
                        for T in (T1, 2 * T1):
                            g = _runner_specs(method, shape, B, oracle, T)
                            fns[f"runner{B}_{T}"] = (lambda g=g: _runner_loop_seconds(g))
                times = interleaved_times(fns, reps=nreps, warmup=1)
                t_np_run_step = times["numpy"] / n_np  # one run measured, linear in B by construction
                for B in engines:
                    t_eng = times[f"engine{B}"] / n_eng[B]
                    r_np = _row(method, oracle, shape, B, "numpy_loop", t_np_run_step * B, n_np, 1, nreps)
                    r_np["ratio"] = 1.0
                    r_eng = _row(method, oracle, shape, B, "engine", t_eng, n_eng[B], B, nreps)
                    r_eng["ratio"] = r_eng["run_steps_per_s"] / r_np["run_steps_per_s"]
                    rows += [r_eng, r_np]
                    extra = ""
                    if B in runner_T:
                        T1 = runner_T[B]
                        per_step = max(times[f"runner{B}_{2 * T1}"] - times[f"runner{B}_{T1}"], 1e-9) / T1
                        r_run = _row(method, oracle, shape, B, "runner", per_step, T1, B, nreps)
                        r_run["ratio"] = r_run["run_steps_per_s"] / r_np["run_steps_per_s"]
                        rows.append(r_run)
                        extra = f"  runner {per_step * 1e3:.3f} ms/step x{r_run['ratio']:.1f}"
                    if progress:
                        print(f"[bench synthetic] {method:14s} {oracle:14s} {_shape_str(shape):>7s} B={B:<4d} "
                              f"engine {t_eng * 1e3:8.3f} ms/step {r_eng['run_steps_per_s']:10.4g} run-steps/s "
                              f"numpy {r_np['run_steps_per_s']:9.4g} run-steps/s  x{r_eng['ratio']:.1f}{extra}"
                              f"  [{time.perf_counter() - t_start:.0f}s]", flush=True)
    finally:
        torch.set_num_threads(old_threads)
        blas.__exit__()
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["numpy_blas_threads"] = blas.threads
    return df


class _LoopDone(Exception):
    """Raised by the progress callback after the last step: skips run_group's result frames."""


def _runner_loop_seconds(group) -> float:
    """Seconds from calling run_group to the end of its step loop (its last progress call).

    run_group reports progress after its last step and only then builds the result frames
    (a fixed cost per run, ~ms, independent of T); the callback stops it there. ``n_log=1``
    (3 log rows per run: 1, T/2, T) so that a difference of two horizons does not count log
    rows (the experiments' ~40 rows per run cost the same whatever T is).
    """
    from zotheory.synthetic.runner import run_group

    total = sum(s.T for s in group[:1]) * len(group)
    seen = [0]
    t0 = time.perf_counter()
    stamp = [float("nan")]

    def progress(n: int) -> None:
        seen[0] += n
        if seen[0] >= total:
            stamp[0] = time.perf_counter()
            raise _LoopDone

    try:
        run_group(group, progress=progress, n_log=1)
    except _LoopDone:
        pass
    return stamp[0] - t0


# ----------------------------------------------------------------------------- targets


def _slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    if len(xs) < 2:
        return float("nan")
    return float(np.polyfit(np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float)), 1)[0])


def linearity(df, *, min_bd: float = 1e5):
    """Log-log slope of the engine's seconds/step against ``B*d`` (SignSGD) or ``B`` (Muon, per shape).

    SignSGD uses the points with ``B*d >= min_bd`` (out of L1/L2; at least the two largest);
    slope 1 = cost linear in ``B*d``. Muon's cost is ``B`` times a Newton-Schulz cost cubic in
    the shape, so its slope is taken against ``B`` at fixed shape (``B >= 16``).
    """
    import pandas as pd

    out = []
    eng = df[df["impl"] == "engine"]
    for (method, oracle), g in eng.groupby(["method", "oracle"], sort=True):
        if method == "jaguar_signsgd":
            g = g.sort_values("Bd")
            sel = g[g["Bd"] >= min_bd]
            if len(sel) < 2:
                sel = g.tail(2)
            out.append({"method": method, "oracle": oracle, "against": "B*d", "shape": "all",
                        "points": len(sel), "Bd_min": int(sel["Bd"].min()) if len(sel) else None,
                        "slope": _slope(sel["Bd"], sel["seconds_per_step"])})
        else:
            for shape, gs in g.groupby("shape", sort=False):
                sel = gs[gs["B"] >= 16].sort_values("B")
                out.append({"method": method, "oracle": oracle, "against": "B", "shape": shape,
                            "points": len(sel), "Bd_min": int(sel["Bd"].min()) if len(sel) else None,
                            "slope": _slope(sel["B"], sel["seconds_per_step"])})
    return pd.DataFrame(out)


def target_check(df, *, target_ratio: float = 50.0) -> str:
    """The issue's targets, measured: ratio at ``B = 256, d = 100`` and linearity in ``B*d``."""
    lines = []
    sel = df[(df["impl"] == "engine") & (df["method"] == "jaguar_signsgd") & (df["B"] == 256) & (df["d"] == 100)]
    for _, r in sel.iterrows():
        ok = "met" if r["ratio"] >= target_ratio else "NOT met"
        lines.append(f"- JAGUAR SignSGD, {r['oracle']}, B=256, d=100: engine/NumPy-loop = {r['ratio']:.1f}x "
                     f"(target >= {target_ratio:g}x: {ok}); engine {r['seconds_per_step'] * 1e3:.3f} ms/step "
                     f"= {r['run_steps_per_s']:.3g} run-steps/s")
        one = df[(df["impl"] == "engine") & (df["method"] == "jaguar_signsgd") & (df["B"] == 1) & (df["d"] == 100)
                 & (df["oracle"] == r["oracle"])]
        np_rate = df[(df["impl"] == "numpy_loop") & (df["method"] == "jaguar_signsgd") & (df["B"] == 256)
                     & (df["d"] == 100) & (df["oracle"] == r["oracle"])]["run_steps_per_s"]
        if len(one) and len(np_rate):
            bulk = r["seconds_per_step"] - float(one["seconds_per_step"].iloc[0])
            if bulk > 0:
                lines.append(f"  - without the fixed per-step overhead (the B=1 step, "
                             f"{float(one['seconds_per_step'].iloc[0]) * 1e3:.3f} ms) the remaining {bulk * 1e3:.3f} ms "
                             f"of passes over the (256, 100) state would allow at most "
                             f"{256 / bulk / float(np_rate.iloc[0]):.0f}x")
    sel = df[(df["impl"] == "engine") & (df["method"] == "jaguar_muon") & (df["B"] == 256)]
    for _, r in sel.iterrows():
        lines.append(f"- JAGUAR Muon, {r['oracle']}, B=256, {r['shape']}: engine/NumPy-loop = {r['ratio']:.1f}x")
    for _, r in linearity(df).iterrows():
        lines.append(f"- linearity {r['method']} {r['oracle']} ({r['shape']}): log-log slope of s/step vs "
                     f"{r['against']} = {r['slope']:.2f} over {r['points']} points from {r['Bd_min']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- profile


_TRANSCENDENTAL = ("cos", "sin", "exp", "log", "normal_", "randn", "tanh", "sqrt", "pow")


def _numel(shapes: Any) -> int:
    return max((math.prod(s) for s in (shapes or []) if isinstance(s, (list, tuple))
                and all(isinstance(v, int) for v in s)), default=0)


def _profile_engine(method: str, shape: Sequence[int], B: int, oracle: str, steps: int, reps: int) -> dict:
    """Wall time per step at ``B`` and at ``B = 1`` (interleaved), and a torch.profiler op breakdown."""
    from torch.profiler import ProfilerActivity, profile

    eng, one = Engine(method, shape, B, oracle), Engine(method, shape, 1, oracle)
    n_one = max(steps, _calibrate(one.steps, 0.02))
    t = interleaved_times({"B": lambda: eng.steps(steps), "one": lambda: one.steps(n_one)}, reps=reps, warmup=1)
    wall, wall_one = t["B"] / steps, t["one"] / n_one
    bd = B * math.prod(shape)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        eng.steps(steps)
    per_op: dict[str, float] = {}
    n_top = 0
    bulk = transc = 0.0
    for ev in prof.events():
        if ev.cpu_parent is not None or not ev.name.startswith("aten::"):
            continue  # top-level ops only (their time includes the ops they call)
        n_top += 1
        us = ev.cpu_time_total / steps
        per_op[ev.name] = per_op.get(ev.name, 0.0) + us
        if _numel(ev.input_shapes) >= bd / 2 or ev.name in ("aten::randn", "aten::normal_"):
            bulk += us
            if ev.name.replace("aten::", "") in _TRANSCENDENTAL:
                transc += us
    total = sum(per_op.values())
    return {"method": method, "shape": _shape_str(shape), "B": B, "Bd": bd, "oracle": oracle,
            "wall_us": wall * 1e6, "wall_one_us": wall_one * 1e6, "ops_per_step": n_top / steps,
            "op_total_us": total, "bulk_frac": bulk / total if total else 0.0,
            "transc_frac_of_bulk": transc / bulk if bulk else 0.0,
            "top": sorted(((k.replace("aten::", ""), v / total) for k, v in per_op.items()),
                          key=lambda kv: -kv[1])[:5]}


def profile_summary(quick: bool = True, *, threads: int = 1) -> str:
    """Where the engine's time goes, as a short markdown paragraph and table.

    For JAGUAR SignSGD at ``B = 256, d = 100`` and at a large ``B*d`` (``d = 1000`` quick,
    ``10^4`` full), each oracle, and JAGUAR Muon at ``B = 256`` (10x10):

    * the wall time per step at ``B = 256`` and at ``B = 1`` (same problem, timed interleaved):
      at ``B = 1`` the passes over the state are negligible, so ``wall(B=1)`` is the fixed
      per-step overhead (Python, checks, op launches of ~40-60 small ops) and
      ``overhead share = wall(B=1) / wall(B=256)``;
    * torch.profiler (1 thread, ``record_shapes``) over a few steps: the top-level aten ops
      per step, the share of op time in *bulk* ops (an input with at least ``B*d/2`` entries,
      or the noise draw), and how much of that is transcendental (cos, the float64 normal
      draw: compute bound) rather than simple passes (mul/add/sub/sum/sign: memory bound
      once ``B*d*8`` bytes leave the 1-2 MB L2).
    """
    old = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        big = 1000 if quick else 10000
        cases = [("jaguar_signsgd", (100,), 256, "noise_free"), ("jaguar_signsgd", (100,), 256, "gradient_noise"),
                 ("jaguar_signsgd", (big,), 256, "noise_free"), ("jaguar_signsgd", (big,), 256, "gradient_noise"),
                 ("jaguar_muon", (10, 10), 256, "noise_free")]
        res = []
        for method, shape, B, oracle in cases:
            steps = 30 if B * math.prod(shape) <= 30000 else (4 if quick else 3)
            res.append(_profile_engine(method, shape, B, oracle, steps, reps=5))
    finally:
        torch.set_num_threads(old)
    lines = ["| config | oracle | us/step at B | us/step at B=1 (overhead) | overhead share | ns per run-step "
             "entry | aten ops/step | bulk share of op time (transcendental part) | top ops (% of op time) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in res:
        share = min(1.0, r["wall_one_us"] / r["wall_us"])
        r["share"] = share
        top = ", ".join(f"{k} {100 * v:.0f}" for k, v in r["top"])
        lines.append(f"| {r['method'].replace('jaguar_', '')} {r['shape']}, B={r['B']} | {r['oracle']} | "
                     f"{r['wall_us']:.0f} | {r['wall_one_us']:.0f} | {100 * share:.0f}% | "
                     f"{r['wall_us'] * 1e3 / r['Bd']:.1f} | {r['ops_per_step']:.0f} | {100 * r['bulk_frac']:.0f}% "
                     f"({100 * r['transc_frac_of_bulk']:.0f}%) | {top} |")

    def verdict(r: dict) -> str:
        if r["share"] >= 0.5:
            return (f"op-launch/Python overhead bound ({100 * r['share']:.0f}% of the step is the fixed per-step "
                    f"cost of ~{r['ops_per_step']:.0f} ops)")
        mb = r["Bd"] * 8 / 2**20
        where = (f"memory bound: a (B, d) float64 tensor is {mb:.1f} MiB, beyond L2" if mb > 1.0 else
                 f"in cache: a (B, d) float64 tensor is {mb * 1024:.0f} KiB")
        return (f"bound by the passes over the (B, d) state ({100 * (1 - r['share']):.0f}% of the step; of the "
                f"bulk op time {100 * r['transc_frac_of_bulk']:.0f}% is transcendental, i.e. compute bound, the rest "
                f"simple elementwise passes, {where})")

    small, small_noisy, large, large_noisy, muon = res
    text = (
        f"**Where the engine's time goes** (1 thread; fixed overhead = the same step at B=1). "
        f"SignSGD at B=256, d=100: noise-free it is {verdict(small)}; with gradient noise {verdict(small_noisy)}. "
        f"At B=256, d={big}: noise-free {verdict(large)}; with gradient noise {verdict(large_noisy)}. "
        f"Nearly all bulk work is the oracle itself (two full evaluations of f per step: ~8 elementwise passes "
        f"each, one of them cos; with noise also a float64 normal draw of B*d entries, which torch makes at "
        f"tens of ns/entry); the algorithm adds only sign(m), gamma*sign and the move. Muon 10x10 at B=256: "
        f"{verdict(muon)}; its top op is the batched matmul of Newton-Schulz (K=10, 2 bmm per iteration).\n\n"
        + "\n".join(lines)
    )
    return text


# ----------------------------------------------------------------------------- figure


def plot(df, figures_dir) -> list[Path]:
    """``bench_synthetic_throughput.png``: run-steps/s vs ``B*d`` (log-log), one panel per method
    and oracle, lines per ``B``: engine solid, runner dotted, per-run NumPy loop dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures_dir = Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    methods = [m for m in ("jaguar_signsgd", "jaguar_muon") if m in set(df["method"])]
    oracles = [o for o in ORACLES if o in set(df["oracle"])]
    titles = {"jaguar_signsgd": "JAGUAR SignSGD (Alg. 1), separable cosine",
              "jaguar_muon": "JAGUAR Muon (Alg. 2, NS3 K=10), matrix cosine"}
    fig, axes = plt.subplots(len(oracles), len(methods), figsize=(6.2 * len(methods), 4.4 * len(oracles) + 0.9),
                             squeeze=False)
    batches = sorted(set(df["B"]))
    colors = dict(zip(batches, plt.get_cmap("viridis")(np.linspace(0.0, 0.85, max(1, len(batches))))))
    styles = {"engine": ("-", "o", "batched engine (solid)"),
              "runner": (":", "s", "run_group step loop: engine + per-step metrics (dotted)"),
              "numpy_loop": ("--", "x", "per-run NumPy loop, scaled from one run (dashed)")}
    for i, oracle in enumerate(oracles):
        for j, method in enumerate(methods):
            ax = axes[i][j]
            sub = df[(df["method"] == method) & (df["oracle"] == oracle)]
            for B in batches:
                for impl, (ls, mk, _) in styles.items():
                    s = sub[(sub["B"] == B) & (sub["impl"] == impl)].sort_values("Bd")
                    if len(s):
                        ax.plot(s["Bd"], s["run_steps_per_s"], ls=ls, marker=mk, color=colors[B])
                if B == batches[-1]:
                    for _, r in sub[(sub["B"] == B) & (sub["impl"] == "engine")].iterrows():
                        ax.annotate(f"{'d=' if r['m'] is None or r['m'] != r['m'] else ''}{r['shape']}",
                                    (r["Bd"], r["run_steps_per_s"]), textcoords="offset points",
                                    xytext=(4, 4), fontsize=7, color=colors[B])
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("B x d (runs x entries per run)")
            ax.set_ylabel("run-steps per second")
            ax.set_title(f"{titles[method]}\noracle: {oracle.replace('_', ' ')}", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colors[B], lw=2.5, label=f"B = {B}") for B in batches]
    handles += [Line2D([], [], color="0.3", ls=ls, marker=mk, label=lab) for ls, mk, lab in styles.values()]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 3), fontsize=8, frameon=False)
    fig.suptitle(f"Synthetic engine throughput vs per-run NumPy loop ({int(df['threads'].iloc[0])} thread)",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0.55 / (4.4 * len(oracles) + 0.9), 1, 1))
    path = figures_dir / "bench_synthetic_throughput.png"
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return [path]


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="the full grid (default: quick)")
    p.add_argument("--out", default=None, help="folder for the csv, the markdown and the figure")
    p.add_argument("--no-profile", action="store_true")
    a = p.parse_args(argv)
    quick = not a.full
    df = run(quick=quick, progress=True)
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(df[["method", "oracle", "shape", "B", "impl", "seconds_per_step", "run_steps_per_s", "ratio"]])
    text = "## Targets\n\n" + target_check(df)
    if not a.no_profile:
        text += "\n\n" + profile_summary(quick=quick)
    print(text)
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        df.to_csv(out / "bench_synthetic.csv", index=False)
        (out / "bench_synthetic.md").write_text(text + "\n")
        print(plot(df, out))


if __name__ == "__main__":
    main()
