"""Where `zotheory rates / plot / bench` write, what they do with damaged result files and
unusable output paths, and a light top level (`--help` / `--version` import no torch): issue 12."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from zotheory import cli
from zotheory.cli import build_parser, main

SMOKE = ["--preset", "smoke", "--only", "beta_ablation", "--no-progress"]  # 20 runs, one group, ~2 s


def _err_line(capsys) -> str:
    """The one stderr line a failing command must print (and nothing else)."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory) -> Path:
    """One pristine smoke sweep of beta_ablation (copied by the tests that damage it)."""
    from zotheory.synthetic.sweep import run_sweep

    root = tmp_path_factory.mktemp("smoke") / "results"
    counts = run_sweep("smoke", root, only=["beta_ablation"], progress=False)
    assert counts["written"] == counts["runs"] == 20
    return root


@pytest.fixture
def results(smoke_results, tmp_path) -> Path:
    dst = tmp_path / "results"
    shutil.copytree(smoke_results, dst)
    return dst


def _no_computing(monkeypatch):
    """Any sweep or report called from now on fails the test."""
    from zotheory.synthetic import report, sweep

    def boom(*a, **k):
        raise AssertionError("computing started")

    monkeypatch.setattr(sweep, "run_sweep", boom)
    monkeypatch.setattr(report, "make_report", boom)


# ------------------------------------------------------------------------------ output paths


def test_rates_with_results_dir_writes_figures_there_and_nothing_in_cwd(tmp_path, monkeypatch, capsys):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert main(["rates", *SMOKE, "--results", "out"]) == 0
    assert (cwd / "out" / "figures" / "rates_report.md").exists()
    assert (cwd / "out" / "figures" / "rates_beta_ablation.png").exists()
    assert sorted(os.listdir(cwd)) == ["out"]  # no ./figures, no ./results
    assert "out/figures/rates_report.md" in capsys.readouterr().out


@pytest.mark.parametrize("preset", ["smoke", "quick", "full"])
def test_figures_default_to_results_figures_for_every_preset(preset, tmp_path, monkeypatch):
    from zotheory.synthetic import report, sweep

    monkeypatch.chdir(tmp_path)
    seen = []
    monkeypatch.setattr(sweep, "run_sweep", lambda p, root, only=None, progress=True: (
        seen.append(("sweep", p, Path(root))) or {"runs": 0, "groups": 0, "written": 0, "skipped": 0}))
    monkeypatch.setattr(report, "make_report", lambda res, fig, only=None: (
        seen.append(("report", Path(res), Path(fig))) or {"figures": [], "table": Path(fig) / "t.md", "rows": 0}))
    flags = ["--full"] if preset == "full" else ["--preset", preset]

    assert main(["rates", *flags, "--results", "R"]) == 0
    assert seen[-1] == ("report", Path("R"), Path("R/figures"))
    assert main(["rates", *flags]) == 0
    default = Path("results/rates") / preset
    assert seen[-2] == ("sweep", preset, default) and seen[-1] == ("report", default, default / "figures")
    assert main(["plot", *flags]) == 0
    assert seen[-1] == ("report", default, default / "figures")
    # the committed figures/ only when named
    assert main(["rates", *flags, "--figures", "figures"]) == 0
    assert seen[-1] == ("report", default, Path("figures"))


def test_bench_figures_default_to_out_figures_for_the_full_run(tmp_path, monkeypatch):
    from zotheory.benchmarks import suite

    seen = []
    monkeypatch.setattr(suite, "RUNNERS", {"memory": lambda q, p, out, fig: seen.append((q, out, fig)) or "t"})
    monkeypatch.chdir(tmp_path)
    suite.run_suite(quick=False, only=["memory"], progress=False)
    assert seen == [(False, Path("results/bench/full"), Path("results/bench/full/figures"))]
    assert not (tmp_path / "figures").exists()


# ------------------------------------------------------------------------------ corrupt result files


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:300])


def _garbage(path: Path) -> None:
    path.write_bytes(b"not a parquet file\n" * 10)


def _wrong_columns(path: Path) -> None:
    pd.DataFrame({"a": [1, 2]}).to_parquet(path)  # readable, but not a run file


def _data_pages(path: Path) -> None:  # footer intact (passes the cheap check), data pages destroyed
    data = bytearray(path.read_bytes())
    data[100:1500] = b"\xab" * 1400
    path.write_bytes(bytes(data))


DAMAGE = {"truncated": _truncate, "garbage": _garbage, "wrong_columns": _wrong_columns, "data_pages": _data_pages}


def _damage(results: Path) -> tuple[Path, Path, Path]:
    files = sorted((results / "beta_ablation").glob("*.parquet"))
    for path, fn in zip(files, (_truncate, _garbage, _wrong_columns)):
        fn(path)
    return tuple(files[:3])


def test_sweep_recomputes_corrupt_files_instead_of_counting_them_done(results, smoke_results, capsys):
    from zotheory.synthetic.sweep import run_sweep

    damaged = _damage(results)
    counts = run_sweep("smoke", results, only=["beta_ablation"], progress=False)
    assert (counts["written"], counts["skipped"], counts["corrupt"]) == (3, 17, 3)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3
    for path, line in zip(damaged, err):
        assert str(path) in line and "recomputing" in line
    for path in damaged:  # the same run as before the damage
        new = pd.read_parquet(path).drop(columns=["wall_time_s"])
        old = pd.read_parquet(smoke_results / "beta_ablation" / path.name).drop(columns=["wall_time_s"])
        pd.testing.assert_frame_equal(new, old)
    again = run_sweep("smoke", results, only=["beta_ablation"], progress=False)
    assert (again["written"], again["skipped"], again["corrupt"]) == (0, 20, 0)


def test_rates_cli_reports_and_recomputes_a_corrupt_file(results, tmp_path, capsys):
    truncated = _damage(results)[0]
    assert main(["rates", *SMOKE, "--results", str(results), "--no-plot"]) == 0
    captured = capsys.readouterr()
    assert "3 computed" in captured.out and "17 already done" in captured.out
    assert str(truncated) in captured.err
    assert main(["plot", "--results", str(results), "--figures", str(tmp_path / "fig")]) == 0


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_plot_on_a_corrupt_file_is_one_line_naming_it(damage, results, tmp_path, capsys):
    target = sorted((results / "beta_ablation").glob("*.parquet"))[7]
    DAMAGE[damage](target)
    assert main(["plot", "--results", str(results), "--figures", str(tmp_path / "fig")]) == 2
    line = _err_line(capsys)
    assert line.startswith("zotheory plot: error: corrupt result file ")
    assert str(target) in line and "delete it and re-run" in line


# ------------------------------------------------------------------------------ unusable paths


def test_results_path_that_is_a_file_fails_before_computing(tmp_path, monkeypatch, capsys):
    _no_computing(monkeypatch)
    f = tmp_path / "results.txt"
    f.write_text("x")
    assert main(["rates", *SMOKE, "--results", str(f)]) == 2
    line = _err_line(capsys)
    assert line.startswith("zotheory rates: error: ") and f"results path {f} is a file" in line
    assert main(["rates", *SMOKE, "--results", str(f / "sub")]) == 2
    assert f"{f} is a file" in _err_line(capsys)
    assert main(["plot", "--results", str(f)]) == 2
    assert str(f) in _err_line(capsys)
    assert f.read_text() == "x"


def test_figures_path_that_is_a_file_fails_before_computing(tmp_path, monkeypatch, capsys):
    _no_computing(monkeypatch)
    f = tmp_path / "figs"
    f.write_text("x")
    assert main(["rates", *SMOKE, "--results", str(tmp_path / "r"), "--figures", str(f)]) == 2
    assert f"figures path {f} is a file" in _err_line(capsys)
    (tmp_path / "r" / "exp").mkdir(parents=True)
    assert main(["plot", "--results", str(tmp_path / "r"), "--figures", str(f)]) == 2
    assert f"figures path {f} is a file" in _err_line(capsys)


def test_unwritable_results_folder_fails_before_computing(tmp_path, monkeypatch, capsys):
    import tempfile

    _no_computing(monkeypatch)

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)  # root ignores chmod: simulate the refusal
    target = tmp_path / "ro"
    assert main(["rates", *SMOKE, "--results", str(target)]) == 2
    line = _err_line(capsys)
    assert f"results folder {target} is not writable (Permission denied)" in line


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes to read-only folders")
def test_read_only_results_folder_fails_before_computing(tmp_path, monkeypatch, capsys):
    _no_computing(monkeypatch)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(["rates", *SMOKE, "--results", str(ro)]) == 2
        assert f"results folder {ro} is not writable" in _err_line(capsys)
    finally:
        ro.chmod(0o755)


def test_sweep_checks_each_experiment_folder_before_computing(tmp_path, monkeypatch):
    from zotheory.errors import CommandError
    from zotheory.synthetic import sweep

    def boom(*a, **k):
        raise AssertionError("computing started")

    monkeypatch.setattr(sweep, "run_group", boom)
    (tmp_path / "beta_ablation").write_text("x")
    with pytest.raises(CommandError, match=r"results path .*beta_ablation is a file, not a folder"):
        sweep.run_sweep("smoke", tmp_path, only=["beta_ablation"], progress=False)


def test_bench_output_path_that_is_a_file_fails_before_running(tmp_path, monkeypatch, capsys):
    from zotheory.benchmarks import suite

    monkeypatch.setattr(suite, "RUNNERS", {n: None for n in suite.BENCHMARKS})  # would crash if run
    f = tmp_path / "bench"
    f.write_text("x")
    assert main(["bench", "--quick", "--only", "memory", "--out", str(f), "--no-progress"]) == 2
    assert f"bench output path {f} is a file" in _err_line(capsys)


# ------------------------------------------------------------------------------ light top level


def test_version_prints_the_package_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"zotheory {version('zotheory')}"


def test_version_falls_back_when_the_package_is_not_installed(monkeypatch):
    import importlib.metadata

    import zotheory

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert zotheory.package_version() == "0+unknown"


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_import_no_torch(flag):
    code = ("import sys\nfrom zotheory.cli import main\n"
            f"try:\n    main([{flag!r}])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'pandas', 'transformers', 'zotheory.llm', 'zotheory.benchmarks',"
            " 'zotheory.synthetic') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "HEAVY []"


def test_lazy_help_lines_match_the_real_subcommands():
    """The static help lines of the lazily built subcommands equal their add_cli's."""
    assert build_parser([]).format_help() == build_parser().format_help()
    assert [n for n, _, _ in cli.LAZY_SUBCOMMANDS] == ["assets", "finetune", "finetune-report", "bench"]


@pytest.mark.parametrize("command", ["rates", "plot", "algorithms", "assets", "finetune", "finetune-report",
                                     "bench"])
def test_every_subcommand_has_its_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert f"usage: zotheory {command} " in capsys.readouterr().out
