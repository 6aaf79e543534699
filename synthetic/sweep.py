"""Run a sweep of experiments: groups of runs, one result file per run, resumable.

A group whose every run file exists (and is readable) is skipped. A group with any file missing is
run again in full (its random streams depend only on the group, so the runs that
were already saved come out identical) and only the missing files are written:
a killed sweep resumes with nothing lost and nothing duplicated.

A run counts as done only when its file is readable (:func:`~.results.result_file_problem`:
parquet footer, rows, the expected columns). A corrupt or unreadable file is reported on
stderr (one line naming it) and its run is recomputed like a missing one; the new file
replaces the damaged one atomically.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from zotheory.cli import ensure_writable_dir

from .experiments import build
from .results import provenance, remove_stale_temporaries, result_file_problem, write_parquet_atomic
from .runner import RunSpec, group_runs, run_group


def result_path(root: Path, spec: RunSpec) -> Path:
    return root / spec.experiment / f"{spec.run_id}.parquet"


def _report_corrupt(path: Path, problem: str) -> None:
    print(f"corrupt result file {path} ({problem}): recomputing that run", file=sys.stderr, flush=True)


def finished_runs(root: Path, specs: Sequence[RunSpec],
                  on_corrupt: Callable[[Path, str], None] | None = _report_corrupt) -> set[str]:
    """The run ids of ``specs`` whose result file under ``root`` exists and is readable; each
    existing but unreadable file is passed to ``on_corrupt(path, problem)``."""
    done = set()
    for spec in specs:
        path = result_path(root, spec)
        if not path.exists():
            continue
        problem = result_file_problem(path)
        if problem is None:
            done.add(spec.run_id)
        elif on_corrupt is not None:
            on_corrupt(path, problem)
    return done


def run_specs(specs: Sequence[RunSpec], root: str | Path, *, progress: bool = True) -> dict[str, int]:
    """Run every missing (or corrupt) run of ``specs`` under ``root``; returns counts:
    ``runs``, ``groups``, ``written``, ``skipped`` (done already) and ``corrupt`` (found
    unreadable, recomputed)."""
    root = Path(root)
    remove_stale_temporaries(root)
    # The batched tensors are small ((B, d) with B*d ~ 1e2..1e4): intra-op threads only add
    # contention (measured: several times slower per step with 2 threads on a loaded machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_groups(root, specs, progress)
    finally:
        torch.set_num_threads(threads)


def _run_groups(root: Path, specs: Sequence[RunSpec], progress: bool) -> dict[str, int]:
    groups = group_runs(specs)
    corrupt: list[Path] = []

    def on_corrupt(path: Path, problem: str) -> None:
        corrupt.append(path)
        _report_corrupt(path, problem)

    done = finished_runs(root, [s for g in groups for s in g], on_corrupt)
    todo = [g for g in groups if any(s.run_id not in done for s in g)]
    skipped = sum(1 for g in groups for s in g if s.run_id in done)
    # Every folder a result will be written to is checked before any computing (a read-only or
    # a file-in-the-way folder is a one-line CommandError now, not a traceback after the work).
    for experiment in sorted({g[0].experiment for g in todo}):
        ensure_writable_dir(root / experiment, "results")
    total_steps = sum(len(g) * max(s.T for s in g) for g in todo)
    prov = provenance()
    written = 0
    with tqdm(total=total_steps, unit="run-step", unit_scale=True, disable=not progress,
              desc="rates", dynamic_ncols=True) as bar:
        for group in todo:
            bar.set_postfix_str(f"{group[0].experiment}: {group[0].algorithm} T<={max(s.T for s in group)} B={len(group)}")
            frames = run_group(group, progress=bar.update)
            for spec in group:
                if spec.run_id in done:
                    continue
                path = result_path(root, spec)
                df = frames[spec.run_id]
                for k, v in prov.items():
                    df[k] = v
                write_parquet_atomic(df, path)
                done.add(spec.run_id)
                written += 1
    return {"runs": sum(len(g) for g in groups), "written": written, "skipped": skipped, "groups": len(groups),
            "corrupt": len(corrupt)}


def run_sweep(preset: str, root: str | Path, only: list[str] | None = None, *, progress: bool = True) -> dict[str, int]:
    """Build the experiments of ``preset`` (optionally ``only`` some) and run what is missing."""
    return run_specs(build(preset, only), root, progress=progress)
