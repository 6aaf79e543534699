"""zotheory.integrity: atomic writes, SHA-256 sidecars, every bit flip detected."""

from __future__ import annotations

import errno
import os

import pytest

from zotheory import integrity


def test_every_single_bit_flip_of_a_file_or_its_sidecar_is_detected(tmp_path):
    path = integrity.write_checked(tmp_path / "run.parquet", lambda t: t.write_bytes(bytes(range(97))))
    assert integrity.problem(path) is None
    for target in (path, integrity.sidecar(path)):
        data = bytearray(target.read_bytes())
        for i in range(len(data)):
            for bit in range(8):
                data[i] ^= 1 << bit
                target.write_bytes(bytes(data))
                assert integrity.problem(path) is not None, (target.name, i, bit)
                data[i] ^= 1 << bit
        target.write_bytes(bytes(data))
        assert integrity.problem(path) is None


def test_a_file_without_its_sidecar_was_never_finished(tmp_path):
    path = integrity.atomic_write(tmp_path / "x.json", lambda t: t.write_text("{}"))
    assert "no checksum file" in integrity.problem(path)
    with pytest.raises(integrity.CorruptFile, match=r"corrupt file .*x.json .*delete it and re-run"):
        integrity.verify(path)
    assert integrity.problem(tmp_path / "absent") == "missing"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = integrity.write_checked(tmp_path / "r.bin", lambda t: t.write_bytes(b"old"))

    def full_disk(tmp):
        tmp.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(integrity.CommandError, match=r"cannot write .*r.bin: no space left on the device"):
        integrity.write_checked(path, full_disk)
    assert path.read_bytes() == b"old" and integrity.problem(path) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.bin", "r.bin.sha256"]


def test_temporaries_name_their_writer(tmp_path):
    name = tmp_path / f".r.bin.{os.getpid()}.tmp"
    assert integrity.is_temporary(name) and integrity.temporary_owner(name) == os.getpid()
    assert integrity.owner_alive(os.getpid())
    assert not integrity.is_temporary(tmp_path / "r.bin")


def test_write_checked_hashes_the_file_once_and_reports_the_digest_before_the_rename(tmp_path, monkeypatch):
    """A checkpoint can be gigabytes: its SHA-256 is taken once, of the complete temporary, and the
    caller's ``before_rename`` sees that digest while the old file is still in place."""
    calls, seen = [], []
    real = integrity.sha256_file
    monkeypatch.setattr(integrity, "sha256_file", lambda p: calls.append(p) or real(p))
    path = tmp_path / "ckpt.bin"
    integrity.write_checked(path, lambda t: t.write_bytes(b"old"))
    calls.clear()
    integrity.write_checked(path, lambda t: t.write_bytes(b"new"),
                            before_rename=lambda d: seen.append((d, path.read_bytes())))
    assert len(calls) == 1
    assert seen == [(real(path), b"old")] and integrity.problem(path) is None
