"""Tidy result files: one parquet file per run, written atomically with a checksum, skipped when intact.

A run's file is ``<root>/<experiment>/<run_id>.parquet``; ``run_id`` is a hash of
the run's full configuration, so a re-run of a sweep finds finished runs by name
and computes only what is missing (a killed sweep resumes with nothing lost and
nothing duplicated). Files are written by :func:`zotheory.integrity.write_checked`: a
temporary named for the writing process (``.<name>.<pid>.tmp``), fsync'ed and renamed, then
the SHA-256 of the file's bytes in a sidecar ``<run_id>.parquet.sha256``. A reader never sees
a partial file, and a file without its sidecar was never finished.

Every read verifies the checksum. The sweep counts a run as done only when
:func:`result_file_problem` finds its file intact (the sidecar's SHA-256 matches, then the
parquet footer has rows and the columns every run file has) and recomputes it otherwise;
:func:`load_results` turns any such file into a :class:`CorruptResultFile` naming the file
and the fix (delete it and re-run the sweep: only that run is recomputed). Result folders
written before checksums existed have no sidecars: their files count as unfinished and are
recomputed (same configuration, same random streams: the same numbers), never trusted unchecked.

:func:`remove_stale_temporaries` removes a temporary only when the process named in it is gone,
so a sweep starting beside another one on the same folder leaves the other's writes alone.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from zotheory import integrity

# The columns every run file has (written by ``runner.run_group``); the cheap check looks for them
# in the parquet schema, without reading any data.
REQUIRED_COLUMNS = ("run_id", "experiment", "algorithm", "seed", "T", "t", "f_gap")


class CorruptResultFile(integrity.CorruptFile):
    """A run file that cannot be read as a result file (damaged, not matching its checksum, or
    without one); ``path`` names it. A :class:`~zotheory.integrity.CorruptFile`, hence a
    :class:`~zotheory.errors.CommandError`: one line from the command line, exit code 2."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = Path(path)
        self.reason = " ".join(str(reason).split())
        Exception.__init__(  # CorruptFile's own wording is for any file; this one names the sweep
            self, f"corrupt result file {self.path} ({self.reason}): delete it and re-run the sweep "
                  f"(`zotheory rates` with the same preset and --results) to recompute that run only")


def _checksum_problem(path: Path) -> str | None:
    """:func:`zotheory.integrity.problem`, worded for run files (a missing sidecar is also what a
    result folder written before checksums has)."""
    reason = integrity.problem(path)
    if reason is not None and reason != "missing" and not integrity.sidecar(path).exists():
        return (f"no checksum file {integrity.sidecar(path).name}: an interrupted write, or a file "
                f"written before result files had checksums")
    return reason


def _schema_problem(names: Iterable[str], rows: int) -> str | None:
    present = set(names)
    missing = [c for c in REQUIRED_COLUMNS if c not in present]
    if missing:
        return f"missing column(s) {missing}"
    if rows <= 0:
        return "no rows"
    return None


def result_file_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not an intact run file (one line), or ``None`` when it is.

    First the checksum (:func:`zotheory.integrity.problem`: the file's SHA-256 must equal its
    sidecar's, so any flipped bit, truncation or overwrite is found, and a file without a sidecar
    is unfinished), then the parquet footer (schema and row count, no data pages): the columns
    every run file has and at least one row.
    """
    import pyarrow.parquet as pq

    path = Path(path)
    reason = _checksum_problem(path)
    if reason is not None:
        return reason
    try:
        meta = pq.read_metadata(path)
        names, rows = meta.schema.names, meta.num_rows
    except Exception as err:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ... for a damaged footer
        return " ".join(f"{type(err).__name__}: {err}".split()) or type(err).__name__
    return _schema_problem(names, rows)


def read_result_file(path: str | os.PathLike) -> pd.DataFrame:
    """One run file, verified: its bytes are read once, their SHA-256 compared with the sidecar,
    and the same bytes parsed. :class:`CorruptResultFile` naming the file otherwise."""
    path = Path(path)
    if not integrity.sidecar(path).exists():
        raise CorruptResultFile(path, _checksum_problem(path) or "missing")
    try:
        data = integrity.read_checked(path)
    except integrity.CorruptFile as err:
        raise CorruptResultFile(path, err.reason) from err
    try:
        df = pd.read_parquet(io.BytesIO(data))
    except Exception as err:  # noqa: BLE001 - intact bytes that are not a parquet file
        raise CorruptResultFile(path, f"{type(err).__name__}: {err}") from err
    reason = _schema_problem(df.columns, len(df))
    if reason is not None:
        raise CorruptResultFile(path, reason)
    return df


def canonical_json(config: dict[str, Any]) -> str:
    """A stable text form of a configuration (sorted keys, floats in repr)."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"), default=repr)


def run_id(config: dict[str, Any]) -> str:
    """16 hex digits of the SHA-256 of the canonical configuration."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:16]


def write_parquet_atomic(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``df`` to ``path`` with :func:`zotheory.integrity.write_checked`: atomically (a
    temporary named for this process, fsync, rename) and then its SHA-256 sidecar. A full disk,
    a read-only file system or a refused permission is a one-line
    :class:`~zotheory.errors.CommandError` naming the path; the previous file, if any, is kept."""
    return integrity.write_checked(path, lambda tmp: df.to_parquet(tmp, index=False))


# Temporaries of the writer before per-process names (``tempfile.mkstemp``: no pid in the name);
# such a file is removed once it is this old (a run file is written in milliseconds).
_LEGACY_TMP = re.compile(r"^\..+\.parquet\.[A-Za-z0-9_]{8}\.tmp$")
LEGACY_TMP_AGE_S = 600.0


def remove_stale_temporaries(root: str | os.PathLike) -> int:
    """Delete temporary files left by a killed writer; returns how many were removed.

    A temporary names its writer (``.<name>.<pid>.tmp``): it is removed only when that process
    is gone (:func:`zotheory.integrity.owner_alive`), so a live sweep's writes on the same folder
    are left alone. An unnamed one from an older version is removed once older than
    :data:`LEGACY_TMP_AGE_S`. Best effort: a file that cannot be removed is left in place."""
    root = Path(root)
    if not root.is_dir():
        return 0
    temporaries = list(root.rglob(".*.tmp"))
    n = integrity.remove_stale_temporaries(temporaries)
    for p in temporaries:
        try:
            if _LEGACY_TMP.match(p.name) and time.time() - p.stat().st_mtime > LEGACY_TMP_AGE_S:
                p.unlink()
                n += 1
        except OSError:  # gone meanwhile, or not ours to remove
            continue
    return n


def load_results(root: str | os.PathLike, experiments: Iterable[str] | None = None) -> pd.DataFrame:
    """Concatenate every run file under ``root`` (optionally only some experiments), each one
    verified against its checksum (:func:`read_result_file`).

    Raises :class:`CorruptResultFile` (a :class:`~zotheory.errors.CommandError`: one line from
    the command line) for the first file that is damaged, has no checksum, or cannot be read."""
    root = Path(root)
    names = list(experiments) if experiments is not None else None
    frames = []
    for p in sorted(root.glob("*/*.parquet")):
        if names is not None and p.parent.name not in names:
            continue
        frames.append(read_result_file(p))
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


@lru_cache(maxsize=1)
def provenance() -> dict[str, str]:
    """Git SHA (with a ``-dirty`` mark) and package versions, recorded in every row."""
    import numpy
    import torch

    from zotheory import __version__

    return {
        "git_sha": integrity.git_sha() or "unknown",
        "zotheory_version": __version__,
        "torch_version": torch.__version__,
        "numpy_version": numpy.__version__,
    }
