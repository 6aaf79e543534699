"""``zotheory bench``: every benchmark in one run, tidy CSVs, figures and a markdown report.

``zotheory bench --quick`` is the smoke run (small configurations, a few minutes; CI runs it and
asserts nothing about timings); ``zotheory bench`` is the full run behind BENCHMARKS.md (about an
hour on this 2-core machine). ``--only NAME`` (repeatable) picks benchmarks:

``synthetic``    batched synthetic engine vs a per-run NumPy loop (:mod:`.synthetic`)
``llm_step``     LLM step time vs the forward passes it needs, and vs MeZO's step (:mod:`.llm_step`)
``memory``       peak RSS per method, OPT-1.3B shape, fresh subprocess each (:mod:`.memory`)
``scaling``      step time and peak memory vs model size (:func:`.memory.scaling`)
``distributed``  bytes per step and 1 vs 2 processes (:mod:`.distributed`)

Each benchmark writes ``<out>/<name>.csv``; the report ``<out>/report.md`` holds every table,
the target checks and the exact command. Figures go to ``--figures`` (default ``<out>/figures``
for both runs, so no run touches tracked files unless asked: ``--figures figures`` rewrites the
committed ``figures/bench_*.png``). Both folders are checked for writing before any benchmark runs.
"""

from __future__ import annotations

import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
import torch

BENCHMARKS = ("synthetic", "llm_step", "memory", "scaling", "distributed")


def _table(df: pd.DataFrame, columns: Sequence[str] | None = None, *, digits: int = 3) -> str:
    """A markdown table of ``df`` (the listed columns that exist, in order)."""
    cols = [c for c in (columns or df.columns) if c in df.columns]

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return "" if v != v else f"{v:.{digits}g}"
        return "" if v is None else str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df[cols].iterrows():
        lines.append("| " + " | ".join(fmt(r[c]) for c in cols) + " |")
    return "\n".join(lines)


def _synthetic(quick: bool, progress: bool, out: Path, figures: Path) -> str:
    from . import synthetic

    df = synthetic.run(quick=quick, progress=progress)
    df.to_csv(out / "synthetic.csv", index=False)
    synthetic.plot(df, figures)
    text = [_table(df, ["method", "oracle", "shape", "B", "impl", "seconds_per_step", "run_steps_per_s", "ratio"]),
            "", synthetic.target_check(df)]
    if not quick:
        text += ["", synthetic.profile_summary(quick=False)]
    return "\n".join(text)


def _llm_step(quick: bool, progress: bool, out: Path, figures: Path) -> str:
    from . import llm_step

    df = llm_step.run(quick=quick, progress=progress)
    df.to_csv(out / "llm_step.csv", index=False)
    parts = llm_step.overhead_breakdown(quick=quick)
    parts.to_csv(out / "llm_step_breakdown.csv", index=False)
    return "\n".join([
        _table(df, ["model", "mode", "method", "case", "n_forwards", "seconds_per_step", "floor_seconds",
                    "ratio_to_floor", "ratio_to_mezo"]),
        "", "Full fine-tuning, where a Gaussian step's time goes beyond its two forwards (thread CPU s):", "",
        _table(parts, ["model", "component", "cpu_seconds", "per_floor", "draws_equivalent"])])


def _memory(quick: bool, progress: bool, out: Path, figures: Path) -> str:
    from . import memory

    df = memory.run(quick=quick, progress=progress)
    df.to_csv(out / "memory.csv", index=False)
    return "\n".join([
        _table(df, ["config", "mode", "method", "status", "peak_rss", "ratio_to_inference", "state_numel",
                    "excess_over_inference_plus_state"]),
        "", "Paper comparison (Table 3 shape):", "", _table(memory.paper_comparison(df))])


def _scaling(quick: bool, progress: bool, out: Path, figures: Path) -> str:
    from . import memory

    df = memory.scaling(quick=quick, progress=progress)
    df.to_csv(out / "scaling.csv", index=False)
    memory.plot([df], figures)
    return _table(df)


def _distributed(quick: bool, progress: bool, out: Path, figures: Path) -> str:
    from . import distributed

    df = distributed.run(quick=quick)
    df.to_csv(out / "distributed.csv", index=False)
    return _table(df.drop(columns=[c for c in ("note",) if c in df.columns]))


RUNNERS: dict[str, Callable[[bool, bool, Path, Path], str]] = {
    "synthetic": _synthetic, "llm_step": _llm_step, "memory": _memory, "scaling": _scaling,
    "distributed": _distributed,
}


def run_suite(*, quick: bool, only: Sequence[str] | None = None, out: str | Path | None = None,
              figures: str | Path | None = None, progress: bool = True, command: str | None = None) -> Path:
    """Run the selected benchmarks (all by default); returns the path of the markdown report."""
    names = list(only) if only else list(BENCHMARKS)
    unknown = [n for n in names if n not in RUNNERS]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; valid: {list(BENCHMARKS)}")
    from zotheory.cli import ensure_writable_dir

    out = Path(out) if out is not None else Path("results") / "bench" / ("quick" if quick else "full")
    figures = Path(figures) if figures is not None else out / "figures"
    ensure_writable_dir(out, "bench output", "--out")
    ensure_writable_dir(figures, "figures", "--figures")
    command = command or "zotheory bench" + (" --quick" if quick else "")
    sections = [f"# zotheory bench ({'quick' if quick else 'full'})", "",
                f"Command: `{command}`  ", f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads "
                f"available, torch {torch.__version__}, Python {platform.python_version()}  ",
                f"Date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}", ""]
    for name in names:
        t0 = time.perf_counter()
        if progress:
            print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        text = RUNNERS[name](quick, progress, out, figures)
        took = time.perf_counter() - t0
        sections += [f"## {name} ({took:.0f} s)", "", text, ""]
        (out / "report.md").write_text("\n".join(sections) + "\n")  # partial report survives a later failure
        if progress:
            print(f"[bench] {name} done in {took:.0f} s", file=sys.stderr, flush=True)
    return out / "report.md"


def add_cli(subparsers) -> Any:
    p = subparsers.add_parser("bench", help="speed and memory benchmarks (BENCHMARKS.md)")
    p.add_argument("--quick", action="store_true", help="small configurations, a few minutes (the CI smoke run)")
    p.add_argument("--only", action="append", metavar="NAME", choices=list(BENCHMARKS),
                   help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}")
    p.add_argument("--out", metavar="DIR", help="results folder (default results/bench/<quick|full>)")
    p.add_argument("--figures", metavar="DIR", help="figures folder (default <out>/figures; "
                                                   "`--figures figures` rewrites the committed figures)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_bench)
    return p


def cmd_bench(args) -> int:
    command = "zotheory " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["bench"] else None
    report = run_suite(quick=args.quick, only=args.only, out=args.out, figures=args.figures,
                       progress=not args.no_progress, command=command)
    print(f"report: {report}")
    return 0
