"""Run a sweep of experiments: groups of runs, one result file per run, resumable, safe to run twice.

A group whose every run file is intact is skipped. A group with any file missing is
run again in full (its random streams depend only on the group, so the runs that
were already saved come out identical) and only the missing files are written:
a killed sweep resumes with nothing lost and nothing duplicated.

A run counts as done only when its file is intact (:func:`~.results.result_file_problem`: its
SHA-256 matches the sidecar written after it, then the parquet footer has rows and the expected
columns). A corrupt file, or one without a checksum (an interrupted write, or a folder written
before checksums), is reported on stderr (one line naming it) and its run is recomputed like a
missing one; the new file replaces the damaged one atomically.

Before any computing, every experiment folder a result will be written to is checked for
writability; a full disk, a read-only file system or a refused permission met later is a
one-line error naming the path (finished files are never touched: each write is atomic).

Two sweeps on the same folder (two terminals, two jobs) share the work: each group is computed
under an exclusive ``fcntl.flock`` on ``<experiment>/.group-<key>.lock``, taken without waiting.
A group locked by another live process is set aside and taken up at the end, when its lock is
free (waiting for it if need be): the other process has then written it, and it is only checked,
or it died, and it is computed here. No run is computed twice, both sweeps end with the full set,
and neither removes the other's temporaries (:func:`~.results.remove_stale_temporaries` removes
only those whose writer is gone). Locks are released by the kernel when a process dies.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from zotheory import integrity
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
    """The run ids of ``specs`` whose result file under ``root`` exists and is intact (its checksum
    verified, :func:`~.results.result_file_problem`); each existing file that is not (damaged,
    or without its checksum file) is passed to ``on_corrupt(path, problem)``."""
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


def lock_path(root: Path, group: Sequence[RunSpec]) -> Path:
    """The lock file of a group (every run of a group has the same experiment and group key)."""
    return root / group[0].experiment / f".group-{group[0].group_key()}.lock"


def run_specs(specs: Sequence[RunSpec], root: str | Path, *, progress: bool = True) -> dict[str, int]:
    """Run every missing (or corrupt) run of ``specs`` under ``root``; returns counts:
    ``runs``, ``groups``, ``written`` (computed and written by this process), ``skipped``
    (the others: done already, or by another sweep meanwhile), ``corrupt`` (found damaged or
    without a checksum, recomputed) and ``concurrent`` (missing at the start, then written by
    another sweep on the same folder)."""
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


def _steps(group: Sequence[RunSpec]) -> int:
    return len(group) * max(s.T for s in group)


def _run_groups(root: Path, specs: Sequence[RunSpec], progress: bool) -> dict[str, int]:
    groups = group_runs(specs)
    corrupt: list[Path] = []

    def on_corrupt(path: Path, problem: str) -> None:
        corrupt.append(path)
        _report_corrupt(path, problem)

    # A first, silent look at what is missing (the folders to check, the progress total); the
    # answer that counts is the one under each group's lock (another sweep may be writing).
    done_at_start = finished_runs(root, [s for g in groups for s in g], on_corrupt=None)
    todo = [g for g in groups if any(s.run_id not in done_at_start for s in g)]
    # Every folder a result will be written to is checked before any computing (a read-only or
    # a file-in-the-way folder is a one-line CommandError now, not a traceback after the work).
    for experiment in sorted({g[0].experiment for g in todo}):
        ensure_writable_dir(root / experiment, "results")
    prov = provenance()
    counts = {"written": 0, "concurrent": 0}

    with tqdm(total=sum(_steps(g) for g in todo), unit="run-step", unit_scale=True, disable=not progress,
              desc="rates", dynamic_ncols=True) as bar:

        def compute(group: list[RunSpec], fd: int) -> None:
            """The group's missing runs, under its lock (``fd``, released here)."""
            try:
                done = finished_runs(root, group, on_corrupt)
                counts["concurrent"] += sum(1 for s in group if s.run_id in done and s.run_id not in done_at_start)
                if len(done) == len(group):  # another sweep finished it meanwhile
                    bar.update(_steps(group))
                    return
                bar.set_postfix_str(f"{group[0].experiment}: {group[0].algorithm} "
                                    f"T<={max(s.T for s in group)} B={len(group)}")
                frames = run_group(group, progress=bar.update)
                for spec in group:
                    if spec.run_id in done:
                        continue
                    df = frames[spec.run_id]
                    for k, v in prov.items():
                        df[k] = v
                    write_parquet_atomic(df, result_path(root, spec))
                    counts["written"] += 1
            finally:
                integrity.unlock(fd)

        waiting: list[list[RunSpec]] = []
        for group in todo:
            fd = integrity.try_lock(lock_path(root, group))
            if fd is None:  # another live sweep is computing it: come back at the end
                waiting.append(group)
            else:
                compute(group, fd)
        while waiting:
            still = []
            for group in waiting:
                fd = integrity.try_lock(lock_path(root, group))
                if fd is None:
                    still.append(group)
                else:
                    compute(group, fd)
            if still and len(still) == len(waiting):  # none came free: wait for the first one
                print(f"rates: waiting for another sweep computing {len(still)} group(s) in {root} "
                      f"(lock {lock_path(root, still[0]).name})", file=sys.stderr, flush=True)
                compute(still[0], integrity.try_lock(lock_path(root, still[0]), blocking=True))
                still = still[1:]
            waiting = still

    runs = sum(len(g) for g in groups)
    return {"runs": runs, "written": counts["written"], "skipped": runs - counts["written"],
            "groups": len(groups), "corrupt": len(corrupt), "concurrent": counts["concurrent"]}


def run_sweep(preset: str, root: str | Path, only: list[str] | None = None, *, progress: bool = True) -> dict[str, int]:
    """Build the experiments of ``preset`` (optionally ``only`` some) and run what is missing."""
    return run_specs(build(preset, only), root, progress=progress)
