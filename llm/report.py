"""Summaries of fine-tuning runs, from their saved outputs only.

``zotheory finetune-report`` reads every ``result.json`` / ``evals.parquet`` under a
results folder (one folder per run, as ``zotheory finetune`` writes them), and
writes a markdown table (mean and spread over seeds of the test accuracy at the
dev-selected step, zero-shot accuracy, forward passes, wall time, peak memory)
and one figure per task: dev accuracy against forward passes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pandas as pd


def run_label(config: dict[str, Any]) -> str:
    """A readable name for a configuration: method, estimator mode, coordinates, step size."""
    opt = config.get("optim") or {}
    parts = [config["method"]]
    if opt.get("mode") == "block":
        parts.append("block")
    elif config["method"].startswith("jaguar"):
        parts.append(f"k={opt.get('coords_per_step', 8)}")
    if opt.get("reset_momentum"):
        parts.append("reset-momentum")
    parts.append(f"{config.get('loss', 'nll')}-loss")
    if config.get("lr_schedule", "constant") != "constant":
        parts.append(config["lr_schedule"])
    return " ".join(parts)


def collect(root: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per finished run, all evaluation rows) under ``root``."""
    runs, evals = [], []
    for res in sorted(Path(root).glob("*/result.json")):
        r = json.loads(res.read_text())
        if r.get("status") != "done":
            continue
        cfg = r["config"]
        row = {
            "run": res.parent.name, "task": cfg["task"], "model": cfg["model"], "method": cfg["method"],
            "label": run_label(cfg), "lora": cfg["lora"], "seed": cfg["seed"], "steps": r["steps_done"],
            "lr": r.get("lr"), "tau": cfg.get("tau"), "dtype": r.get("dtype"),
            "forward_passes": r["forward_passes"], "train_wall_time_s": r["train_wall_time"],
            "peak_memory_mb": r.get("peak_memory_mb"),
            "zero_shot_dev": r["zero_shot"]["dev"],
            "zero_shot_test": r["zero_shot"]["test"],
            "best_dev": r["best"]["dev_accuracy"], "best_step": r["best"]["step"], "test_at_best": r["test_at_best"],
        }
        runs.append(row)
        ev = res.parent / "evals.parquet"
        if ev.exists():
            e = pd.read_parquet(ev)
            e["label"], e["task"], e["seed"], e["lr"] = row["label"], row["task"], row["seed"], row["lr"]
            evals.append(e)
    return pd.DataFrame(runs), (pd.concat(evals, ignore_index=True) if evals else pd.DataFrame())


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and spread (std, min, max) over seeds per task and configuration (step size included:
    runs of one method at two step sizes are two rows)."""
    g = runs.groupby(["task", "label", "lora", "lr"], sort=False, dropna=False)
    out = g.agg(
        seeds=("seed", "nunique"), steps=("steps", "max"),
        forward_passes=("forward_passes", "max"), train_minutes=("train_wall_time_s", lambda s: s.mean() / 60),
        peak_memory_mb=("peak_memory_mb", "max"),
        zero_shot_test=("zero_shot_test", "mean"),
        test_mean=("test_at_best", "mean"), test_std=("test_at_best", "std"),
        test_min=("test_at_best", "min"), test_max=("test_at_best", "max"),
        best_dev_mean=("best_dev", "mean"),
    ).reset_index()
    return out


def to_markdown(summary: pd.DataFrame) -> str:
    cols = ["task", "label", "seeds", "steps", "lr", "forward_passes", "train_minutes", "peak_memory_mb",
            "zero_shot_test", "test_mean", "test_std", "test_min", "test_max", "best_dev_mean"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in summary.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            cells.append(f"{v:.3g}" if isinstance(v, float) and pd.notna(v) else ("" if pd.isna(v) else str(v)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(evals: pd.DataFrame, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    dev = evals[evals["split"] == "dev"]
    for task, sub in dev.groupby("task"):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for (label, lr), g in sub.groupby(["label", "lr"], sort=False, dropna=False):
            curve = g.groupby("forward_passes")["accuracy"].agg(["mean", "min", "max"]).reset_index()
            line, = ax.plot(curve["forward_passes"], curve["mean"], marker="o", ms=3,
                            label=f"{label}, lr {lr:g} ({g['seed'].nunique()} seeds)")
            ax.fill_between(curve["forward_passes"], curve["min"], curve["max"], color=line.get_color(), alpha=0.15)
        ax.set(xlabel="forward passes (first-order methods: one forward + one backward per step)", ylabel="dev accuracy",
               title=f"{task}: dev accuracy against forward passes (band: min-max over seeds)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"llm_{task}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def make_report(results: str | Path, figures: str | Path) -> dict[str, Any]:
    results, figures = Path(results), Path(figures)
    runs, evals = collect(results)
    if runs.empty:
        raise FileNotFoundError(f"no finished fine-tuning runs (result.json with status 'done') under {results}")
    figures.mkdir(parents=True, exist_ok=True)
    summary = summarise(runs)
    (figures / "llm_report.md").write_text(to_markdown(summary))
    runs.to_csv(figures / "llm_runs.csv", index=False)
    made = plot(evals, figures) if not evals.empty else []
    return {"table": figures / "llm_report.md", "figures": made, "runs": len(runs)}


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("finetune-report", help="table and figures from saved fine-tuning runs")
    p.add_argument("--results", default="results/finetune", help="folder of run folders (default results/finetune)")
    p.add_argument("--figures", default="figures", help="where the table and figures go (default figures/)")

    def run(args: argparse.Namespace) -> int:
        try:
            out = make_report(args.results, args.figures)
        except FileNotFoundError as e:
            print(e)
            return 2
        print(f"{out['runs']} runs -> {out['table']} and {len(out['figures'])} figure(s)")
        return 0

    p.set_defaults(func=run)
