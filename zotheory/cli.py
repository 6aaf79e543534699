"""The ``zotheory`` command line.

    zotheory rates              run the rate-validation experiments (quick preset), then report + plot
    zotheory rates --full       the publication-size sweep (results/rates/full; figures in its figures/)
    zotheory rates --full --figures figures
                                ... and rewrite the committed figures/ and figures/rates_report.md
    zotheory rates --only NAME  one experiment (repeatable)
    zotheory plot               regenerate figures and the report table from saved results only
    zotheory algorithms         list every algorithm with its paper reference and status
    zotheory assets fetch NAME  fetch a real model / data set into the cache (assets list: what exists)
    zotheory finetune ...       fine-tune a language model with a ZO (or FO reference) optimizer
    zotheory finetune-report    table and figures from saved fine-tuning runs
    zotheory bench [--quick]    speed and memory benchmarks (results/bench/<quick|full>)

Figures go to <results>/figures unless --figures says otherwise: the committed figures/
folder is written only when named explicitly.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from .errors import one_line_errors

from .errors import CommandError

REPO_ROOT = Path(__file__).resolve().parent.parent

# Subcommands whose modules import torch (and more): listed with a static help line, and their
# parser built (their module's ``add_cli``) only when the command line names them, so that
# ``zotheory --help`` and ``zotheory --version`` import no torch. Keep each help line equal to
# the one its ``add_cli`` gives (tests/test_cli_paths.py compares the two).
LAZY_SUBCOMMANDS: tuple[tuple[str, str, str], ...] = (
    ("assets", "zotheory.llm.assets", "fetch / list the offline model and data assets"),
    ("finetune", "zotheory.llm.train", "fine-tune a language model with a zero-order (or reference) optimizer"),
    ("finetune-report", "zotheory.llm.report", "table and figures from saved fine-tuning runs"),
    ("bench", "zotheory.benchmarks.suite", "speed and memory benchmarks (BENCHMARKS.md)"),
)


def _default_results(preset: str) -> Path:
    return Path("results") / "rates" / preset


def _default_figures(results: str | Path) -> Path:
    # Every preset keeps its figures beside its results; the committed figures/ folder is
    # written only when asked for (--figures figures).
    return Path(results) / "figures"


def _preset(args: argparse.Namespace) -> str:
    return "full" if getattr(args, "full", False) else args.preset


def _not_a_folder(path: Path) -> Path | None:
    """The first existing component of ``path`` (itself or a parent) that is not a folder."""
    for p in (path, *path.parents):
        if p.is_symlink() and not p.exists():
            return p  # a dangling link: nothing can be created through it
        if p.exists():
            return None if p.is_dir() else p
    return None


def ensure_writable_dir(path: str | os.PathLike, what: str = "output", option: str | None = None) -> Path:
    """Create the folder ``path`` (with its parents) if missing and check that a file can be
    written in it, before any computing; a :class:`CommandError` naming the path otherwise
    (``what``: the folder's role in the message, ``option``: the flag that changes it)."""
    import tempfile

    path = Path(path)
    hint = f"; pass {option} DIR naming a writable folder" if option else ""
    blocker = _not_a_folder(path)
    if blocker is not None:
        kind = ("a file" if blocker.is_file() else "a broken link" if not blocker.exists()
                else "not a folder")
        if blocker == path:
            raise CommandError(f"{what} path {path} is {kind}, not a folder" + hint)
        raise CommandError(f"{what} path {path} cannot be a folder: {blocker} is {kind}" + hint)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".zotheory-write-check.", suffix=".tmp", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise CommandError(f"{what} folder {path} is not writable ({err.strerror or err})" + hint) from err
    return path


def _existing_results(results: Path) -> None:
    if not results.exists():
        raise CommandError(f"no results under {results}: run `zotheory rates` first")
    if not results.is_dir():
        raise CommandError(f"results path {results} is a file, not a folder; pass --results DIR naming "
                           f"the folder `zotheory rates` wrote")


def cmd_rates(args: argparse.Namespace) -> int:
    preset = _preset(args)
    results = Path(args.results) if args.results else _default_results(preset)
    figures = Path(args.figures) if args.figures else _default_figures(results)
    # Both folders are checked before the (long) computing starts.
    ensure_writable_dir(results, "results", "--results")
    if not args.no_plot:
        ensure_writable_dir(figures, "figures", "--figures")

    from .synthetic.sweep import run_sweep

    counts = run_sweep(preset, results, only=args.only, progress=not args.no_progress)
    corrupt = f", {counts['corrupt']} of them over corrupt files" if counts.get("corrupt") else ""
    print(f"{counts['runs']} runs in {counts['groups']} groups: {counts['written']} computed{corrupt}, "
          f"{counts['skipped']} already done (results in {results})")
    if args.no_plot:
        return 0
    args.results = str(results)
    args.figures = str(figures)
    args.only = None  # the report covers every experiment saved under the results folder
    return cmd_plot(args)


def cmd_plot(args: argparse.Namespace) -> int:
    preset = _preset(args)
    results = Path(args.results) if args.results else _default_results(preset)
    figures = Path(args.figures) if args.figures else _default_figures(results)
    _existing_results(results)
    ensure_writable_dir(figures, "figures", "--figures")

    from .synthetic.report import make_report

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


class _VersionAction(argparse.Action):
    """``--version``: the installed package version, looked up only when asked for."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from . import package_version

        print(f"zotheory {package_version()}")
        parser.exit()


def _named_command(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` names: its first word that is not an option (the top level has
    only flags without values: -h/--help, --version)."""
    for a in argv:
        if a == "--":
            continue
        if not a.startswith("-"):
            return a
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser. With ``argv``, only the heavy subcommand it names (if any) is built for real,
    the others are listed with their help line (see :data:`LAZY_SUBCOMMANDS`); without, every
    subcommand is built."""
    p = argparse.ArgumentParser(prog="zotheory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action=_VersionAction, help="print the package version and exit")
    one_line_errors(p)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--preset", choices=["smoke", "quick", "full"], default="quick",
                        help="experiment sizes (default: quick, a few minutes on 2 cores)")
        sp.add_argument("--full", action="store_true", help="same as --preset full")
        sp.add_argument("--only", action="append", metavar="NAME",
                        help="run/plot only this experiment (repeatable); see `zotheory rates --list`")
        sp.add_argument("--results", metavar="DIR", help="results folder (default results/rates/<preset>)")
        sp.add_argument("--figures", metavar="DIR",
                        help="figures folder (default <results>/figures, for every preset; "
                             "`--figures figures` rewrites the committed figures)")

    r = one_line_errors(sub.add_parser("rates", help="run the rate-validation experiments (Theorems 1 and 2)"))
    common(r)
    r.add_argument("--no-plot", action="store_true", help="only compute results")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--list", action="store_true", help="list the experiments and exit")
    r.set_defaults(func=cmd_rates)

    pl = one_line_errors(sub.add_parser("plot", help="regenerate figures and the report table from saved results"))
    common(pl)
    pl.set_defaults(func=cmd_plot)

    al = sub.add_parser("algorithms", help="list the implemented algorithms")
    al.set_defaults(func=cmd_algorithms)

    # The LLM side (zotheory.llm) and the benchmarks add their own subcommands (their modules
    # import torch; transformers only when a command runs).
    import importlib

    named = _named_command(argv) if argv is not None else None
    for name, module, help_line in LAZY_SUBCOMMANDS:
        if argv is None or name == named:
            importlib.import_module(module).add_cli(sub)
        else:
            sub.add_parser(name, help=help_line, add_help=False).set_defaults(_lazy_command=name)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if getattr(args, "_lazy_command", None):  # a placeholder was parsed: build everything, parse again
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
    return run_command(args.command, lambda: args.func(args))


def run_command(name: str, fn) -> int:
    """``fn()``'s exit code; a :class:`~zotheory.errors.CommandError` or ``ValueError`` becomes
    one line on stderr and exit code 2 (``ZOTHEORY_DEBUG=1``: the traceback instead)."""
    try:
        return fn()
    except (CommandError, ValueError) as err:
        if os.environ.get("ZOTHEORY_DEBUG"):
            raise
        message = " ".join(str(err).split())  # one line
        print(f"zotheory {name}: error: {message}", file=sys.stderr)
        return 2
