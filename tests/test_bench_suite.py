"""`zotheory bench`'s driver: selection, report and CSV layout (the benchmarks themselves are
smoke-run by CI with `zotheory bench --quick`; their own tests are test_bench_*.py)."""

from __future__ import annotations

import pandas as pd
import pytest

from zotheory.benchmarks import suite


def test_table_formats_floats_and_escapes_pipes():
    df = pd.DataFrame({"a": [1.23456, float("nan")], "b": ["x|y", None], "c": [3, 4]})
    text = suite._table(df, ["a", "b", "missing"])
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1.23 | x\\|y |", "|  |  |"]


def test_unknown_benchmark_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"unknown benchmark\(s\) \['nope'\].*synthetic"):
        suite.run_suite(quick=True, only=["nope"], out=tmp_path)


def test_run_suite_writes_a_report_section_per_benchmark(tmp_path, monkeypatch):
    seen = []

    def fake(name):
        def runner(quick, progress, out, figures):
            seen.append((name, quick, out, figures))
            pd.DataFrame({"x": [1]}).to_csv(out / f"{name}.csv", index=False)
            return f"table of {name}"
        return runner

    monkeypatch.setattr(suite, "RUNNERS", {n: fake(n) for n in suite.BENCHMARKS})
    report = suite.run_suite(quick=True, only=["memory", "synthetic"], out=tmp_path / "b", progress=False)
    text = report.read_text()
    assert [s[0] for s in seen] == ["memory", "synthetic"]
    assert all(q is True and f == tmp_path / "b" / "figures" for _, q, _, f in seen)  # quick: figures stay in out
    assert text.index("## memory") < text.index("table of memory") < text.index("## synthetic")
    assert "Command: `zotheory bench --quick`" in text
    assert (tmp_path / "b" / "synthetic.csv").exists()


def test_cli_parses_bench_options():
    from zotheory.cli import build_parser

    args = build_parser().parse_args(["bench", "--quick", "--only", "scaling", "--only", "distributed"])
    assert args.quick and args.only == ["scaling", "distributed"] and args.func is suite.cmd_bench
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--only", "nope"])
