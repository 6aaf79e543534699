"""Tidy result files: one parquet file per run, written atomically, skipped when present.

A run's file is ``<root>/<experiment>/<run_id>.parquet``; ``run_id`` is a hash of
the run's full configuration, so a re-run of a sweep finds finished runs by name
and computes only what is missing (a killed sweep resumes with nothing lost and
nothing duplicated). Files are written to a temporary name in the same folder,
flushed, fsync'ed and renamed: a reader never sees a partial file.

A file can still be damaged afterwards (a full disk, a bad copy, an edit by hand). The sweep
counts a run as done only when :func:`result_file_problem` finds its file readable (parquet
footer, at least one row, the columns every run file has), and recomputes it otherwise;
:func:`load_results` turns any unreadable file into a :class:`CorruptResultFile` naming the
file and the fix (delete it and re-run the sweep: only that run is recomputed).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from zotheory.errors import CommandError

# The columns every run file has (written by ``runner.run_group``); the cheap check looks for them
# in the parquet schema, without reading any data.
REQUIRED_COLUMNS = ("run_id", "experiment", "algorithm", "seed", "T", "t", "f_gap")


class CorruptResultFile(CommandError):
    """A run file that cannot be read as a result file; ``path`` names it."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = Path(path)
        self.reason = " ".join(str(reason).split())
        super().__init__(
            f"corrupt result file {self.path} ({self.reason}): delete it and re-run the sweep "
            f"(`zotheory rates` with the same preset and --results) to recompute that run only")


def result_file_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a readable run file (one line), or ``None`` when it is.

    Cheap: reads the parquet footer only (schema and row count), no data pages. A file damaged
    inside its data pages passes this check and fails in :func:`load_results` instead.
    """
    import pyarrow.parquet as pq

    try:
        meta = pq.read_metadata(path)
        names = set(meta.schema.names)
        rows = meta.num_rows
    except Exception as err:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ... for a damaged footer
        return " ".join(f"{type(err).__name__}: {err}".split()) or type(err).__name__
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        return f"missing column(s) {missing}"
    if rows <= 0:
        return "no rows"
    return None


def canonical_json(config: dict[str, Any]) -> str:
    """A stable text form of a configuration (sorted keys, floats in repr)."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"), default=repr)


def run_id(config: dict[str, Any]) -> str:
    """16 hex digits of the SHA-256 of the canonical configuration."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:16]


def write_parquet_atomic(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``df`` to ``path`` atomically (temp file + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            df.to_parquet(fh, index=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def remove_stale_temporaries(root: str | os.PathLike) -> int:
    """Delete temporary files left by a killed writer; returns how many were removed."""
    root = Path(root)
    n = 0
    if root.exists():
        for p in root.rglob(".*.tmp"):
            p.unlink(missing_ok=True)
            n += 1
    return n


def load_results(root: str | os.PathLike, experiments: Iterable[str] | None = None) -> pd.DataFrame:
    """Concatenate every run file under ``root`` (optionally only some experiments).

    Raises :class:`CorruptResultFile` (a :class:`~zotheory.errors.CommandError`: one line from
    the command line) for the first file that cannot be read."""
    root = Path(root)
    names = list(experiments) if experiments is not None else None
    frames = []
    for p in sorted(root.glob("*/*.parquet")):
        if names is not None and p.parent.name not in names:
            continue
        problem = result_file_problem(p)
        if problem is not None:
            raise CorruptResultFile(p, problem)
        try:
            frames.append(pd.read_parquet(p))
        except Exception as err:  # damaged data pages behind an intact footer
            raise CorruptResultFile(p, f"{type(err).__name__}: {err}") from err
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


@lru_cache(maxsize=1)
def provenance() -> dict[str, str]:
    """Git SHA (with a ``-dirty`` mark) and package versions, recorded in every row."""
    import numpy
    import torch

    from zotheory import __version__

    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here, capture_output=True, text=True, timeout=10,
        ).stdout.strip()
        if sha and dirty:
            sha += "-dirty"
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return {
        "git_sha": sha or "unknown",
        "zotheory_version": __version__,
        "torch_version": torch.__version__,
        "numpy_version": numpy.__version__,
    }
