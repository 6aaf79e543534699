"""Issue 18, the fine-tuning side: checksummed run files, finished runs left alone, resume keyed on
the configuration, logged overrides, the skipped-steps threshold, disk faults, communication
counters over resumed segments, the tau-resolution warning (zotheory.llm.train / distributed /
report).

Each test names the bug it catches. Tiny random-weight models (tiny-llama, a few steps on CPU), a
small in-memory task; faults are injected (a bit flipped in a file, ``OSError(ENOSPC / EROFS)``
raised inside a write): nothing here needs a full disk or a read-only mount (root ignores chmod).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

from zotheory import integrity  # noqa: E402
from zotheory.errors import CommandError  # noqa: E402
from zotheory.integrity import CorruptFile  # noqa: E402
from zotheory.llm import distributed as D  # noqa: E402
from zotheory.llm import models as models_mod  # noqa: E402
from zotheory.llm import report  # noqa: E402
from zotheory.llm import train as train_mod  # noqa: E402
from zotheory.llm.train import (  # noqa: E402
    NonFiniteLossError,
    OutputDirError,
    TooManySkippedError,
    TrainConfig,
    train,
)

from examples import NanAt as _NanAt, ToyTask, run_main  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning"),
              pytest.mark.usefixtures("one_thread")]

def config(out_dir, **kw) -> TrainConfig:
    base = dict(task="toy", model="tiny-llama", method="zo_sgd", steps=4, out_dir=str(out_dir), batch_size=4,
                eval_every=2, eval_examples=8, device="cpu", progress=False, lr=1e-2, checkpoint_every=2)
    base.update(kw)
    return TrainConfig(**base)


def cli_argv(steps: int = 4, lr: str = "0.01") -> list[str]:
    """The `zotheory finetune` command of :func:`config` (checkpoints at eval_every, the CLI's default)."""
    return ["finetune", "--task", "toy", "--model", "tiny-llama", "--method", "zo_sgd", "--steps", str(steps),
            "--batch-size", "4", "--eval-every", "2", "--eval-examples", "8", "--lr", lr, "--device", "cpu",
            "--no-progress"]


CLI = cli_argv()


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """``zotheory.cli.main`` on the toy task: ``run(*argv) -> (code, stdout, stderr)``."""
    monkeypatch.setenv("ZOTHEORY_CACHE", str(tmp_path / "cache"))
    for var in ("ZOTHEORY_DEBUG", "WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(train_mod, "_load_task", lambda cfg: ToyTask())

    return lambda *argv: run_main(argv, capsys)


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def hashes(folder: Path) -> dict[str, str]:
    """Every file of a folder (hidden ones included) by its SHA-256."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def ckpt(out: Path) -> dict:
    return torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)


@pytest.fixture
def no_compute(monkeypatch):
    """Loading a model fails the test: an error must come before any compute."""
    def forbidden(*a, **k):
        raise AssertionError("a model was loaded: the run computed before the error")
    monkeypatch.setattr(models_mod, "load_model", forbidden)


# --------------------------------------------------------------------------- (a) checksums


def test_every_bit_flip_of_a_checkpoint_is_refused_before_any_compute(tmp_path, monkeypatch):
    """Bug: a damaged checkpoint that still unpickles (a flipped weight bit) resumed silently."""
    c = config(tmp_path / "run")
    out = train(c, task=ToyTask(), stop_after=2)
    path = out / "checkpoint.pt"
    good = path.read_bytes()
    assert integrity.problem(path) is None and (out / "checkpoint.pt.sha256").exists()
    for name in ("log.parquet", "evals.parquet", "result.json"):  # every run file has its checksum
        assert integrity.problem(out / name) is None, name
    before = hashes(out)
    monkeypatch.setattr(models_mod, "load_model", lambda *a, **k: pytest.fail("computed on a corrupt checkpoint"))
    n = len(good)
    positions = [round(i * (n - 1) / 39) for i in range(40)]  # 40 flips spread over the whole file
    resumed = dataclasses.replace(c, resume=True)
    for k, pos in enumerate(positions):
        data = bytearray(good)
        data[pos] ^= 1 << (k % 8)
        path.write_bytes(bytes(data))
        with pytest.raises(CorruptFile) as info:
            train(resumed, task=ToyTask())
        msg = str(info.value)
        assert "\n" not in msg and str(path) in msg and "SHA-256" in msg, msg
        assert f"Delete the run folder {out}" in msg and "this run only" in msg
    side = out / "checkpoint.pt.sha256"
    good_side = side.read_bytes()
    for pos in (0, 20, 63, 64, 66, len(good_side) - 1):  # the checksum file itself: digest, spacing, name
        data = bytearray(good_side)
        data[pos] ^= 1
        side.write_bytes(bytes(data))
        with pytest.raises(CorruptFile, match=r"checkpoint\.pt"):
            train(resumed, task=ToyTask())
    side.unlink()  # no checksum file: the write never finished
    with pytest.raises(CorruptFile, match=r"no checksum file checkpoint\.pt\.sha256"):
        train(resumed, task=ToyTask())
    path.write_bytes(good)
    side.write_bytes(good_side)
    assert hashes(out) == before  # nothing was written by the refused resumes


def test_a_corrupt_result_file_is_one_line_and_never_counts_as_finished(tmp_path, cli, capsys):
    """Bug: a finished run's result.json / logs were read without a check: a flipped bit in them
    passed as a finished result (in `finetune` and in `finetune-report`)."""
    root = tmp_path / "runs"
    out = root / "a"
    code, _, err = cli(*CLI, "--out-dir", out)
    assert code == 0, err
    cli(*CLI, "--seed", "1", "--out-dir", root / "b")
    for name in ("result.json", "evals.parquet", "log.parquet"):
        path = out / name
        good = path.read_bytes()
        data = bytearray(good)
        data[len(data) // 2] ^= 4
        path.write_bytes(bytes(data))
        before = hashes(out)
        code, _, err = cli(*CLI, "--out-dir", out)  # re-running the run: not "already finished"
        line = one_line(err)
        assert code == 2 and f"corrupt file {path}" in line and "this run only" in line, line
        assert hashes(out) == before
        skipped = []
        runs, _ = report.collect(root, skipped)  # the report skips it, with a warning line
        assert runs["run"].tolist() == ["b"] and [s[0] for s in skipped] == ["a"]
        assert f"skipping run a: corrupt file {path}" in capsys.readouterr().err
        path.write_bytes(good)
    code, out_text, _ = cli("finetune-report", "--results", root)
    assert code == 0 and "2 runs in 1 configurations" in out_text


# --------------------------------------------------------------------------- (b) finished work is immutable


def test_a_finished_run_is_never_rewritten(tmp_path, cli):
    """Bug: re-running into a finished folder (with --resume) rewrote its files; without --resume it
    was an error although nothing was wrong."""
    out = tmp_path / "run"
    code, _, err = cli(*CLI, "--out-dir", out)
    assert code == 0, err
    before = hashes(out)
    for extra in ([], ["--resume"]):
        code, text, err = cli(*CLI, *extra, "--out-dir", out)
        assert code == 0 and err == "", err
        assert "already holds this finished run" in one_line(text) and str(out) in text
        assert hashes(out) == before, extra
    for extra in ([], ["--resume"]):  # the library says the same (one log line) and writes nothing
        assert train(config(out, checkpoint_every=None, resume=bool(extra)), task=ToyTask()) == out
        assert hashes(out) == before
    # another configuration in a finished folder: refused, nothing written
    code, _, err = cli(*cli_argv(lr="0.02"), "--resume", "--allow-override", "--out-dir", out)
    line = one_line(err)
    assert code == 2 and "finished run" in line and "['lr']" in line and "--overwrite" in line
    assert hashes(out) == before
    # --overwrite recomputes it (same identity: the same results)
    code, _, err = cli(*CLI, "--overwrite", "--out-dir", out)
    assert code == 0, err
    assert hashes(out) != before and json.loads((out / "result.json").read_text())["status"] == "done"
    code, _, err = cli(*CLI, "--overwrite", "--resume", "--out-dir", out)
    assert code == 2 and "--overwrite" in one_line(err)


def test_folders_without_a_valid_checkpoint_are_refused(tmp_path, cli, no_compute):
    """Bug: a folder with files but no checkpoint was silently started over, and --resume on a
    missing or empty folder started a fresh run."""
    held = tmp_path / "held"
    held.mkdir()
    (held / "notes.txt").write_text("keep me")
    (held / "log.parquet").write_bytes(b"from an older run")
    for extra in ([], ["--resume"]):
        code, _, err = cli(*CLI, *extra, "--out-dir", held)
        line = one_line(err)
        assert code == 2 and str(held) in line and "no checkpoint.pt" in line and "log.parquet" in line, line
    assert sorted(p.name for p in held.iterdir()) == ["log.parquet", "notes.txt"]
    code, _, err = cli(*CLI, "--resume", "--out-dir", tmp_path / "missing")
    assert code == 2 and "does not exist" in one_line(err) and "--resume" in err
    assert not (tmp_path / "missing").exists()
    (tmp_path / "empty").mkdir()
    code, _, err = cli(*CLI, "--resume", "--out-dir", tmp_path / "empty")
    assert code == 2 and "is empty" in one_line(err)
    with pytest.raises(OutputDirError, match="does not exist"):
        train(config(tmp_path / "missing2", resume=True), task=ToyTask())


# --------------------------------------------------------------------------- (c) keyed on the configuration


def test_a_moved_run_folder_resumes_bitwise(tmp_path):
    """Bug: out_dir was part of the resume comparison: a moved or copied run folder could not resume."""
    full = train(config(tmp_path / "full", steps=6), task=ToyTask())
    part = config(tmp_path / "part", steps=6)
    train(part, task=ToyTask(), stop_after=2)
    moved = tmp_path / "elsewhere" / "deeper" / "moved"
    moved.parent.mkdir(parents=True)
    shutil.move(str(tmp_path / "part"), moved)
    out = train(dataclasses.replace(part, out_dir=str(moved), resume=True), task=ToyTask())
    a, b = ckpt(full), ckpt(out)
    assert a["step"] == b["step"] == 6
    for n in a["trainable"]:
        assert torch.equal(a["trainable"][n], b["trainable"][n]), n
    assert torch.equal(a["optimizer"]["generator"], b["optimizer"]["generator"])
    for name, drop in (("log.parquet", ["wall_time", "step_time", "peak_memory_mb"]), ("evals.parquet", ["wall_time"])):
        pd.testing.assert_frame_equal(pd.read_parquet(full / name).drop(columns=drop),
                                      pd.read_parquet(out / name).drop(columns=drop), check_exact=True)
    ra, rb = (json.loads((d / "result.json").read_text()) for d in (full, out))
    for key in ("run_id", "zero_shot", "best", "test_at_best", "forward_passes", "steps_done", "status"):
        assert ra[key] == rb[key], key


# --------------------------------------------------------------------------- (d) overrides, skipped steps


def test_resume_with_a_lower_lr_after_a_nan_is_recorded(tmp_path, monkeypatch):
    """Bug: the NaN message said "lower lr/tau, resume from the checkpoint", but a resume with
    another lr was refused, and nothing recorded a change of lr in the run."""
    import zotheory.llm.scoring as scoring

    real = scoring.loss_closure
    c = config(tmp_path / "run", steps=6)
    monkeypatch.setattr(scoring, "loss_closure", _NanAt(real, {3}))
    with pytest.raises(NonFiniteLossError) as info:
        train(c, task=ToyTask())
    msg = str(info.value)
    assert "step 3" in msg and "(step 2)" in msg and "--resume --allow-override" in msg and "--lr" in msg
    monkeypatch.setattr(scoring, "loss_closure", real)
    lower = dataclasses.replace(c, resume=True, lr=1e-3)
    with pytest.raises(ValueError, match=r"differs from the checkpoint's in \['lr'\].*--allow-override"):
        train(lower, task=ToyTask())
    out = train(lower, task=ToyTask(), allow_override=True)
    log = pd.read_parquet(out / "log.parquet")
    assert log["step"].tolist() == [1, 2, 3, 4, 5, 6]
    assert log["segment"].tolist() == [0, 0, 1, 1, 1, 1]
    assert log["lr"].tolist() == [1e-2] * 2 + [1e-3] * 4
    assert log["override"].tolist() == ["", "", "lr 0.01 -> 0.001", "", "", ""]
    assert log["run_id"].nunique() == 1 and log["run_id"].iloc[0] == c.run_id()  # the run keeps its identity
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "done" and result["run_id"] == c.run_id()
    assert result["overrides"] == [{"step": 3, "old": {"lr": 0.01}, "new": {"lr": 0.001}}]
    before = hashes(out)  # the command that started the run, or the one that finished it: finished
    assert train(c, task=ToyTask()) == out and train(lower, task=ToyTask()) == out
    assert hashes(out) == before


def test_too_many_skipped_steps_fail_the_run(tmp_path, monkeypatch, cli):
    """Bug: --skip-nonfinite could skip any number of steps and still report the run as done."""
    import zotheory.llm.scoring as scoring

    real = scoring.loss_closure
    argv = [*cli_argv(steps=10), "--skip-nonfinite"]  # 10 steps: 1 skip allowed at 0.1
    monkeypatch.setattr(scoring, "loss_closure", _NanAt(real, {2, 5}))
    out = tmp_path / "run"
    code, _, err = cli(*argv, "--out-dir", out)
    line = one_line(err)
    assert code == 1 and "2 of the run's 10 steps were skipped" in line and "max_skipped_fraction=0.1" in line
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "failed" and result["skipped_count"] == 2 and result["skipped_steps"] == [2, 5]
    assert result["steps_done"] == 5 and "--max-skipped-fraction" in result["error"]
    assert ckpt(out)["step"] == 4  # the last checkpoint holds one skipped step: within the threshold
    runs, _ = report.collect(tmp_path)
    assert runs.empty  # a failed run is not reported
    monkeypatch.setattr(scoring, "loss_closure", _NanAt(real, {2, 5}))
    code, _, err = cli(*argv, "--max-skipped-fraction", "0.5", "--out-dir", tmp_path / "ok")
    assert code == 0, err
    result = json.loads((tmp_path / "ok" / "result.json").read_text())
    assert result["status"] == "done" and result["skipped_count"] == 2
    with pytest.raises(TooManySkippedError):
        monkeypatch.setattr(scoring, "loss_closure", _NanAt(real, {1}))
        train(config(tmp_path / "lib", skip_nonfinite=True, max_skipped_fraction=0.0), task=ToyTask())


# --------------------------------------------------------------------------- (e) disk and permission faults


def test_a_full_disk_while_checkpointing_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    """Bug: a full disk inside torch.save was a RuntimeError without the path, out of the loop."""
    c = config(tmp_path / "run", steps=4, checkpoint_every=1)
    real, seen = torch.save, [0]

    def full_disk(obj, f, *a, **k):
        seen[0] += 1
        if seen[0] == 3:  # the third checkpoint: part of it is written, then the disk is full
            if not hasattr(f, "write"):  # what torch.save(obj, <path>) reports: no errno, no path
                raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed "
                                   "writing file data/0: file write failed")
            f.write(b"PK\x03\x04" + b"\0" * 4096)
            raise OSError(errno.ENOSPC, "No space left on device")  # what a Python file object reports
        return real(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CommandError) as info:
        train(c, task=ToyTask())
    msg = str(info.value)
    out = Path(c.out_dir)
    assert "\n" not in msg and f"cannot write {out / 'checkpoint.pt'}" in msg and "no space left" in msg, msg
    assert "last good checkpoint" in msg and "(step 2)" in msg and "--resume" in msg
    assert integrity.problem(out / "checkpoint.pt") is None and ckpt(out)["step"] == 2
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # the temporary is gone
    monkeypatch.setattr(torch, "save", real)
    train(dataclasses.replace(c, resume=True), task=ToyTask())
    assert json.loads((out / "result.json").read_text())["status"] == "done"


def test_a_read_only_folder_is_one_line_naming_the_path(tmp_path, monkeypatch, cli, no_compute):
    """Bug: a read-only run folder failed with a traceback after the compute, and was not caught
    before it."""
    import tempfile

    ro = tmp_path / "ro"
    ro.mkdir()
    real_mkstemp = tempfile.mkstemp

    def read_only(*a, dir=None, **k):  # root ignores chmod: the file system says no instead
        if dir is not None and Path(dir) == ro:
            raise OSError(errno.EROFS, "Read-only file system")
        return real_mkstemp(*a, dir=dir, **k)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    code, _, err = cli(*CLI, "--out-dir", ro)  # before any compute (no_compute)
    line = one_line(err)
    assert code == 2 and f"output directory {ro} is not writable" in line and "Read-only" in line, line


def test_a_read_only_file_system_mid_run_names_the_path(tmp_path, monkeypatch, cli):
    """Bug: EROFS while writing the checkpoint or the results became a traceback; the checkpoint
    must stay and a resume must finish the run."""
    out = tmp_path / "run"
    real_open, fail_on = open, {"name": ".checkpoint.pt.", "at": 2, "seen": 0}

    def fs_open(file, mode="r", *a, **k):
        if "w" in mode and Path(file).name.startswith(fail_on["name"]):
            fail_on["seen"] += 1
            if fail_on["seen"] >= fail_on["at"]:
                raise OSError(errno.EROFS, "Read-only file system", str(file))
        return real_open(file, mode, *a, **k)

    monkeypatch.setattr(train_mod, "open", fs_open, raising=False)
    code, _, err = cli(*CLI, "--out-dir", out)  # checkpoints at steps 2 and 4: the second fails
    line = one_line(err)
    assert code == 2 and f"cannot write {out / 'checkpoint.pt'}" in line and "read-only" in line, line
    assert "(step 2)" in line and integrity.problem(out / "checkpoint.pt") is None and ckpt(out)["step"] == 2
    fail_on.update(name=".log.parquet.", at=1, seen=0)  # the final results this time
    code, _, err = cli(*CLI, "--resume", "--out-dir", out)
    line = one_line(err)
    assert code == 2 and f"cannot write {out / 'log.parquet'}" in line and "write the results" in line, line
    assert ckpt(out)["step"] == 4 and integrity.problem(out / "checkpoint.pt") is None
    monkeypatch.setattr(train_mod, "open", real_open, raising=False)
    code, _, err = cli(*CLI, "--resume", "--out-dir", out)
    assert code == 0, err
    assert json.loads((out / "result.json").read_text())["status"] == "done"


def test_a_kill_between_a_file_and_its_checksum_does_not_cost_the_run(tmp_path, monkeypatch):
    """Bug class: the checksum file is written after the file's rename; a process killed in between
    left a checkpoint that no longer matched its checksum, so the run could not resume."""
    c = config(tmp_path / "run", steps=4)
    out = train(c, task=ToyTask(), stop_after=2)
    real = integrity.atomic_write

    class Killed(BaseException):
        pass

    def dies_before_the_checksum(path, write):
        if Path(path).name == "checkpoint.pt.sha256":
            raise Killed()
        return real(path, write)

    monkeypatch.setattr(integrity, "atomic_write", dies_before_the_checksum)
    longer = dataclasses.replace(c, steps=6, resume=True)
    with pytest.raises(Killed):
        train(longer, task=ToyTask(), stop_after=3)  # checkpoint 3 renamed into place, its checksum not written
    monkeypatch.setattr(integrity, "atomic_write", real)
    assert ckpt(out)["step"] == 3 and integrity.problem(out / "checkpoint.pt") is not None
    # the same state with a flipped bit is still refused (a copy: a copied folder resumes too)
    flipped = tmp_path / "flipped"
    shutil.copytree(out, flipped)
    data = bytearray((flipped / "checkpoint.pt").read_bytes())
    data[len(data) // 3] ^= 2
    (flipped / "checkpoint.pt").write_bytes(bytes(data))
    with pytest.raises(CorruptFile, match=r"flipped/checkpoint\.pt \(SHA-256"):
        train(dataclasses.replace(longer, out_dir=str(flipped)), task=ToyTask())
    train(longer, task=ToyTask())
    assert json.loads((out / "result.json").read_text())["steps_done"] == 6
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


# --------------------------------------------------------------------------- (f) counters, (g) tau


def test_communication_counters_accumulate_over_resumed_segments(tmp_path):
    """Bug: result.json's communication counters held only the last segment after a resume."""
    full = train(config(tmp_path / "full", steps=4), parallel=D.SimulatedDataParallel(2), task=ToyTask())
    part = config(tmp_path / "part", steps=4)
    train(part, parallel=D.SimulatedDataParallel(2), task=ToyTask(), stop_after=2)
    out = train(dataclasses.replace(part, resume=True), parallel=D.SimulatedDataParallel(2), task=ToyTask())
    ra, rb = (json.loads((d / "result.json").read_text()) for d in (full, out))
    assert rb["parallel"]["communication"] == ra["parallel"]["communication"]
    assert rb["parallel"]["communication"]["calls"]["train"] == rb["forward_passes"] == 8
    stats = D.CommStats.from_dict(ckpt(out)["communication"])
    assert stats.as_dict() == ra["parallel"]["communication"]


def test_tau_below_the_bf16_resolution_warns_once_per_run(tmp_path, caplog):
    """Bug: with bf16 weights a perturbation below half an ulp is lost (fl(x + tau) == x) without a word."""
    x = torch.tensor([1.0, 0.01, 0.0, 300.0, -2.0], dtype=torch.bfloat16)
    assert train_mod.tau_below_resolution([x], 1e-3) == (3, 5)  # 1, 300 and -2: ulp/2 > 1e-3
    assert train_mod.tau_below_resolution([x.float()], 1e-3) == (0, 0)  # float32 is not checked
    c = config(tmp_path / "bf16", dtype="bf16", steps=2, checkpoint_every=1)
    with caplog.at_level(logging.WARNING, logger="zotheory.llm.train"):
        train(c, task=ToyTask(), stop_after=1)
        train(dataclasses.replace(c, resume=True), task=ToyTask())  # the same tau: no second warning
    warned = [r.getMessage() for r in caplog.records if "below the resolution" in r.getMessage()]
    assert len(warned) == 1, warned
    model, _ = models_mod.load_model("tiny-llama", dtype="bf16", device="cpu",
                                     seed=train_mod._stream_seed(0, "model") % 2**31)
    lost, total = train_mod.tau_below_resolution([p for _, p in models_mod.named_trainable_parameters(model)], 1e-3)
    assert 0 < lost < total
    assert f"({lost} of {total} entries" in warned[0] and f"{100 * lost / total:.2f}%" in warned[0]
    assert re.search(r"tau=0\.001 is below the resolution of [0-9.]+% of the trainable bfloat16 weights", warned[0])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="zotheory.llm.train"):
        train(config(tmp_path / "fp32", steps=1), task=ToyTask())
    assert not [r for r in caplog.records if "below the resolution" in r.getMessage()]
