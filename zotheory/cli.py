"""The ``zotheory`` command line.

    zotheory rates              run the rate-validation experiments (quick preset), then report + plot
    zotheory rates --full       the publication-size sweep (writes figures/ and figures/rates_report.md)
    zotheory rates --only NAME  one experiment (repeatable)
    zotheory plot               regenerate figures and the report table from saved results only
    zotheory algorithms         list every algorithm with its paper reference and status
    zotheory assets fetch NAME  fetch a real model / data set into the cache (assets list: what exists)
    zotheory finetune ...       fine-tune a language model with a ZO (or FO reference) optimizer
    zotheory finetune-report    table and figures from saved fine-tuning runs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent


def _default_results(preset: str) -> Path:
    return Path("results") / "rates" / preset


def _default_figures(preset: str) -> Path:
    # Only the full sweep writes the committed figures; other presets keep theirs beside their results.
    return Path("figures") if preset == "full" else _default_results(preset) / "figures"


def _preset(args: argparse.Namespace) -> str:
    return "full" if getattr(args, "full", False) else args.preset


def cmd_rates(args: argparse.Namespace) -> int:
    from .synthetic.sweep import run_sweep

    preset = _preset(args)
    results = Path(args.results) if args.results else _default_results(preset)
    counts = run_sweep(preset, results, only=args.only, progress=not args.no_progress)
    print(f"{counts['runs']} runs in {counts['groups']} groups: {counts['written']} computed, "
          f"{counts['skipped']} already done (results in {results})")
    if args.no_plot:
        return 0
    args.results = str(results)
    args.figures = args.figures or str(_default_figures(preset))
    args.only = None  # the report covers every experiment saved under the results folder
    return cmd_plot(args)


def cmd_plot(args: argparse.Namespace) -> int:
    from .synthetic.report import make_report

    preset = _preset(args)
    results = Path(args.results) if args.results else _default_results(preset)
    figures = Path(args.figures) if args.figures else _default_figures(preset)
    if not results.exists():
        print(f"no results under {results}: run `zotheory rates` first", file=sys.stderr)
        return 2
    out = make_report(results, figures, only=args.only)
    print(f"wrote {len(out['figures'])} figures and {out['table']} ({out['rows']} rows)")
    return 0


def runs_on(name: str) -> str:
    """Where an algorithm runs: ``synthetic`` (the batched rate engine), ``model`` (a
    ``zotheory.optim`` optimizer over a model's parameters) or ``both``."""
    from .algorithms import ALGORITHMS
    from .optim import OPTIMIZERS

    where = [w for w, ok in (("synthetic", ALGORITHMS[name].batched), ("model", name in OPTIMIZERS)) if ok]
    return "both" if len(where) == 2 else where[0] if where else "none"


def cmd_algorithms(args: argparse.Namespace) -> int:
    from .algorithms import ALGORITHMS
    from .optim import OPTIMIZERS

    rows = [("name", "algorithm", "runs on", "optimizer", "status", "reference")]
    for a in ALGORITHMS.values():
        cls = OPTIMIZERS.get(a.name)
        rows.append((a.name, a.title, runs_on(a.name), cls.__name__ if cls else "-", a.status, a.reference))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(f"{c:<{w}}" for c, w in zip(r, widths)) + "  " + r[-1])
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="zotheory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--preset", choices=["smoke", "quick", "full"], default="quick",
                        help="experiment sizes (default: quick, a few minutes on 2 cores)")
        sp.add_argument("--full", action="store_true", help="same as --preset full")
        sp.add_argument("--only", action="append", metavar="NAME",
                        help="run/plot only this experiment (repeatable); see `zotheory rates --list`")
        sp.add_argument("--results", metavar="DIR", help="results folder (default results/rates/<preset>)")
        sp.add_argument("--figures", metavar="DIR",
                        help="figures folder (default figures/ for --full, else <results>/figures)")

    r = sub.add_parser("rates", help="run the rate-validation experiments (Theorems 1 and 2)")
    common(r)
    r.add_argument("--no-plot", action="store_true", help="only compute results")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--list", action="store_true", help="list the experiments and exit")
    r.set_defaults(func=cmd_rates)

    pl = sub.add_parser("plot", help="regenerate figures and the report table from saved results")
    common(pl)
    pl.set_defaults(func=cmd_plot)

    al = sub.add_parser("algorithms", help="list the implemented algorithms")
    al.set_defaults(func=cmd_algorithms)

    # The LLM side (zotheory.llm) adds its own subcommands; importing these modules
    # does not import transformers (that happens only when a command runs).
    from .llm import assets
    from .llm import report as llm_report
    from .llm import train as llm_train

    assets.add_cli(sub)
    llm_train.add_cli(sub)
    llm_report.add_cli(sub)

    from .benchmarks import suite as bench_suite

    bench_suite.add_cli(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "rates" and args.list:
        from .synthetic.experiments import EXPERIMENTS

        for name, fn in EXPERIMENTS.items():
            print(f"{name:<24} {(fn.__doc__ or '').strip().splitlines()[0]}")
        return 0
    if args.command in ("rates", "plot") and getattr(args, "only", None):
        from .synthetic.experiments import EXPERIMENTS

        unknown = [n for n in args.only if n not in EXPERIMENTS]
        if unknown:
            parser.error(f"unknown experiment(s) {unknown}; valid: {sorted(EXPERIMENTS)}")
    return args.func(args)
