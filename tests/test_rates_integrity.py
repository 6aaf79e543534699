"""Rates result files that cannot be silently corrupt, disk faults, two sweeps on one folder,
atomic figures (issue 18, the rates side).

(a) bit flips spread over a real result parquet: every one found by the sweep's done-check and
    by load_results, and a flip in the data pages (which a footer check misses) recomputed;
(b) two sweeps started together on one folder: no crash, no group computed twice, the results
    of one sweep;
(c) a full file system (a 64 KiB tmpfs when root may mount one, else an injected ENOSPC /
    EROFS / EACCES) and a read-only experiment folder: one-line errors naming the path, exit 2,
    nothing finished lost, the read-only folder refused before any computing;
(d) the start-up clean-up removes a dead writer's temporary, never a live one's;
(e) figures and report tables written atomically (a failing or killed savefig).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from zotheory import integrity
from zotheory.cli import main

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning"),
              pytest.mark.usefixtures("one_thread")]

EXPERIMENT = "gamma_scaling"  # smoke: 16 runs in 8 groups of 2, ~3 s
RATES = ["rates", "--preset", "smoke", "--only", EXPERIMENT, "--no-plot", "--no-progress"]
VOLATILE = ["wall_time_s", "git_sha"]  # differ between two computations of the same run
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _specs():
    from zotheory.synthetic.experiments import build

    return build("smoke", [EXPERIMENT])


def _err_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _contents(root: Path) -> dict[str, pd.DataFrame]:
    return {p.name: pd.read_parquet(p).drop(columns=VOLATILE) for p in sorted((root / EXPERIMENT).glob("*.parquet"))}


def _assert_same_results(root: Path, reference: Path) -> None:
    got, want = _contents(root), _contents(reference)
    assert sorted(got) == sorted(want) and len(want) == 16
    for name in want:
        pd.testing.assert_frame_equal(got[name], want[name], check_exact=True)
    for p in (root / EXPERIMENT).glob("*.parquet"):
        assert integrity.problem(p) is None, p


def _temporaries(root: Path) -> list[Path]:
    return sorted(root.rglob("*.tmp"))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """One single sweep of the experiment (copied by the tests that change it)."""
    from zotheory.synthetic.sweep import run_sweep

    root = tmp_path_factory.mktemp("pristine") / "results"
    counts = run_sweep("smoke", root, only=[EXPERIMENT], progress=False)
    assert counts["written"] == counts["runs"] == 16 and counts["groups"] == 8
    return root


@pytest.fixture
def results(pristine, tmp_path) -> Path:
    dst = tmp_path / "results"
    shutil.copytree(pristine, dst)
    return dst


def _mount(*args: str) -> bool:
    """``mount args...`` as root; False when this machine does not allow it."""
    if not IS_ROOT or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", *args], capture_output=True, check=False).returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", str(path)], capture_output=True, check=True)


# ------------------------------------------------------------------------------ (a) bit flips


def test_every_bit_flip_spread_over_a_result_file_is_found_by_the_done_check_and_by_load_results(pristine, tmp_path):
    from zotheory.synthetic.results import CorruptResultFile, load_results
    from zotheory.synthetic.sweep import finished_runs

    src = sorted((pristine / EXPERIMENT).glob("*.parquet"))[3]
    spec = next(s for s in _specs() if f"{s.run_id}.parquet" == src.name)
    root = tmp_path / "one"
    (root / EXPERIMENT).mkdir(parents=True)
    target = root / EXPERIMENT / src.name
    for f in (src, integrity.sidecar(src)):
        shutil.copy2(f, root / EXPERIMENT / f.name)
    assert finished_runs(root, [spec]) == {spec.run_id} and len(load_results(root)) > 0

    size, side_size = target.stat().st_size, integrity.sidecar(target).stat().st_size
    assert size > 10_000
    flips = 0
    for victim, step in ((target, 7), (integrity.sidecar(target), 1)):  # every 7th byte; every sidecar byte
        data = victim.read_bytes()
        for i in range(0, len(data), step):
            flipped = bytearray(data)
            flipped[i] ^= 1 << ((i // step) % 8)
            victim.write_bytes(bytes(flipped))
            seen: list[Path] = []
            assert finished_runs(root, [spec], lambda p, why, seen=seen: seen.append(p)) == set(), (victim.name, i)
            assert seen == [target], (victim.name, i)
            with pytest.raises(CorruptResultFile) as info:
                load_results(root)
            assert info.value.path == target and str(target) in str(info.value), (victim.name, i)
            flips += 1
        victim.write_bytes(data)
    assert flips == -(-size // 7) + side_size
    assert finished_runs(root, [spec]) == {spec.run_id}


def test_a_flip_in_the_data_pages_is_recomputed_by_the_sweep_and_refused_by_plot(results, pristine, tmp_path, capsys):
    from zotheory.synthetic.results import load_results
    from zotheory.synthetic.sweep import run_sweep

    target = sorted((results / EXPERIMENT).glob("*.parquet"))[5]
    data = bytearray(target.read_bytes())
    data[len(data) // 3] ^= 0x10  # inside the data pages: the parquet footer stays valid
    target.write_bytes(bytes(data))

    assert main(["plot", "--results", str(results), "--figures", str(tmp_path / "fig")]) == 2
    line = _err_line(capsys)
    assert line.startswith("zotheory plot: error: corrupt result file ") and str(target) in line
    assert "delete it and re-run" in line and "that run only" in line

    counts = run_sweep("smoke", results, only=[EXPERIMENT], progress=False)
    assert (counts["written"], counts["corrupt"], counts["skipped"]) == (1, 1, 15)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(target) in err[0] and "recomputing" in err[0]
    _assert_same_results(results, pristine)
    assert len(load_results(results)) > 0


def test_a_folder_without_checksums_is_recomputed_not_trusted(results, pristine, capsys):
    """Files written before checksums (no sidecars) count as unfinished: recomputed, same numbers."""
    from zotheory.synthetic.sweep import run_sweep

    for side in (results / EXPERIMENT).glob("*.sha256"):
        side.unlink()
    assert main(["plot", "--results", str(results), "--figures", str(results / "fig")]) == 2
    assert "written before result files had checksums" in _err_line(capsys)
    counts = run_sweep("smoke", results, only=[EXPERIMENT], progress=False)
    assert (counts["written"], counts["corrupt"]) == (16, 16)
    _assert_same_results(results, pristine)


# ------------------------------------------------------------------------------ (b) two sweeps at once

_CONCURRENT = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from zotheory import cli
    from zotheory.synthetic import sweep

    marks, results, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    real = sweep.run_group

    def counted(group, **kw):  # one marker file per group computed, named by group and process
        (marks / f"group.{group[0].group_key()}.{os.getpid()}").touch()
        time.sleep(0.3)  # long enough for the two processes to interleave
        return real(group, **kw)

    sweep.run_group = counted
    (marks / f"ready.{os.getpid()}").touch()  # start together, after the imports
    deadline = time.time() + 120
    while len(list(marks.glob("ready.*"))) < n and time.time() < deadline:
        time.sleep(0.005)
    sys.exit(cli.main(["rates", "--preset", "smoke", "--only", %r, "--results", results,
                       "--no-plot", "--no-progress"]))
""") % EXPERIMENT


def test_two_sweeps_on_one_folder_share_the_work_and_give_one_sweeps_results(pristine, tmp_path):
    marks, results = tmp_path / "marks", tmp_path / "results"
    marks.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", _CONCURRENT, str(marks), str(results), "2"], env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0 and "Traceback" not in err and "corrupt" not in err, (out, err)

    computed = []
    for out, _ in outs:
        m = re.search(r"16 runs in 8 groups: (\d+) computed, (\d+) already done", out)
        assert m, out
        computed.append(int(m.group(1)))
        assert int(m.group(1)) + int(m.group(2)) == 16
    groups = Counter(p.name.split(".")[1] for p in marks.glob("group.*"))
    assert sorted(groups) == sorted({s.group_key() for s in _specs()}) and set(groups.values()) == {1}, groups
    assert sum(computed) == 16, computed  # no run written twice
    by_pid = Counter(p.name.split(".")[2] for p in marks.glob("group.*"))
    assert len(by_pid) == 2 and min(computed) > 0, (by_pid, computed)  # they really ran side by side
    _assert_same_results(results, pristine)
    assert not _temporaries(results)


# ------------------------------------------------------------------------------ (c) disk faults


def _remove_groups(results: Path, k: int) -> list[Path]:
    """Delete the files of the first ``k`` groups; returns their paths."""
    from zotheory.synthetic.runner import group_runs

    gone = []
    for group in group_runs(_specs())[:k]:
        for s in group:
            p = results / EXPERIMENT / f"{s.run_id}.parquet"
            p.unlink()
            integrity.sidecar(p).unlink()
            gone.append(p)
    return gone


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / EXPERIMENT).glob("*.parquet*"))}


def _assert_kept(root: Path, before: dict[str, bytes]) -> None:
    for name, data in before.items():
        assert (root / EXPERIMENT / name).read_bytes() == data, name
    for p in (root / EXPERIMENT).glob("*.parquet"):
        assert integrity.problem(p) is None, p
    assert not _temporaries(root)


def test_a_full_tmpfs_is_a_one_line_error_naming_the_file_and_keeps_finished_results(pristine, tmp_path, capsys):
    full = tmp_path / "full"
    full.mkdir()
    if not _mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full)):
        pytest.skip("cannot mount a tmpfs here (not root, or no permission); the injected ENOSPC test covers it")
    try:
        (full / EXPERIMENT).mkdir()
        first = min((pristine / EXPERIMENT).glob("*.parquet"))  # one finished run (34 KB)
        for f in (first, integrity.sidecar(first)):
            shutil.copy2(f, full / EXPERIMENT / f.name)
        fd = os.open(full / "filler", os.O_WRONLY | os.O_CREAT)  # the rest of the 64 KiB
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError as err:
            assert err.errno == errno.ENOSPC
        finally:
            os.close(fd)
        before = _snapshot(full)
        assert main([*RATES, "--results", str(full)]) == 2
        line = _err_line(capsys)
        m = re.fullmatch(r"zotheory rates: error: cannot write (\S+\.parquet): no space left on the device.*", line)
        assert m and Path(m.group(1)).parent == full / EXPERIMENT and not Path(m.group(1)).exists(), line
        assert "finished runs are kept" in line
        _assert_kept(full, before)
    finally:
        _umount(full)


@pytest.mark.parametrize("code,words", [(errno.ENOSPC, "no space left on the device"),
                                        (errno.EROFS, "the file system is read-only"),
                                        (errno.EACCES, "permission denied")])
def test_a_write_failing_mid_sweep_is_one_line_and_loses_nothing(code, words, results, monkeypatch, capsys):
    gone = _remove_groups(results, 2)  # 4 runs to compute, 12 finished
    before = _snapshot(results)
    real, calls = pd.DataFrame.to_parquet, []

    def failing(self, path, *a, **k):  # the 1st write succeeds, the 2nd fails half-way
        calls.append(path)
        if len(calls) == 1:
            return real(self, path, *a, **k)
        Path(path).write_bytes(b"PAR1 partial")
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(pd.DataFrame, "to_parquet", failing)
    assert main([*RATES, "--results", str(results)]) == 2
    line = _err_line(capsys)
    m = re.fullmatch(rf"zotheory rates: error: cannot write (\S+\.parquet): {words} \[errno {code}\].*", line)
    assert m and Path(m.group(1)) in gone and not Path(m.group(1)).exists(), line
    written = [p for p in gone if p.exists()]
    assert len(written) == 1 and integrity.problem(written[0]) is None  # the run finished before the fault
    _assert_kept(results, before)


def _no_computing(monkeypatch):
    from zotheory.synthetic import sweep

    def boom(*a, **k):
        raise AssertionError("computing started")

    monkeypatch.setattr(sweep, "run_group", boom)


@pytest.mark.parametrize("how", ["mounted", "injected"])
def test_a_read_only_experiment_folder_fails_before_any_computing(how, results, monkeypatch, capsys):
    _no_computing(monkeypatch)
    _remove_groups(results, 1)
    folder = results / EXPERIMENT
    before = _snapshot(results)
    mounted = how == "mounted" and _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder))
    if how == "mounted" and not mounted:
        pytest.skip("cannot mount a tmpfs here (not root, or no permission)")
    try:
        if mounted:  # a real read-only file system holding the finished files
            for name, data in before.items():
                (folder / name).write_bytes(data)
            assert _mount("-o", "remount,ro", str(folder))
        else:  # root ignores chmod: inject the refusal where the folder is probed
            real = tempfile.mkstemp

            def read_only(*a, dir=None, **k):
                if dir is not None and Path(dir) == folder:
                    raise OSError(errno.EROFS, os.strerror(errno.EROFS))
                return real(*a, dir=dir, **k)

            monkeypatch.setattr(tempfile, "mkstemp", read_only)
        assert main([*RATES, "--results", str(results)]) == 2
        line = _err_line(capsys)
        assert line == f"zotheory rates: error: results folder {folder} is not writable (Read-only file system)"
        _assert_kept(results, before)
    finally:
        if mounted:
            _umount(folder)


# ------------------------------------------------------------------------------ (d) temporaries


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_start_up_clean_up_removes_only_temporaries_whose_writer_is_gone(results):
    from zotheory.synthetic.sweep import run_sweep

    folder = results / EXPERIMENT
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = _dead_pid()
        assert integrity.owner_alive(live.pid) and not integrity.owner_alive(dead)
        live_tmp = folder / f".0123456789abcdef.parquet.{live.pid}.tmp"
        live_side = folder / f".0123456789abcdef.parquet.sha256.{live.pid}.tmp"
        dead_tmp = folder / f".fedcba9876543210.parquet.{dead}.tmp"
        old_style = folder / ".0011223344556677.parquet.k3j_x9qz.tmp"  # mkstemp name, before pids
        fresh_old_style = folder / ".7766554433221100.parquet.q8w_e7rt.tmp"
        probe = results / ".zotheory-write-check.a1b2c3d4.tmp"  # another sweep's writability probe
        for p in (live_tmp, live_side, dead_tmp, old_style, fresh_old_style, probe):
            p.write_bytes(b"partial")
        hour_ago = time.time() - 3600
        os.utime(old_style, (hour_ago, hour_ago))

        counts = run_sweep("smoke", results, only=[EXPERIMENT], progress=False)  # nothing to compute
        assert counts["written"] == 0
        assert live_tmp.exists() and live_side.exists() and fresh_old_style.exists() and probe.exists()
        assert not dead_tmp.exists() and not old_style.exists()
    finally:
        live.kill()
        live.wait()
    from zotheory.synthetic.results import remove_stale_temporaries

    assert remove_stale_temporaries(results) == 2  # the owner is gone now


# ------------------------------------------------------------------------------ (e) atomic figures


def _png_ok(path: Path) -> bool:
    data = path.read_bytes()
    return data.startswith(b"\x89PNG\r\n\x1a\n") and data.endswith(b"IEND\xaeB`\x82")


def test_a_failing_savefig_leaves_the_previous_png_and_no_temporary(pristine, tmp_path, monkeypatch):
    import matplotlib.figure
    from zotheory.synthetic.report import make_report

    fig = tmp_path / "fig"
    made = make_report(pristine, fig)
    pngs = {p: p.read_bytes() for p in made["figures"]}
    assert pngs and all(_png_ok(p) for p in pngs)
    tables = {p: p.read_bytes() for p in fig.glob("rates_report.*")}

    def broken(self, fname, *a, **k):
        Path(fname).write_bytes(b"\x89PNG\r\n\x1a\n half a picture")
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken)
    with pytest.raises(RuntimeError, match="renderer crashed"):
        make_report(pristine, fig)
    for p, data in {**pngs, **tables}.items():
        assert p.read_bytes() == data, p
    assert not list(fig.glob(".*"))

    def full(self, fname, *a, **k):
        Path(fname).write_bytes(b"\x89PNG")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full)
    with pytest.raises(integrity.CommandError, match=r"cannot write \S+rates_gamma_scaling\.png: no space left"):
        make_report(pristine, fig)
    for p, data in pngs.items():
        assert p.read_bytes() == data, p
    assert not list(fig.glob(".*"))


_KILLED_REPORT = textwrap.dedent("""
    import os, signal, sys
    import matplotlib.figure
    from zotheory.synthetic.report import make_report

    def dying(self, fname, *a, **k):  # half a PNG on disk, then SIGKILL (no clean-up runs)
        with open(fname, "wb") as fh:
            fh.write(b"\\x89PNG\\r\\n\\x1a\\n half")
            fh.flush()
            os.fsync(fh.fileno())
        os.kill(os.getpid(), signal.SIGKILL)

    matplotlib.figure.Figure.savefig = dying
    make_report(sys.argv[1], sys.argv[2])
""")


def test_a_report_killed_inside_savefig_leaves_no_broken_png(pristine, tmp_path):
    from zotheory.synthetic.report import make_report

    fig = tmp_path / "fig"
    made = make_report(pristine, fig)
    pngs = {p: p.read_bytes() for p in made["figures"]}
    proc = subprocess.run([sys.executable, "-c", _KILLED_REPORT, str(pristine), str(fig)], env=ENV,
                          capture_output=True, timeout=120, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    for p, data in pngs.items():
        assert p.read_bytes() == data, p
    left = list(fig.glob(".*.tmp"))
    assert len(left) == 1 and not integrity.owner_alive(integrity.temporary_owner(left[0]))
    make_report(pristine, fig)  # the next report removes the dead writer's temporary
    assert not list(fig.glob(".*")) and all(_png_ok(p) for p in pngs)
