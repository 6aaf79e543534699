"""Files that cannot be half-written or silently corrupt: atomic writes and checksums.

* :func:`atomic_write` -- ``write(tmp)`` into a temporary in the same folder, named for this
  process (``.<name>.<pid>.tmp``), fsync, rename over ``path``, fsync the folder. A reader
  sees the old file or the new one, never a mix; a killed writer leaves only its temporary.
* :func:`write_checked` -- :func:`atomic_write`, then the SHA-256 of the file's bytes in a
  sidecar ``<name>.sha256`` (written atomically after the file). A file without its sidecar
  was never finished.
* :func:`verify` -- recompute the SHA-256 and compare: :class:`CorruptFile` (a
  :class:`~zotheory.errors.CommandError`, one line naming the file and the fix) on a mismatch,
  a missing or unreadable sidecar, or a missing file. Every single-bit flip anywhere in the
  file (or its sidecar) is detected.
* :func:`problem` -- the same check as a string (or None), for callers that decide themselves
  (a sweep recomputes such a run).
* :func:`is_temporary`, :func:`temporary_owner`, :func:`remove_stale_temporaries` -- recognise
  temporaries and the process that wrote them; stale ones are removed only when their owner is
  gone.
* :func:`git_sha` -- the provenance every result records: the source tree's commit.

OS errors while writing (a full disk, a read-only file system, no permission) become a
:class:`CommandError` naming the path (:func:`atomic_write`); the temporary is removed.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable

from .errors import CommandError

__all__ = ["CorruptFile", "git_sha", "atomic_write", "write_checked", "verify", "problem", "sha256_file", "SIDECAR",
           "is_temporary", "temporary_owner", "remove_stale_temporaries", "owner_alive", "disk_error"]

SIDECAR = ".sha256"
_TMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.tmp$")


class CorruptFile(CommandError):
    """A result file or checkpoint whose bytes do not match its checksum (or that has none)."""

    def __init__(self, path: str | os.PathLike, reason: str, fix: str | None = None) -> None:
        self.path, self.reason = Path(path), reason
        fix = fix or "delete it and re-run: that recomputes this run only"
        super().__init__(f"corrupt file {self.path} ({reason}): {fix}")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                return h.hexdigest()
            h.update(block)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - a platform without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def disk_error(err: OSError, path: str | os.PathLike) -> CommandError:
    """A one-line error for a failed write: the path and what to do."""
    what = {errno.ENOSPC: "no space left on the device", errno.EROFS: "the file system is read-only",
            errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
            errno.EDQUOT: "disk quota exceeded"}.get(err.errno or -1, err.strerror or type(err).__name__)
    return CommandError(f"cannot write {path}: {what} [errno {err.errno}]; free space or choose a writable "
                        f"folder, then re-run (finished runs are kept)")


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """``write(tmp)`` then rename over ``path`` (see the module doc). Returns ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT):
            raise disk_error(err, path) from err
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def sidecar(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + SIDECAR)


def write_checked(path: str | os.PathLike, write: Callable[[Path], None], *,
                  before_rename: Callable[[str], None] | None = None) -> Path:
    """:func:`atomic_write` plus the SHA-256 sidecar (written after the file). The digest is taken
    once, of the complete temporary; ``before_rename(digest)`` (optional) runs before the rename
    (the training loop records it there, so a kill between the file and its sidecar is
    recoverable)."""
    digest: list[str] = []

    def staged(tmp: Path) -> None:
        write(tmp)
        digest.append(sha256_file(tmp))
        if before_rename is not None:
            before_rename(digest[0])

    path = atomic_write(path, staged)
    atomic_write(sidecar(path), lambda p: p.write_text(f"{digest[0]}  {path.name}\n"))
    return path


def problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a complete, intact file written by :func:`write_checked` (None: it is)."""
    path = Path(path)
    if not path.is_file():
        return "missing"
    side = sidecar(path)
    if not side.is_file():
        return f"no checksum file {side.name} (the write never finished)"
    try:
        text = side.read_bytes()
    except OSError as err:
        return f"unreadable checksum file {side.name}: {err.strerror or type(err).__name__}"
    m = re.fullmatch(rb"([0-9a-f]{64})  (.*)\n", text)
    if m is None or m.group(2) != path.name.encode():
        return f"malformed checksum file {side.name}"
    recorded = m.group(1).decode()
    try:
        actual = sha256_file(path)
    except OSError as err:
        return f"unreadable: {err.strerror or type(err).__name__}"
    if actual != recorded:
        return f"SHA-256 {actual[:12]}... does not match the recorded {recorded[:12]}..."
    return None


def verify(path: str | os.PathLike, fix: str | None = None) -> Path:
    """``path`` if it is intact (:func:`problem` is None), else :class:`CorruptFile`."""
    reason = problem(path)
    if reason is not None:
        raise CorruptFile(path, reason, fix)
    return Path(path)


def is_temporary(path: str | os.PathLike) -> bool:
    return _TMP.match(Path(path).name) is not None


def temporary_owner(path: str | os.PathLike) -> int | None:
    """The pid in a temporary's name (``.<name>.<pid>.tmp``), or None."""
    m = _TMP.match(Path(path).name)
    return int(m.group("pid")) if m else None


def remove_stale_temporaries(paths: Iterable[str | os.PathLike]) -> int:
    """Delete those of ``paths`` that are temporaries (``.<name>.<pid>.tmp``) whose writing process
    is gone; returns how many. A live writer's temporaries (another sweep's, another report's)
    are left alone, as is anything that is not a temporary or cannot be removed."""
    n = 0
    for p in paths:
        pid = temporary_owner(p)
        if pid is None or owner_alive(pid):
            continue
        try:
            Path(p).unlink()
            n += 1
        except OSError:  # gone meanwhile, or not ours to remove
            pass
    return n


def owner_alive(pid: int) -> bool:
    """Whether a process with this pid exists (on this machine)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's process
        return True
    return True


# ----------------------------------------------------------------------------- added for the rates sweep
# (issue 18): a read that verifies the very bytes it returns, and advisory locks.


def _recorded_sha256(path: Path) -> tuple[str | None, str | None]:
    """(the digest recorded in ``path``'s sidecar, None) or (None, why there is none); the same
    rules and wording as :func:`problem`."""
    side = sidecar(path)
    if not side.is_file():
        return None, f"no checksum file {side.name} (the write never finished)"
    try:
        text = side.read_bytes()
    except OSError as err:
        return None, f"unreadable checksum file {side.name}: {err.strerror or type(err).__name__}"
    m = re.fullmatch(rb"([0-9a-f]{64})  (.*)\n", text)
    if m is None or m.group(2) != path.name.encode():
        return None, f"malformed checksum file {side.name}"
    return m.group(1).decode(), None


def read_checked(path: str | os.PathLike, fix: str | None = None) -> bytes:
    """The bytes of ``path``, read once and verified against its sidecar (so what the caller
    parses is exactly what was checked); :class:`CorruptFile` as :func:`verify` otherwise."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CorruptFile(path, "missing", fix) from None
    except OSError as err:
        raise CorruptFile(path, f"unreadable: {err.strerror or type(err).__name__}", fix) from err
    recorded, reason = _recorded_sha256(path)
    if reason is not None:
        raise CorruptFile(path, reason, fix)
    actual = hashlib.sha256(data).hexdigest()
    if actual != recorded:
        raise CorruptFile(path, f"SHA-256 {actual[:12]}... does not match the recorded {recorded[:12]}...", fix)
    return data


def try_lock(path: str | os.PathLike, *, blocking: bool = False) -> int | None:
    """An exclusive advisory lock (``fcntl.flock``) on the file ``path`` (created if missing):
    the open descriptor holding it, to pass to :func:`unlock`; None when another process (or
    another descriptor) holds it and ``blocking`` is false. The kernel releases it when the
    holder exits, however it exits. Linux/POSIX only. Missing folders are created; one that
    cannot be written is the one-line error of :func:`disk_error`. The lock file is left in place
    (removing it would let two processes lock two different files of the same name)."""
    import fcntl

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT):
            raise disk_error(err, path) from err
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def unlock(fd: int) -> None:
    """Release a lock taken by :func:`try_lock` (closing its descriptor)."""
    os.close(fd)


__all__ += ["read_checked", "sidecar", "try_lock", "unlock"]


@lru_cache(maxsize=1)
def git_sha() -> str | None:
    """``git rev-parse HEAD`` of the package's source tree with ``-dirty`` appended when tracked files
    have uncommitted changes; ``None`` outside a git checkout or without git. Once per process."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        if not sha:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + "-dirty" if dirty else sha
