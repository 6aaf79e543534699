"""The rate experiments of issue 3: each is a function ``preset -> list[RunSpec]``.

Every experiment is one config (the functions below, sized by the preset) and
one command: ``zotheory rates --only NAME`` (add ``--full`` for the
publication-size sweep). Hyperparameters come from the corollary schedules in
:mod:`zotheory.bounds` wherever the experiment is about a tuned rate; where an
experiment fixes them by hand it says why.

Presets: ``quick`` (all experiments, reduced sizes, a few minutes on 2 cores; CI
runs a smaller ``smoke`` preset) and ``full`` (the sizes behind the committed
figures and table).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from zotheory import bounds

from .registry import make_problem
from .runner import RunSpec

PRESETS = ("smoke", "quick", "full")

# Tiny tau for noise-free runs: Corollary tau = sqrt(Delta/L) is 0 when Delta = 0,
# and tau must be > 0. In float64 the central difference with tau = 1e-6 has
# rounding error ~1e-10 / tau = 1e-10 per coordinate, far below every measured level.
TAU_NOISE_FREE = 1e-6


@dataclass(frozen=True)
class Size:
    seeds: int
    T_grid: tuple[int, ...]  # horizons of the T sweeps
    T_long: int  # horizon of the fixed-T experiments (floors, comparisons)
    grid_points: int  # points of the tau / Delta grids
    T_dimension: int  # largest horizon of the dimension experiment
    T_muon_sweep: int  # largest horizon of the JAGUAR Muon T sweep
    T_beta: int  # largest horizon of the beta ablation


SIZES: dict[str, Size] = {
    "smoke": Size(seeds=2, T_grid=(30, 100, 300), T_long=400, grid_points=3, T_dimension=300,
                  T_muon_sweep=300, T_beta=300),
    "quick": Size(seeds=6, T_grid=(100, 316, 1000, 3162, 10000), T_long=10000, grid_points=7,
                  T_dimension=3162, T_muon_sweep=10000, T_beta=10000),
    "full": Size(
        seeds=16,
        T_grid=(100, 316, 1000, 3162, 10000, 31623, 100000, 316228, 1000000),
        T_long=100000,
        grid_points=13,
        T_dimension=31623,
        T_muon_sweep=100000,
        T_beta=100000,
    ),
}

# Problem families used below (all constants exact; see synthetic/problems.py).
# phi(t) = a/2 t^2 + b (1 - cos(w t)): L = a + b w^2 = 3, non-convex since b w^2 = 2 > a = 1.
def cosine_vector(d: int, x0_scale: float = 2.0, seed: int = 0) -> dict:
    return {"family": "separable_cosine", "d": d, "a": 1.0, "b": 0.5, "w": 2.0,
            "x0_scale": x0_scale, "seed": seed}


def cosine_matrix(m: int, n: int, x0_scale: float = 2.0, seed: int = 0, scale: float = 1.0) -> dict:
    return {"family": "entrywise_cosine_matrix", "m": m, "n": n, "a": 1.0 * scale, "b": 0.5 * scale,
            "w": 2.0, "x0_scale": x0_scale, "seed": seed}


def kinked(d: int, x0_scale: float = 0.05, seed: int = 0) -> dict:
    # eps = (3 - sqrt 5)/2 maximises c(eps) = eps (1 - sqrt eps)/(1 + sqrt eps) ~ 0.0902, the
    # gradient at which a sign method driven by central differences stalls (KinkedQuadratic docs).
    return {"family": "kinked_quadratic", "d": d, "L": 1.0, "eps": (3 - math.sqrt(5)) / 2,
            "x0_scale": x0_scale, "seed": seed}


def _seeds(size: Size) -> range:
    return range(size.seeds)


def _problem_constants(spec: dict) -> dict:
    p = make_problem(spec)
    return {"L": p.L, "delta0": p.delta0, "d": p.d, "shape": p.shape}


def _thm1_optimal(problem: dict, T: int, sigma: float, Delta: float) -> dict:
    c = _problem_constants(problem)
    s = bounds.theorem1_optimal_schedule(T=T, d=c["d"], L=c["L"], delta0=c["delta0"], sigma=sigma, Delta=Delta,
                                         tau_floor=TAU_NOISE_FREE)
    return {"gamma": float(s["gamma"]), "beta": float(s["beta"]), "tau": float(s["tau"])}


def _thm2_optimal(problem: dict, T: int, sigma: float, Delta: float) -> dict:
    c = _problem_constants(problem)
    m, n = c["shape"]
    # "corrected": the balance of the terms the proof actually gives (docs/bounds.md); the
    # printed corollary's gamma has m^{3/2} where the derivation has m (Frobenius norm of a polar factor).
    s = bounds.theorem2_optimal_schedule(T=T, m=m, n=n, L=c["L"], delta0=c["delta0"], sigma=sigma, Delta=Delta,
                                         tau_floor=TAU_NOISE_FREE, tuning="corrected")
    return {"gamma": float(s["gamma"]), "beta": float(s["beta"]), "tau": float(s["tau"])}


def _noise(sigma: float = 0.0, Delta: float = 0.0, mode: str = "none") -> dict:
    return {"sigma": float(sigma), "Delta": float(Delta), "delta_mode": mode}


# ----------------------------------------------------------------------------- a
def t_sweep(preset: str) -> list[RunSpec]:
    """T sweep under the optimal-tuning schedule: slope -1/2 (sigma = 0) and -1/4 (sigma > 0)."""
    size = SIZES[preset]
    specs = []
    vec = cosine_vector(d=8)
    mat = cosine_matrix(6, 4)
    for cond, sigma in (("deterministic", 0.0), ("stochastic", 1.0)):
        for T in size.T_grid:
            hv = _thm1_optimal(vec, T, sigma, 0.0)
            hm = _thm2_optimal(mat, T, sigma, 0.0)
            hm = {**hm, "orthogonalization": "exact"}
            for seed in _seeds(size):
                specs.append(RunSpec("t_sweep", vec, "jaguar_signsgd", hv, T, seed, _noise(sigma),
                                     {"condition": cond, "schedule": "thm1-optimal"}))
                if T <= size.T_muon_sweep:
                    specs.append(RunSpec("t_sweep", mat, "jaguar_muon", hm, T, seed, _noise(sigma),
                                         {"condition": cond, "schedule": "thm2-optimal"}))
    return specs


# ----------------------------------------------------------------------------- b
def tau_sweep(preset: str) -> list[RunSpec]:
    """tau sweep at a small step: +1 arm (kink), -1 arm (oracle noise), the V with noise.

    The floors are asymptotic levels, so the runs start near the minimiser
    (x0_scale = 1e-6) with a step proportional to the floor the bound predicts for
    that tau, ``gamma = (c L tau + Delta/tau) / (300 L)`` (c = the kinked problem's
    stall coefficient ~ 0.09): the oscillation floor ~ L gamma stays far below the
    measured level, and every tau settles in a similar number of steps. The
    reported level is the tail average over [T/2, T).
    """
    size = SIZES[preset]
    taus = np.logspace(-5, 0, size.grid_points).tolist()
    T = size.T_long
    conditions = [
        ("kinked, no oracle noise", kinked(8, x0_scale=1e-6), _noise()),
        ("kinked, adversarial Delta=1e-6", kinked(8, x0_scale=1e-6), _noise(Delta=1e-6, mode="adversarial")),
        ("kinked, uniform Delta=1e-6", kinked(8, x0_scale=1e-6), _noise(Delta=1e-6, mode="uniform")),
        ("smooth cosine, adversarial Delta=1e-6", cosine_vector(8, x0_scale=1e-6),
         _noise(Delta=1e-6, mode="adversarial")),
    ]
    specs = []
    for cond, prob, noise in conditions:
        p = make_problem(prob)
        c = getattr(p, "stall_coefficient", 0.0)  # smooth problem: O(tau^2) bias, ~0 near the minimiser
        for tau in taus:
            # gamma ~ (expected floor) / (300 L): the oscillation floor ~ L gamma stays well below
            # the floor being measured, and the stall point (at distance ~ floor / L) is reached
            # in a few hundred steps whatever tau is.
            gamma = (c * p.L * tau + noise["Delta"] / tau) / (300 * p.L)
            for seed in range(max(2, size.seeds // 3)):
                specs.append(RunSpec("tau_sweep", prob, "jaguar_signsgd",
                                     {"gamma": gamma, "beta": 0.9, "tau": float(tau)}, T, seed, noise,
                                     {"condition": cond}))
    return specs


# ----------------------------------------------------------------------------- c
def delta_floor(preset: str) -> list[RunSpec]:
    """Oracle-noise floor: with tau = sqrt(Delta/L) the plateau should scale like d sqrt(L Delta).

    As in tau_sweep: start near the minimiser, gamma = tau / 1000, tail average.
    """
    size = SIZES[preset]
    deltas = np.logspace(-9, -3, size.grid_points).tolist()
    T = size.T_long
    specs = []
    for mode in ("adversarial", "uniform"):
        prob = kinked(8, x0_scale=1e-5)
        L = _problem_constants(prob)["L"]
        for Delta in deltas:
            tau = math.sqrt(Delta / L)
            for seed in range(max(2, size.seeds // 3)):
                specs.append(RunSpec("delta_floor", prob, "jaguar_signsgd",
                                     {"gamma": tau / 1000, "beta": 0.9, "tau": tau}, T, seed,
                                     _noise(Delta=Delta, mode=mode), {"condition": f"{mode} noise"}))
    return specs


# ----------------------------------------------------------------------------- d
def beta_ablation(preset: str) -> list[RunSpec]:
    """beta = 0 against the schedule beta = 1 - T^{-1/2} under gradient noise (arbitrary tuning)."""
    size = SIZES[preset]
    prob = cosine_vector(d=8, x0_scale=0.5)
    c = _problem_constants(prob)
    specs = []
    for T in [T for T in size.T_grid[1:] if T <= size.T_beta]:
        # gamma0 = 20: with gamma0 = 1 the smallest T cannot even cover the distance to the
        # minimiser (gamma T = gamma0 T^{1/4} / d), and every beta would sit in the transient.
        sched = bounds.theorem1_arbitrary_schedule(T=T, d=c["d"], gamma0=20.0, L=c["L"], Delta=0.0,
                                                   tau_floor=TAU_NOISE_FREE)
        arms = [
            ("beta=0", float(sched["gamma"]), 0.0),
            ("beta=0.9", float(sched["gamma"]), 0.9),
            ("beta=1-T^-1/2", float(sched["gamma"]), float(sched["beta"])),
            # constant gamma: the regime where beta = 0 can only reach a noise-sized neighbourhood
            ("constant gamma=1e-3, beta=0", 1e-3, 0.0),
            ("constant gamma=1e-3, beta=1-T^-1/2", 1e-3, float(sched["beta"])),
        ]
        for label, gamma, beta in arms:
            hp = {"gamma": gamma, "beta": beta, "tau": TAU_NOISE_FREE}
            for seed in _seeds(size):
                specs.append(RunSpec("beta_ablation", prob, "jaguar_signsgd", hp, T, seed, _noise(sigma=1.0),
                                     {"condition": label, "schedule": "thm1-arbitrary" if "constant" not in label
                                      else "constant gamma"}))
    return specs


# ----------------------------------------------------------------------------- e
def dimension(preset: str) -> list[RunSpec]:
    """Iterations to a target vs d (vector) and vs m, n separately (matrix), optimal tuning, sigma = 0."""
    size = SIZES[preset]
    dims = {"smoke": (4, 8), "quick": (4, 8, 16, 32), "full": (4, 8, 16, 32, 64)}[preset]
    ms = {"smoke": (4, 8), "quick": (4, 8, 16), "full": (4, 8, 16, 32)}[preset]
    ns = {"smoke": (2, 4), "quick": (2, 4, 8), "full": (2, 4, 8, 16)}[preset]
    # small horizons too, so the smallest problems still start above the common target
    grid = [10, 31] + [T for T in size.T_grid if T <= size.T_dimension]
    specs = []
    for d in dims:
        # ||x0||_2 = 2 for every d, so delta0 is (nearly) independent of d
        prob = cosine_vector(d=d, x0_scale=2.0 / math.sqrt(d))
        for T in grid:
            hp = _thm1_optimal(prob, T, 0.0, 0.0)
            for seed in _seeds(size):
                specs.append(RunSpec("dimension", prob, "jaguar_signsgd", hp, T, seed, _noise(),
                                     {"condition": "vector", "d": d}))
    shapes = [(m, ns[len(ns) // 2]) for m in ms] + [(max(ms), n) for n in ns]
    for m, n in sorted(set(shapes)):
        prob = cosine_matrix(m, n, x0_scale=2.0 / math.sqrt(m * n))
        for T in grid:
            hp = {**_thm2_optimal(prob, T, 0.0, 0.0), "orthogonalization": "exact"}
            for seed in _seeds(size):
                specs.append(RunSpec("dimension", prob, "jaguar_muon", hp, T, seed, _noise(),
                                     {"condition": "matrix", "m": m, "n": n}))
    return specs


# ----------------------------------------------------------------------------- f
def jaguar_vs_gaussian(preset: str) -> list[RunSpec]:
    """Same oracle budget: JAGUAR SignSGD vs ZO-SignSGD and ZO-SGD with Gaussian two-point estimates."""
    size = SIZES[preset]
    prob = cosine_vector(d=16)
    T = size.T_long
    specs = []
    gammas = np.logspace(-4, 0, 5).tolist()
    for sigma in (0.0, 1.0):
        for algo, extra in (("jaguar_signsgd", {"beta": 0.9}), ("zo_signsgd", {}), ("zo_sgd", {})):
            for gamma in gammas:
                g = gamma if algo != "zo_sgd" else gamma / 10
                hp = {"gamma": float(g), "tau": TAU_NOISE_FREE, **extra}
                for seed in _seeds(size):
                    specs.append(RunSpec("jaguar_vs_gaussian", prob, algo, hp, T, seed, _noise(sigma=sigma),
                                         {"condition": f"sigma={sigma:g}"}))
    return specs


# ----------------------------------------------------------------------------- g
def muon_orthogonalization(preset: str) -> list[RunSpec]:
    """JAGUAR Muon with the exact polar factor vs cubic (ns3, K=10) vs quintic (ns5, 5 steps)."""
    size = SIZES[preset]
    T = size.T_long // 2
    specs = []
    for prob_name, prob in (("cosine 8x4", cosine_matrix(8, 4)),
                            ("matrix sensing 8x4 r=2", {"family": "matrix_sensing", "m": 8, "n": 4, "rank": 2,
                                                        "n_measurements": 64, "seed": 0})):
        hp0 = _thm2_optimal(prob, T, 0.0, 0.0)
        for method, steps in (("exact", None), ("ns3", 10), ("ns5", 5)):
            hp = {**hp0, "orthogonalization": method}
            if steps is not None:
                hp["ns_steps"] = steps
            for seed in _seeds(size):
                specs.append(RunSpec("muon_orthogonalization", prob, "jaguar_muon", hp, T, seed, _noise(),
                                     {"condition": f"{prob_name}: {method}"}))
    return specs


# ----------------------------------------------------------------------------- i
def gamma_scaling(preset: str) -> list[RunSpec]:
    """Theorem 2's gamma term: does the gamma-floor scale with L (f -> c f at fixed gamma)?"""
    size = SIZES[preset]
    T = size.T_long // 2
    specs = []
    for c in (0.1, 1.0, 10.0, 100.0):
        prob = cosine_matrix(6, 4, x0_scale=0.5, scale=c)
        for label, algo, hp in (
            ("jaguar_muon", "jaguar_muon", {"gamma": 1e-3, "beta": 0.9, "tau": TAU_NOISE_FREE,
                                            "orthogonalization": "exact"}),
            ("jaguar_signsgd", "jaguar_signsgd", {"gamma": 1e-3, "beta": 0.9, "tau": TAU_NOISE_FREE}),
        ):
            for seed in _seeds(size):
                specs.append(RunSpec("gamma_scaling", prob if algo == "jaguar_muon" else
                                     {**cosine_vector(24, x0_scale=0.5), "a": 1.0 * c, "b": 0.5 * c},
                                     algo, hp, T, seed, _noise(), {"condition": label, "scale": c}))
    return specs


# ----------------------------------------------------------------------------- issue 14
def fw_smoke(preset: str) -> list[RunSpec]:
    """Issue 14 (arXiv 2409.10442), engine check only: Frank-Wolfe with JAGUAR-d (deterministic
    oracle, gamma_k = 4/(k + 8d)) and JAGUAR-s (Gaussian gradient noise sigma = 0.1, two-point
    feedback, gamma_k = 4/(k + 8 d^{3/2}), eta_k = 4/(k + 8 d^{3/2})^{2/3}) on a rotated quadratic
    (d = 10, spectrum [1, 100]) over the unit simplex. Smoke and quick presets only; no figure yet
    (the report skips it)."""
    if preset not in ("smoke", "quick"):
        return []
    T = {"smoke": 500, "quick": 2000}[preset]
    prob = {"family": "quadratic", "d": 10, "mu": 1.0, "L": 100.0}
    simplex = {"set": "simplex", "R": 1.0}
    arms = (("JAGUAR-d, deterministic", {"variant": "d", "schedule": "deterministic"}, _noise()),
            ("JAGUAR-s, sigma=0.1", {"variant": "s", "schedule": "stochastic"}, _noise(sigma=0.1)))
    specs = []
    for label, options, noise in arms:
        hp = {"gamma": 1.0, "tau": TAU_NOISE_FREE, "method": "fw", **options}
        for seed in range(2):
            specs.append(RunSpec("fw_smoke", prob, "jaguar_fw", hp, T, seed, noise, {"condition": label},
                                 constraint=simplex))
    return specs


EXPERIMENTS: dict[str, Callable[[str], list[RunSpec]]] = {
    "t_sweep": t_sweep,
    "tau_sweep": tau_sweep,
    "delta_floor": delta_floor,
    "beta_ablation": beta_ablation,
    "dimension": dimension,
    "jaguar_vs_gaussian": jaguar_vs_gaussian,
    "muon_orthogonalization": muon_orthogonalization,
    "gamma_scaling": gamma_scaling,
    "fw_smoke": fw_smoke,
}


def build(preset: str, only: list[str] | None = None) -> list[RunSpec]:
    """All run specs of the chosen experiments under a preset (validated names)."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {list(PRESETS)}, got {preset!r}")
    names = list(EXPERIMENTS) if not only else only
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise ValueError(f"unknown experiment(s) {unknown}; valid: {sorted(EXPERIMENTS)}")
    specs: list[RunSpec] = []
    for n in names:
        specs.extend(EXPERIMENTS[n](preset))
    return specs
