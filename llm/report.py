"""Summaries of fine-tuning runs, from their saved outputs only.

``zotheory finetune-report`` reads every ``result.json`` / ``evals.parquet`` under a
results folder (one folder per run, as ``zotheory finetune`` writes them) and writes,
by default into ``<results>/figures`` (the committed ``figures/`` only when asked:
``--figures figures``):

* ``llm_report.md``: one row per configuration: mean and spread over seeds of the test
  accuracy at the dev-selected step, zero-shot accuracy, forward passes, wall time, peak
  memory; the seeds pooled in the row; the configuration fields that differ between rows
  (the ones shared by every row are listed under the table);
* ``llm_report.csv``: the same rows with every configuration field;
* ``llm_runs.csv``: one row per run, with its ``config_id``;
* ``llm_<task>.png``: dev accuracy against forward passes, one curve per configuration.

Every file is written atomically (:func:`zotheory.integrity.atomic_write`): a reader sees the old
version or the new one, never half of one.

Integrity. A run is read only after its ``result.json``, ``evals.parquet`` and ``log.parquet``
match their SHA-256 checksum files (``<name>.sha256``, written by ``zotheory finetune``;
:func:`zotheory.llm.train.output_problem`). A run with a corrupt or unchecked file (a mismatch,
a missing checksum file) is never counted: it is skipped with one warning line on stderr naming
the file and the fix (delete the run folder and re-run: that recomputes this run only), and
:func:`make_report` lists it under ``skipped``.

Pooling. Runs are pooled into one row only when they differ in nothing but the seed:
the grouping key (:func:`config_key`) is the run's whole saved ``TrainConfig`` except

* ``seed``: what a row pools over;
* ``out_dir``: where the files went;
* ``resume``: a resumed run continues bitwise (docs/reliability.md);
* ``progress``: the progress bar;
* ``checkpoint_every``: checkpoints are written outside the timed steps and do not touch the
  trajectory (exact resume); model selection happens at ``eval_every``, which is kept;
* ``max_skipped_fraction``: decides whether a run fails, never its trajectory;

with ``lr`` replaced by the learning rate used at the end (``lr=None`` resolves to
``DEFAULT_LR``), ``device`` by the device type the run resolved to (``cpu``/``cuda``:
the kernels round differently and wall time / peak memory are other measurements), the
data-parallel ``world_size`` added, and the fields a configuration does not use blanked
(they cannot change its results): ``tau`` for methods that take none (first-order),
``lr_power`` unless ``lr_schedule="power"``, ``lora_r`` / ``lora_alpha`` /
``lora_targets`` unless ``lora`` (in the tables such a field reads ``n/a``, as does an
``optim.<name>`` column for a method that does not take ``name``). Runs saved before ``TrainConfig.loss`` existed used the
NLL loss and are read as ``loss="nll"``. A run resumed with overrides (``--allow-override``: another
``lr`` / ``tau`` / non-finite policy from some step on) has its ``overrides`` in the key, so it is
pooled only with runs overridden alike. ``config_id`` is a hash of the key (stable across
machines and report runs): the same id in ``llm_runs.csv`` marks the runs of a row.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from zotheory import integrity

#: TrainConfig fields left out of the grouping key, and why (see the module docstring).
EXCLUDED_FIELDS: dict[str, str] = {
    "seed": "what a row pools over",
    "out_dir": "where the files went",
    "resume": "a resumed run continues bitwise",
    "progress": "the progress bar only",
    "checkpoint_every": "checkpoints do not touch the trajectory; selection happens at eval_every",
    "max_skipped_fraction": "decides whether a run fails, never its trajectory (failed runs are not reported)",
}

#: Fields set to None in the key where the configuration does not use them (:func:`_applies`).
CONDITIONAL_FIELDS = ("tau", "lr_power", "lora_r", "lora_alpha", "lora_targets")

#: Always in the markdown table (before the configuration columns that vary between rows).
ID_COLUMNS = ("task", "label", "model", "method", "lora", "config_id", "seeds", "seed_list")
#: Measured quantities of a row (after the configuration columns).
METRIC_COLUMNS = ("forward_passes", "train_minutes", "peak_memory_mb", "zero_shot_test", "test_mean",
                  "test_std", "test_min", "test_max", "best_dev_mean")


def run_label(config: dict[str, Any]) -> str:
    """A readable name for a configuration: method, estimator mode, coordinates, loss, schedule."""
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


def _takes(method: str, name: str) -> bool:
    """Whether ``method``'s optimizer takes the hyperparameter ``name`` (unknown methods: yes)."""
    try:
        from zotheory.optim import hyperparameter_names

        return name in hyperparameter_names(method)
    except (ImportError, ValueError):  # a method this version does not know: keep the field
        return True


def config_key(result: dict[str, Any]) -> dict[str, Any]:
    """The configuration a run is pooled by: its saved config minus :data:`EXCLUDED_FIELDS`,
    with the resolved ``lr``, the device type, ``world_size``, and unused fields set to ``None``."""
    key = {k: v for k, v in result["config"].items() if k not in EXCLUDED_FIELDS}
    key.setdefault("loss", "nll")  # saved before the field existed: the NLL loss
    if result.get("lr") is not None:
        key["lr"] = result["lr"]
    device = result.get("device") or key.get("device")
    if device is not None:
        key["device"] = str(device).split(":")[0]
    key["world_size"] = int((result.get("parallel") or {}).get("world_size", 1))
    for k in CONDITIONAL_FIELDS:
        if k in key and not _applies(key, k):
            key[k] = None
    if result.get("overrides"):  # resumed with another lr / tau / policy from some step on
        key["overrides"] = [{"step": o.get("step"), "new": o.get("new")} for o in result["overrides"]]
    return key


def _canonical(v: Any) -> Any:
    """Numbers as floats (16 and 16.0 are one value), tuples as lists, dict keys sorted by json."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, dict):
        return {str(k): _canonical(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_canonical(x) for x in v]
    return repr(v)


def config_id(key: dict[str, Any]) -> str:
    """10 hex digits of the SHA-256 of the canonical JSON of a :func:`config_key`."""
    text = json.dumps(_canonical(key), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _flat(key: dict[str, Any]) -> dict[str, Any]:
    """One scalar per column: ``optim`` as ``optim.<name>`` columns, lists as comma-joined text."""
    out: dict[str, Any] = {}
    for k, v in key.items():
        if isinstance(v, dict):
            for sub in sorted(v):
                x = v[sub]
                out[f"{k}.{sub}"] = ",".join(map(str, x)) if isinstance(x, (list, tuple)) else x
        elif isinstance(v, (list, tuple)):
            out[k] = ",".join(map(str, v))
        else:
            out[k] = v
    return out


def _problem(path: Path) -> str | None:
    from .train import output_problem  # torch: imported when a report is made, not for `--help`

    return output_problem(path)


def _skip(run: Path, path: Path, reason: str, skipped: list[tuple[str, str]] | None) -> None:
    line = (f"corrupt file {path} ({reason}): delete the run folder {run} and re-run it: that recomputes "
            f"this run only")
    print(f"zotheory finetune-report: warning: skipping run {run.name}: {line}", file=sys.stderr)
    if skipped is not None:
        skipped.append((run.name, line))


def collect(root: str | Path, skipped: list[tuple[str, str]] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per finished run, all evaluation rows) under ``root``.

    Only intact runs count: ``result.json`` is verified against its checksum before it is read,
    and of a finished one (status ``done``) ``evals.parquet`` and ``log.parquet`` too; a run with a
    corrupt or unchecked file is skipped with one warning line on stderr (and ``(run, message)``
    appended to ``skipped`` when a list is given).

    A run row has the run folder's name (``run``), its ``config_id`` and ``label``, its seed,
    every field of its :func:`config_key` (``optim`` flattened to ``optim.<name>``), and its
    results (``steps_done``, ``forward_passes``, ``train_wall_time_s``, ``peak_memory_mb``,
    ``zero_shot_dev`` / ``zero_shot_test``, ``best_dev``, ``best_step``, ``test_at_best``).
    Evaluation rows are ``evals.parquet``'s with ``run``, ``config_id``, ``label``, ``task``,
    ``seed`` and ``lr`` added.
    """
    runs, evals = [], []
    for res in sorted(Path(root).glob("*/result.json")):
        reason = _problem(res)
        if reason is not None:
            _skip(res.parent, res, reason, skipped)
            continue
        try:
            r = json.loads(res.read_text())
        except (OSError, ValueError) as err:
            _skip(res.parent, res, f"unreadable: {err}", skipped)
            continue
        if not isinstance(r, dict) or r.get("status") != "done":
            continue
        bad = [(p, why) for p in (res.parent / "evals.parquet", res.parent / "log.parquet")
               if (why := _problem(p)) is not None]
        if bad:
            _skip(res.parent, *bad[0], skipped)
            continue
        cfg = r["config"]
        key = config_key(r)
        row = {
            "run": res.parent.name, "config_id": config_id(key), "label": run_label(cfg),
            "seed": cfg["seed"], **_flat(key),
            "steps_done": r["steps_done"], "forward_passes": r["forward_passes"],
            "train_wall_time_s": r["train_wall_time"], "peak_memory_mb": r.get("peak_memory_mb"),
            "zero_shot_dev": r["zero_shot"]["dev"], "zero_shot_test": r["zero_shot"]["test"],
            "best_dev": r["best"]["dev_accuracy"], "best_step": r["best"]["step"], "test_at_best": r["test_at_best"],
        }
        runs.append(row)
        e = pd.read_parquet(res.parent / "evals.parquet")
        for k in ("run", "config_id", "label", "task", "seed", "lr"):
            e[k] = row.get(k)
        evals.append(e)
    return pd.DataFrame(runs), (pd.concat(evals, ignore_index=True) if evals else pd.DataFrame())


#: Columns of a run row that are not configuration (what ``collect`` adds besides the key).
_RUN_COLUMNS = ("run", "config_id", "label", "seed", "steps_done", "forward_passes", "train_wall_time_s",
                "peak_memory_mb", "zero_shot_dev", "zero_shot_test", "best_dev", "best_step", "test_at_best")
_SUMMARY_COLUMNS = ("seeds", "seed_list", "runs", "train_minutes", *METRIC_COLUMNS)


def _config_columns(frame: pd.DataFrame) -> list[str]:
    """The configuration columns of a runs / summary frame (the flattened key), in the saved order."""
    skip = set(_RUN_COLUMNS) | set(_SUMMARY_COLUMNS)
    return [c for c in frame.columns if c not in skip]


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration (``config_id``): runs are pooled only when they differ in the
    seed alone. ``seeds`` counts the seeds, ``seed_list`` names them, ``runs`` counts the run
    folders (more than ``seeds`` when a seed was run twice); every configuration column of
    ``runs`` is kept; then mean and spread (std, min, max) over the runs of the test accuracy
    at the dev-selected step, and means of the rest."""
    rows = []
    config_cols = _config_columns(runs)
    for cid, g in runs.groupby("config_id", sort=False):
        first = g.iloc[0]
        seeds = sorted(int(s) for s in g["seed"].unique())
        test = g["test_at_best"].astype(float)
        rows.append({
            **{c: first[c] for c in config_cols}, "config_id": cid, "label": first["label"],
            "seeds": len(seeds), "seed_list": ",".join(map(str, seeds)), "runs": len(g),
            "steps_done": int(g["steps_done"].max()), "forward_passes": g["forward_passes"].max(),
            "train_minutes": g["train_wall_time_s"].mean() / 60, "peak_memory_mb": g["peak_memory_mb"].max(),
            "zero_shot_test": g["zero_shot_test"].mean(),
            "test_mean": test.mean(), "test_std": test.std(), "test_min": test.min(), "test_max": test.max(),
            "best_dev_mean": g["best_dev"].mean(),
        })
    out = pd.DataFrame(rows)
    order = [c for c in ID_COLUMNS if c in out.columns]
    order += [c for c in config_cols if c not in order] + ["runs", "steps_done"] + list(METRIC_COLUMNS)
    return out[order].sort_values(["task", "label"], kind="stable").reset_index(drop=True)


def _cell(v: Any, digits: int = 3) -> str:
    """A metric cell: floats to ``digits`` significant digits, NaN (e.g. the std of one seed) empty."""
    if isinstance(v, float):
        return "" if pd.isna(v) else f"{v:.{digits}g}"
    if v is None or (not isinstance(v, (list, tuple, dict)) and pd.isna(v)):
        return ""
    return str(v)


def _applies(row: Any, column: str) -> bool:
    """Whether the configuration ``row`` (a key dict or a report row) uses the field."""
    if column == "tau" or column.startswith("optim."):
        return _takes(str(row.get("method")), column.removeprefix("optim."))
    if column == "lr_power":
        return row.get("lr_schedule", "constant") == "power"
    if column in ("lora_r", "lora_alpha", "lora_targets"):
        return bool(row.get("lora", False))
    return True


def _value(row: pd.Series, column: str, exact: bool = False) -> str:
    """A configuration cell: ``n/a`` where the configuration does not use the field, ``None``
    (``default`` for ``optim.*``: the method's default) where unset, floats to 6 digits (``exact``:
    ``repr``, what rows are compared by)."""
    if not _applies(row, column):
        return "n/a"
    v = row.get(column)
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return "default" if column.startswith("optim.") else "None"
    if isinstance(v, float):
        return repr(float(v)) if exact else f"{v:.6g}"
    return str(v)


def varying_columns(summary: pd.DataFrame) -> list[str]:
    """Configuration columns (except the :data:`ID_COLUMNS`) that take two or more values over the
    rows whose configuration uses the field."""
    out = []
    for c in _config_columns(summary):
        if c in ID_COLUMNS:
            continue
        values = {_value(r, c, exact=True) for _, r in summary.iterrows()} - {"n/a"}
        if len(values) > 1:
            out.append(c)
    return out


def shared_configuration(summary: pd.DataFrame) -> dict[str, str]:
    """The configuration columns with one value over every row that uses the field (``"... (where
    used)"`` when some rows do not); fields no row uses are left out."""
    varying = set(varying_columns(summary))
    out = {}
    for c in _config_columns(summary):
        if c in ID_COLUMNS or c in varying:
            continue
        values = [_value(r, c) for _, r in summary.iterrows()]
        used = [v for v in values if v != "n/a"]
        if used:
            out[c] = used[0] + (" (where used)" if len(used) < len(values) else "")
    return out


def to_markdown(summary: pd.DataFrame) -> str:
    """The table: :data:`ID_COLUMNS`, the configuration columns that vary between rows (``runs``
    too when a seed was run twice), :data:`METRIC_COLUMNS`; then a line with the configuration
    every row shares."""
    varying = varying_columns(summary)
    cols = list(ID_COLUMNS) + varying
    if (summary["runs"] != summary["seeds"]).any():
        cols.append("runs")
    cols += list(METRIC_COLUMNS)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in summary.iterrows():
        lines.append("| " + " | ".join(_value(r, c) if c in varying else _cell(r[c]) for c in cols) + " |")
    common = ", ".join(f"{c}={v}" for c, v in shared_configuration(summary).items())
    note = (f"Every row: {common}. A row pools the runs that differ in the seed only (seed_list); "
            f"config_id matches a row to its runs in llm_runs.csv; n/a: a field the configuration does not use.")
    lines += ["", note]
    return "\n".join(lines) + "\n"


def _describe(row: pd.Series, columns: list[str]) -> str:
    return " ".join(f"{c}={_value(row, c)}" for c in columns if _applies(row, c))


def curves(dev: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per ``config_id``: dev accuracy against forward passes, ``mean`` / ``min`` / ``max`` over the
    configuration's runs (the curves of :func:`plot`)."""
    return {cid: g.groupby("forward_passes")["accuracy"].agg(["mean", "min", "max"]).reset_index()
            for cid, g in dev.groupby("config_id", sort=False)}


def plot(evals: pd.DataFrame, out: Path, summary: pd.DataFrame | None = None) -> list[Path]:
    """One figure per task: dev accuracy against forward passes, one curve (mean over seeds, band
    min-max) per configuration; the legend names the configuration fields that vary in the task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    dev = evals[evals["split"] == "dev"]
    for task, sub in dev.groupby("task"):
        rows = summary[summary["task"] == task] if summary is not None else None
        varying = varying_columns(rows) if rows is not None and len(rows) > 1 else []
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for cid, curve in curves(sub).items():
            g = sub[sub["config_id"] == cid]
            desc = ""
            if rows is not None and (rows["config_id"] == cid).any():
                desc = _describe(rows[rows["config_id"] == cid].iloc[0], varying)
            seeds = ",".join(str(s) for s in sorted(g["seed"].unique()))
            name = f"{g['label'].iloc[0]}{', ' + desc if desc else ''} [{cid}] (seeds {seeds})"
            line, = ax.plot(curve["forward_passes"], curve["mean"], marker="o", ms=3, label=name)
            ax.fill_between(curve["forward_passes"], curve["min"], curve["max"], color=line.get_color(), alpha=0.15)
        ax.set(xlabel="forward passes (first-order methods: one forward + one backward per step)", ylabel="dev accuracy",
               title=f"{task}: dev accuracy against forward passes (band: min-max over seeds)")
        ax.legend(fontsize=6)
        fig.tight_layout()
        path = out / f"llm_{task}.png"
        try:
            integrity.atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
        finally:
            plt.close(fig)
        paths.append(path)
    return paths


def default_figures(results: str | Path) -> Path:
    """Where the report goes when no folder is named: ``<results>/figures``."""
    return Path(results) / "figures"


def make_report(results: str | Path, figures: str | Path | None = None) -> dict[str, Any]:
    """Write the table, the CSVs and the figures (see the module docstring) into ``figures``
    (default ``<results>/figures``); returns their paths and the number of runs read."""
    results = Path(results)
    figures = Path(figures) if figures is not None else default_figures(results)
    skipped: list[tuple[str, str]] = []
    runs, evals = collect(results, skipped)
    if runs.empty:
        extra = f" ({len(skipped)} run(s) skipped as corrupt, see above)" if skipped else ""
        raise FileNotFoundError(f"no finished fine-tuning runs (result.json with status 'done') under {results}{extra}")
    _remove_stale_temporaries(figures)
    summary = summarise(runs)
    markdown = to_markdown(summary)
    integrity.atomic_write(figures / "llm_report.md", lambda tmp: tmp.write_text(markdown))
    integrity.atomic_write(figures / "llm_report.csv", lambda tmp: summary.to_csv(tmp, index=False))
    integrity.atomic_write(figures / "llm_runs.csv", lambda tmp: runs.to_csv(tmp, index=False))
    made = plot(evals, figures, summary) if not evals.empty else []
    return {"table": figures / "llm_report.md", "figures": made, "runs": len(runs), "rows": len(summary),
            "skipped": skipped}


def _remove_stale_temporaries(figures: Path) -> None:
    """Temporaries of a killed report in ``figures`` (``.llm_*.<pid>.tmp``) whose writer is gone."""
    if figures.is_dir():
        integrity.remove_stale_temporaries(figures.glob(".llm_*.tmp"))


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "finetune-report", help="table and figures from saved fine-tuning runs",
        description="One table row per configuration (runs pooled only when they differ in the seed "
                    "alone), one figure per task. Writes llm_report.md, llm_report.csv, llm_runs.csv and "
                    "llm_<task>.png into <results>/figures unless --figures names another folder "
                    "(--figures figures updates the committed figures/). A run whose result.json or logs do "
                    "not match their SHA-256 checksum files is skipped with a warning line (delete its folder "
                    "and re-run it).")
    p.add_argument("--results", default="results/finetune", help="folder of run folders (default results/finetune)")
    p.add_argument("--figures", default=None, metavar="DIR",
                   help="where the table and figures go (default <results>/figures; "
                        "pass --figures figures to write the committed figures/)")

    def run(args: argparse.Namespace) -> int:
        try:
            out = make_report(args.results, args.figures)
        except FileNotFoundError as e:
            print(e)
            return 2
        corrupt = f"; {len(out['skipped'])} corrupt run(s) skipped (see the warnings)" if out["skipped"] else ""
        print(f"{out['runs']} runs in {out['rows']} configurations -> {out['table']} "
              f"and {len(out['figures'])} figure(s){corrupt}")
        return 0

    p.set_defaults(func=run)
