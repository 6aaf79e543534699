"""Statistics for the rate report: slopes with bootstrap CIs over seeds, tail averages, bounds per run.

All functions take the tidy frames written by the runner (one row per logged
step of one run) and return plain pandas / numpy objects.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from zotheory import bounds

N_BOOTSTRAP = 2000


def final_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The row at t = T of every run."""
    return df[df["t"] == df["T"]].copy()


def metric_column(algorithm_or_matrix: bool | str) -> str:
    """Theorem 1 measures the l1 norm, Theorem 2 the nuclear norm."""
    is_matrix = algorithm_or_matrix if isinstance(algorithm_or_matrix, bool) else algorithm_or_matrix.endswith("muon")
    return "nuc" if is_matrix else "l1"


def tail_average(df: pd.DataFrame, key: str) -> pd.DataFrame:
    """Per run: the average of ||grad f(x^s)|| over s in [T//2, T) from the logged running sums."""
    out = []
    for rid, g in df.groupby("run_id", sort=False):
        T = int(g["T"].iloc[0])
        half = max(1, T // 2)
        a = g.loc[g["t"] == half, f"sum_grad_{key}"]
        b = g.loc[g["t"] == T, f"sum_grad_{key}"]
        if a.empty or b.empty or T == half:
            continue
        row = g[g["t"] == T].iloc[0].copy()
        row[f"tail_grad_{key}"] = (float(b.iloc[0]) - float(a.iloc[0])) / (T - half)
        out.append(row)
    return pd.DataFrame(out)


def output_ratio(df: pd.DataFrame, key: str) -> pd.DataFrame:
    """Per run: ``||grad f(x^{N(T)})||`` over its expectation given the trajectory.

    N(T) ~ U{1..T} is drawn independently of the trajectory, so given it
    ``E_N ||grad f(x^N)|| = (1/T) sum_{t=1..T} ||grad f(x^t)|| = (S_T - g_0 + g_T) / T``, where
    ``S_T`` is ``sum_grad`` at ``t = T`` (the sum over ``t = 0..T-1``), ``g_0 = S_1`` (the sum at
    ``t = 1``) and ``g_T`` the norm at ``t = T``. The ratio ``out_grad / that`` has expectation
    exactly 1 whatever the trajectory; returns the final rows with a column ``output_ratio``."""
    out = []
    for _, g in df.groupby("run_id", sort=False):
        T = int(g["T"].iloc[0])
        first, last = g[g["t"] == 1], g[g["t"] == T]
        if first.empty or last.empty:
            continue
        row = last.iloc[0].copy()
        expected = (row[f"sum_grad_{key}"] - first[f"sum_grad_{key}"].iloc[0] + row[f"grad_{key}"]) / T
        row["output_ratio"] = row[f"out_grad_{key}"] / expected
        out.append(row)
    return pd.DataFrame(out)


def loglog_slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of log y against log x (positive, finite points only)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = (x > 0) & (y > 0) & np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def seed_matrix(df: pd.DataFrame, x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    """Pivot to (x values, seeds x len(x) matrix of y); seeds missing a point are dropped."""
    piv = df.pivot_table(index="seed", columns=x, values=y, aggfunc="mean").dropna()
    return piv.columns.to_numpy(dtype=float), piv.to_numpy(dtype=float)


def bootstrap(
    values: np.ndarray, stat: Callable[[np.ndarray], float], *, n: int = N_BOOTSTRAP, seed: int = 0
) -> tuple[float, float, float]:
    """Statistic of the seed-mean and its 95% percentile bootstrap CI, resampling seeds (rows)."""
    rng = np.random.default_rng(seed)
    point = stat(values.mean(axis=0))
    k = values.shape[0]
    if k < 2:
        return point, float("nan"), float("nan")
    stats = []
    for _ in range(n):
        idx = rng.integers(0, k, size=k)
        s = stat(values[idx].mean(axis=0))
        if np.isfinite(s):
            stats.append(s)
    if not stats:
        return point, float("nan"), float("nan")
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return point, float(lo), float(hi)


def slope_with_ci(df: pd.DataFrame, x: str, y: str, *, x_range: tuple[float, float] | None = None
                  ) -> tuple[float, float, float, int]:
    """Log-log slope of the seed-mean of y against x, with a bootstrap CI over seeds."""
    xs, Y = seed_matrix(df, x, y)
    if x_range is not None:
        keep = (xs >= x_range[0]) & (xs <= x_range[1])
        xs, Y = xs[keep], Y[:, keep]
    if len(xs) < 2 or Y.shape[0] == 0:
        return float("nan"), float("nan"), float("nan"), int(Y.shape[0])
    point, lo, hi = bootstrap(Y, lambda m: loglog_slope(xs, m))
    return point, lo, hi, int(Y.shape[0])


def local_slopes(xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slopes between consecutive points of a log-log curve, at the geometric midpoints."""
    lx, ly = np.log(xs), np.log(ys)
    return np.exp((lx[1:] + lx[:-1]) / 2), np.diff(ly) / np.diff(lx)


def crossing(xs: np.ndarray, ys: np.ndarray, level: float) -> float:
    """First x at which a (log-log interpolated) decreasing curve falls to ``level``; nan if never."""
    for i in range(len(xs)):
        if ys[i] <= level:
            if i == 0:
                return float(xs[0])
            lx0, lx1 = math.log(xs[i - 1]), math.log(xs[i])
            ly0, ly1 = math.log(ys[i - 1]), math.log(ys[i])
            frac = (math.log(level) - ly0) / (ly1 - ly0) if ly1 != ly0 else 0.0
            return float(math.exp(lx0 + frac * (lx1 - lx0)))
    return float("nan")


def run_bound(row: pd.Series, *, constants: str = "derived", gamma_term: str = "corrected") -> float:
    """The theorem's right-hand side for one run's constants and hyperparameters (nan if n/a)."""
    algo = row["algorithm"]
    if algo not in ("jaguar_signsgd", "jaguar_muon"):
        return float("nan")
    common = dict(
        delta0=float(row["problem_delta0"]), grad0_norm2=float(row["problem_grad0_norm2"]),
        L=float(row["problem_L"]), sigma=float(row["noise_sigma"]), Delta=float(row["noise_Delta"]),
        gamma=float(row["hp_gamma"]), beta=float(row["hp_beta"]), tau=float(row["hp_tau"]), T=int(row["T"]),
        constants=constants,
    )
    if algo == "jaguar_signsgd":
        return float(bounds.theorem1_terms(d=int(row["problem_d"]), **common)["total"])
    m, n = int(row["problem_m"]), int(row["problem_n"])
    return float(bounds.theorem2_terms(m=m, n=n, gamma_term=gamma_term, **common)["total"])


def bound_table(df: pd.DataFrame, *, gamma_term: str = "corrected") -> pd.DataFrame:
    """Every JAGUAR run's measured trajectory average at T against its bound (derived constants)."""
    fin = final_rows(df)
    fin = fin[fin["algorithm"].isin(["jaguar_signsgd", "jaguar_muon"])].copy()
    if fin.empty:
        return fin
    fin["measured"] = [r[f"avg_grad_{metric_column(r['algorithm'])}"] for _, r in fin.iterrows()]
    fin["bound"] = [run_bound(r, gamma_term=gamma_term) for _, r in fin.iterrows()]
    fin["ratio"] = fin["measured"] / fin["bound"]
    # Theorem 2's proof uses the exact polar factor; Newton-Schulz runs are checked but not covered.
    orth = fin["hp_orthogonalization"] if "hp_orthogonalization" in fin else pd.Series("", index=fin.index)
    fin["covered_by_proof"] = (fin["algorithm"] == "jaguar_signsgd") | (orth.fillna("") == "exact")
    return fin


def summarise_ratios(tab: pd.DataFrame, by: Sequence[str] = ("experiment",)) -> pd.DataFrame:
    """Fraction of runs with measured <= bound, and the worst ratio, per group."""
    if tab.empty:
        return pd.DataFrame()
    g = tab.groupby(list(by))
    return pd.DataFrame({
        "runs": g.size(),
        "fraction_below_bound": g["ratio"].apply(lambda r: float((r <= 1).mean())),
        "worst_ratio": g["ratio"].max(),
        "median_ratio": g["ratio"].median(),
    }).reset_index()
