"""The batched synthetic runner: many runs advance together as one ``(B, *shape)`` tensor.

A *group* is a list of runs that share the problem, the noise model, the
algorithm, its non-numeric options and the horizon ``T``; they may differ in
``seed`` and in the numeric hyperparameters (``gamma``, ``beta``, ``tau``), which
become per-run tensors of shape ``(B,)``. Every iteration calls the algorithm's
single-run kernel ``step`` with ``batch_dims=1`` -- the same code a single run
uses, so batched and single runs have the same semantics (tests compare them).

Randomness: one ``torch.Generator`` per purpose (coordinates / directions, noise,
output index), seeded from a hash of the group's configuration, so a group's
results do not depend on which other groups ran before it. A run's random
stream is that of its group (the groups are fixed by the experiment config).

Logged, at log-spaced steps t (always including T//2 and T), per run:
``f_gap`` = f(x^t) - f*, exact ``grad_l1``, ``grad_l2`` (and ``grad_nuc`` for
matrices) at x^t, and running sums ``sum_grad_*`` over s = 0..t-1 with their
averages ``avg_grad_*`` (the theorem's left-hand side is the average over
s = 0..T-1), oracle calls, wall time. The output x^{N(T)} with N(T) ~ U{1..T} is
realised per run: ``out_N`` and ``out_grad_*`` (norms at x^{N(T)}).

Constrained runs (registry ``constrained``: ``jaguar_fw``) carry ``RunSpec.constraint = {"set", "R"}``
(part of the run id and the group key only when given, so other runs hash as before): the group
starts at the projection of x0 onto Q, the kernel gets ``Q=``, and the log adds the exact
``fw_gap`` (true gradient), ``f_gap`` against f*_Q (``problem.f_star_on``) and its constants.
Hyper keys that the kernel's ``step`` does not take are its ``init``'s (``variant``, ``start``).
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass, field
from functools import lru_cache
from numbers import Integral, Real
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from zotheory.algorithms import ALGORITHMS, get_algorithm

from .noise import StochasticOracle
from .problems import nuclear_norm
from .registry import FAMILIES, make_problem
from .results import run_id

NUMERIC_HYPERPARAMETERS = ("gamma", "beta", "tau", "eta")
NUMERIC_NOISE = ("sigma", "Delta")


@dataclass(frozen=True)
class RunSpec:
    """One run: everything needed to reproduce it (its hash is the run id)."""

    experiment: str
    problem: dict[str, Any]
    algorithm: str
    hyper: dict[str, Any]
    T: int
    seed: int
    noise: dict[str, Any] = field(default_factory=lambda: {"sigma": 0.0, "Delta": 0.0, "delta_mode": "none"})
    labels: dict[str, Any] = field(default_factory=dict)
    # {"set": "simplex" | "l1" | "l2", "R": radius} for constrained kernels (registry `constrained`);
    # None otherwise, and then absent from config() and the group key (run ids unchanged).
    constraint: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        validate_spec(self)

    def config(self) -> dict[str, Any]:
        config = {
            "experiment": self.experiment,
            "problem": self.problem,
            "algorithm": self.algorithm,
            "hyper": self.hyper,
            "T": self.T,
            "seed": self.seed,
            "noise": self.noise,
            "labels": self.labels,
        }
        if self.constraint is not None:
            config["constraint"] = self.constraint
        return config

    @property
    def run_id(self) -> str:
        return run_id(self.config())

    def group_key(self) -> str:
        options = {k: v for k, v in self.hyper.items() if k not in NUMERIC_HYPERPARAMETERS}
        noise = {k: v for k, v in self.noise.items() if k not in NUMERIC_NOISE}
        key = {
            "experiment": self.experiment,
            "problem": self.problem,
            "algorithm": self.algorithm,
            "options": options,
            "noise": noise,
        }
        if self.constraint is not None:
            key["constraint"] = self.constraint
        return run_id(key)


_STEP_RESERVED = {"x", "oracle", "state", "generator", "batch_dims", "Q"}
# init keywords the engine supplies itself (a kernel's other init keywords are options: hyper keys
# that its step does not take go to its init, e.g. jaguar_fw's variant and start)
_INIT_RESERVED = {"x", "batch_dims", "oracle", "tau"}
CONSTRAINT_SETS = ("simplex", "l1", "l2")


@lru_cache(maxsize=None)
def _keywords(fn: Callable[..., Any], reserved: frozenset[str]) -> frozenset[str] | None:
    """Keyword names ``fn`` accepts (minus ``reserved``); ``None`` when it takes ``**kwargs``."""
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params if p.kind is not inspect.Parameter.VAR_POSITIONAL) - reserved


def _check_keys(where: str, given: Mapping[str, Any], valid: frozenset[str] | None) -> None:
    if valid is None:
        return
    unknown = sorted(set(given) - valid)
    if unknown:
        raise ValueError(f"RunSpec.{where} has unknown key(s) {unknown}; valid: {sorted(valid)}")


def _check_number(where: str, value: Any) -> None:
    if not isinstance(value, Real) or isinstance(value, bool) or not math.isfinite(float(value)):
        raise ValueError(f"RunSpec.{where} must be a finite real number, got {value!r}")


def validate_spec(spec: "RunSpec") -> None:
    """Types, names and keys of a run's configuration (``ValueError`` naming the key).

    Ranges of the values (``beta`` in [0, 1), ``sigma >= 0``, problem sizes, ...) are
    checked where they are used (the kernels, the oracle, the problem constructors).
    """
    if not isinstance(spec.experiment, str) or not spec.experiment:
        raise ValueError(f"RunSpec.experiment must be a non-empty string, got {spec.experiment!r}")
    for name in ("problem", "hyper", "noise", "labels"):
        if not isinstance(getattr(spec, name), Mapping):
            raise ValueError(f"RunSpec.{name} must be a dict, got {getattr(spec, name)!r}")
    family = spec.problem.get("family")
    if family not in FAMILIES:
        raise ValueError(f"RunSpec.problem['family'] must be one of {sorted(FAMILIES)}, got {family!r}")
    _check_keys(f"problem ({family})", {k: v for k, v in spec.problem.items() if k != "family"},
                _keywords(FAMILIES[family].__init__, frozenset({"self"})))
    if spec.algorithm not in ALGORITHMS:
        raise ValueError(f"RunSpec.algorithm must be one of {sorted(ALGORITHMS)}, got {spec.algorithm!r}")
    if "gamma" not in spec.hyper:
        raise ValueError(f"RunSpec.hyper needs 'gamma' (the step size), got {dict(spec.hyper)}")
    info = ALGORITHMS[spec.algorithm]
    step_keys = _keywords(info.module.step, frozenset(_STEP_RESERVED))
    init_keys = _keywords(info.module.init, frozenset(_INIT_RESERVED))
    _check_keys(f"hyper ({spec.algorithm})", spec.hyper,
                None if step_keys is None or init_keys is None else step_keys | init_keys)
    _validate_constraint(spec, info.constrained)
    for name in NUMERIC_HYPERPARAMETERS:
        if name in spec.hyper:
            _check_number(f"hyper[{name!r}]", spec.hyper[name])
    _check_keys("noise", spec.noise, _keywords(StochasticOracle.__init__, frozenset({"self", "problem"})))
    for name in NUMERIC_NOISE:
        if name in spec.noise:
            _check_number(f"noise[{name!r}]", spec.noise[name])
    for name, low in (("T", 1), ("seed", 0)):
        v = getattr(spec, name)
        if not isinstance(v, Integral) or isinstance(v, bool) or v < low:
            raise ValueError(f"RunSpec.{name} must be an integer >= {low}, got {v!r}")


def _validate_constraint(spec: "RunSpec", constrained: bool) -> None:
    c = spec.constraint
    if c is None:
        if constrained:
            raise ValueError(f"RunSpec.constraint is needed by {spec.algorithm!r}: "
                             f"{{'set': one of {list(CONSTRAINT_SETS)}, 'R': radius > 0}}")
        return
    if not constrained:
        raise ValueError(f"RunSpec.constraint is for constrained algorithms only, not {spec.algorithm!r}")
    if not isinstance(c, Mapping) or set(c) != {"set", "R"}:
        raise ValueError(f"RunSpec.constraint must be {{'set': ..., 'R': ...}}, got {c!r}")
    if c["set"] not in CONSTRAINT_SETS:
        raise ValueError(f"RunSpec.constraint['set'] must be one of {list(CONSTRAINT_SETS)}, got {c['set']!r}")
    _check_number("constraint['R']", c["R"])
    if c["R"] <= 0:
        raise ValueError(f"RunSpec.constraint['R'] must be > 0, got {c['R']!r}")


def _split_options(algo: Any, options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(step options, init options): the hyper keys a kernel's step does not take go to its init."""
    step_keys = _keywords(algo.step, frozenset(_STEP_RESERVED))
    if step_keys is None:
        return dict(options), {}
    return ({k: v for k, v in options.items() if k in step_keys},
            {k: v for k, v in options.items() if k not in step_keys})


def _constrained_optimum(problem: Any, kind: str, R: float) -> tuple[float, float]:
    """``(f*_Q, certificate)``: the problem's minimum over ``Q`` and its FW gap there (NaN, NaN when
    the family has no ``f_star_on``: non-convex problems)."""
    if not hasattr(problem, "f_star_on"):
        return math.nan, math.nan
    opt = problem.f_star_on(kind, R)
    return opt.f_star, opt.fw_gap


def group_runs(specs: Sequence[RunSpec]) -> list[list[RunSpec]]:
    """Split runs into batchable groups, in a deterministic order."""
    groups: dict[str, list[RunSpec]] = {}
    for s in specs:
        groups.setdefault(s.group_key(), []).append(s)
    return [sorted(g, key=lambda s: s.run_id) for _, g in sorted(groups.items())]


def log_points(T: int, n: int = 40) -> list[int]:
    """Log-spaced steps in [1, T], always with T // 2 and T."""
    pts = set(np.unique(np.round(np.logspace(0, math.log10(T), n)).astype(int)).tolist())
    pts.update({max(1, T // 2), T})
    return sorted(p for p in pts if 1 <= p <= T)


def _generator(key: str, purpose: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed((int(key, 16) * 7919 + purpose) % (2**63 - 1))
    return g


def run_group(
    specs: Sequence[RunSpec],
    *,
    progress: Callable[[int], None] | None = None,
    n_log: int = 40,
) -> dict[str, pd.DataFrame]:
    """Run one group to completion; returns a tidy frame per run id.

    Runs may have different horizons ``T``: the group advances to the largest; a
    run that has reached its own ``T`` keeps its final iterate (written back after
    every later step), and its sums and log rows stop at its ``T``.
    """
    if not specs:
        return {}
    keys = {s.group_key() for s in specs}
    if len(keys) != 1:
        raise ValueError("run_group needs runs of one group (same problem, noise mode, algorithm, options)")
    first = specs[0]
    key = first.group_key()
    B = len(specs)
    T_row = torch.tensor([s.T for s in specs], dtype=torch.long)
    T_max = int(T_row.max())
    problem = make_problem(first.problem)
    dtype = torch.float64
    noise_kwargs = {k: v for k, v in first.noise.items() if k not in NUMERIC_NOISE}
    for name in NUMERIC_NOISE:
        if name in first.noise:
            noise_kwargs[name] = torch.tensor([float(s.noise[name]) for s in specs], dtype=dtype)
    oracle = StochasticOracle(problem, **noise_kwargs)
    algo = get_algorithm(first.algorithm)

    hp: dict[str, Any] = {}
    for name in NUMERIC_HYPERPARAMETERS:
        if name in first.hyper:
            hp[name] = torch.tensor([float(s.hyper[name]) for s in specs], dtype=dtype)
    options = {k: v for k, v in first.hyper.items() if k not in NUMERIC_HYPERPARAMETERS}
    options, init_options = _split_options(algo, options)
    gamma = hp.pop("gamma")

    g_algo, g_noise, g_out = _generator(key, 1), _generator(key, 2), _generator(key, 3)
    x = problem.x0.to(dtype).expand(B, *problem.shape).clone()
    Q = None
    if first.constraint is not None:
        # a constrained run starts at the projection of the problem's x0 onto Q (exact, in Q)
        from zotheory.constraints import make_set

        Q = make_set(first.constraint["set"], float(first.constraint["R"]))
        x = Q.project(x)
        options["Q"] = Q
        f_star_Q, f_star_Q_certificate = _constrained_optimum(problem, first.constraint["set"],
                                                              float(first.constraint["R"]))
    if init_options.get("start", "zeros") != "zeros":
        # a start that queries the oracle (jaguar_fw's full difference): one iteration's oracle at x^0
        init_options.update(oracle=oracle.iteration(x, g_noise), tau=hp["tau"])
    state = algo.init(x, batch_dims=1, **init_options)
    init_calls = int(getattr(state, "oracle_calls", 0))
    # N(T) ~ Uniform{1..T} per run (floor of a uniform draw scaled by each run's T)
    out_N = (torch.rand(B, generator=g_out, dtype=dtype) * T_row).long().clamp(max=T_row - 1) + 1

    is_matrix = problem.is_matrix
    sums = {k: torch.zeros(B, dtype=dtype) for k in ("l1", "l2", "nuc")}
    # Vector problems have no nuclear norm: its running sum is nan from step 1 on (the only
    # steps at which it is read), so it is set once instead of adding nan every step.
    sum_keys = ("l1", "l2", "nuc") if is_matrix else ("l1", "l2")
    if not is_matrix:
        sums["nuc"] = torch.full((B,), float("nan"), dtype=dtype)
    out_norms = {k: torch.full((B,), float("nan"), dtype=dtype) for k in ("l1", "l2", "nuc")}
    row_points = {b: set(log_points(specs[b].T, n_log)) for b in range(B)}
    points = sorted(set().union(*row_points.values()))
    finish = sorted(set(T_row.tolist()))
    records: dict[int, list[dict[str, Any]]] = {b: [] for b in range(B)}
    calls_per_step = algo.oracle_calls_per_step(options)
    t0 = time.perf_counter()
    next_i = 0
    active = torch.ones(B, dtype=torch.bool)
    all_active = True  # until the first run reaches its T (then `active` masks the sums)
    out_steps = set(out_N.tolist())
    frozen: torch.Tensor | None = None  # final iterates of the runs that are done
    event_ones = (1,) * len(problem.shape)

    no_nuc = torch.full((B,), float("nan"), dtype=dtype)  # never modified in place

    def norms(x_: torch.Tensor) -> dict[str, torch.Tensor]:
        g = problem.grad(x_)
        flat = g.reshape(B, -1)
        out = {"l1": flat.abs().sum(-1), "l2": flat.norm(dim=-1)}
        out["nuc"] = nuclear_norm(g) if is_matrix else no_nuc
        return out

    current = norms(x)
    for t in range(T_max):
        # running sums over s = 0..t-1 use the norms at x^s, computed before step s moves x.
        for k in sum_keys:
            if all_active:  # where(all True, c, 0) == c: the same sums, two ops fewer
                sums[k] += current[k]
            else:
                sums[k] += torch.where(active, current[k], torch.zeros_like(current[k]))
        it = oracle.iteration(x, g_noise)
        state = algo.step(x, it, state, gamma=gamma, generator=g_algo, batch_dims=1, **hp, **options)
        if frozen is not None:
            x.copy_(torch.where(active.reshape(B, *event_ones), x, frozen))
        # A finite sum implies every entry is finite (nan/inf propagate): one pass instead of
        # isfinite's several; an overflowing sum of finite entries falls back to the exact check.
        if not (math.isfinite(float(x.sum())) or bool(torch.isfinite(x).all())):
            raise FloatingPointError(
                f"non-finite iterate in group {key} ({first.algorithm} on {first.problem}) at step {t + 1}"
            )
        current = norms(x)
        step_no = t + 1
        if step_no in out_steps:
            hit = out_N == step_no
            for k in out_norms:
                out_norms[k] = torch.where(hit, current[k], out_norms[k])
        if next_i < len(points) and step_no == points[next_i]:
            next_i += 1
            f_gap = problem.value(x) - (problem.f_star if Q is None else f_star_Q)
            fw_gap = None if Q is None else Q.fw_gap(x, problem.grad(x))
            wall = time.perf_counter() - t0
            for b in range(B):
                if step_no in row_points[b]:
                    records[b].append({
                        "t": step_no,
                        "f_gap": float(f_gap[b]),
                        **({} if fw_gap is None else {"fw_gap": float(fw_gap[b])}),
                        "wall_time_s": wall,
                        **{f"grad_{k}": float(current[k][b]) for k in ("l1", "l2", "nuc")},
                        **{f"sum_grad_{k}": float(sums[k][b]) for k in ("l1", "l2", "nuc")},
                    })
        if finish and step_no == finish[0]:
            finish.pop(0)
            active = T_row > step_no
            all_active = bool(active.all())
            frozen = x.clone() if frozen is None else torch.where(active.reshape(B, *event_ones), x, frozen)
        if progress is not None and (step_no % 1000 == 0 or step_no == T_max):
            progress(B * (1000 if step_no % 1000 == 0 else step_no % 1000))

    constants = problem.constants()
    frames: dict[str, pd.DataFrame] = {}
    for b, spec in enumerate(specs):
        df = pd.DataFrame.from_records(records[b])
        df.insert(0, "run_id", spec.run_id)
        df.insert(1, "experiment", spec.experiment)
        df.insert(2, "algorithm", spec.algorithm)
        df.insert(3, "seed", spec.seed)
        df.insert(4, "T", spec.T)
        df["oracle_calls"] = calls_per_step * df["t"] + init_calls
        for k in ("l1", "l2", "nuc"):
            df[f"avg_grad_{k}"] = df[f"sum_grad_{k}"] / df["t"]
        df["out_N"] = int(out_N[b])
        for k in ("l1", "l2", "nuc"):
            df[f"out_grad_{k}"] = float(out_norms[k][b])
        for k, v in spec.hyper.items():
            df[f"hp_{k}"] = v
        for k, v in spec.noise.items():
            df[f"noise_{k}"] = v
        for k, v in constants.items():
            df[f"problem_{k}"] = v
        if Q is not None:
            df["problem_f_star_Q"] = f_star_Q
            df["problem_f_star_Q_certificate"] = f_star_Q_certificate
            df["constraint_set"] = first.constraint["set"]
            df["constraint_R"] = float(first.constraint["R"])
        for k, v in spec.labels.items():
            df[f"label_{k}"] = v
        df["group_size"] = B
        frames[spec.run_id] = df
    return frames
