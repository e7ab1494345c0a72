"""`resnas analyze RUN_DIR [RUN_DIR ...]`: which dimension values pay, from the trained trials of runs or sweeps."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resnas._errors import ConfigError, UserError

if TYPE_CHECKING:
    from resnas._analyze import Analysis


def _out(args: argparse.Namespace) -> Path:
    """--out, else RUN_DIR/analysis for a single folder (a run or a sweep)."""
    if args.out:
        return Path(args.out)
    if len(args.runs) > 1:
        raise UserError("several folders need --out: say where the analysis goes")
    return Path(args.runs[0]) / "analysis"


def _run(args: argparse.Namespace) -> int:
    from resnas._analyze import analyze, refine, write

    if args.bootstrap < 100:
        raise ConfigError(f"must be at least 100 resamples for a 95% interval, got {args.bootstrap}",
                          field="bootstrap")
    if args.seed < 0:
        raise ConfigError(f"must be at least 0, got {args.seed}", field="seed")
    out = _out(args)
    analysis = analyze(args.runs, resamples=args.bootstrap, seed=args.seed)
    files = write(analysis, out)
    refined = refine(analysis, out) if args.refine else None
    print_summary(analysis, out, len(files), refined)
    return 0


def print_summary(analysis: Analysis, out: Path, files: int, refined: Path | None) -> None:
    """The analysis in the terminal: samples, warnings, verdicts, importance, the budget table, verification."""
    from rich.console import Console

    console = Console(highlight=False, width=None if Console().is_terminal else 160)
    data = analysis.to_dict()
    console.print(f"resnas analyze: {len(analysis.runs)} runs of {analysis.runs[0].space}")
    console.print(f"  trials used: {data['trials_used']}")
    for w in analysis.warnings:
        console.print(f"warning: {w}")
    for b in analysis.budgets:
        left = ", ".join(f"{n} {k}" for k, n in sorted(b.sample.excluded.items())) or "none"
        console.print(f"\nbudget {b.budget:,} FLOPs: {len(b.sample.models)} models (left out: {left})")
        for v in b.verdicts:
            console.print(f"  {v}")
        console.print(f"  {b.top_sentence()}")
    _table(console, analysis)
    for v in analysis.verified():
        console.print(f"\nverified ({v['run']}): pick {v['pick']}; {v['verdict']}")
        for n in v["networks"]:
            test = "" if n["test_accuracy_mean"] is None else f", test acc {_num(n['test_accuracy_mean'])}"
            console.print(f"  {n['label']} ({n['kind']}): selection acc {_num(n['select_accuracy_mean'])} +/- "
                          f"{_num(n['select_accuracy_spread'])} over {n['seeds']} seeds{test}")
    console.print(f"\nanalysis in {out}: analysis.json, index.html and {files - 2} PNGs"
                  + (f"; refined space: {refined}" if refined else ""))


def _num(x: Any) -> str:
    return "-" if x is None else f"{x:.4f}"


def _table(console: Any, analysis: Analysis) -> None:
    """Rows: extensions, columns: budgets (only with several budgets)."""
    from rich.table import Table

    from resnas._budget import format_flops

    cols, rows = analysis.table()
    if len(cols) < 2:
        return
    table = Table(title="effect in accuracy points against the reference [95% CI] (n = value / reference)")
    table.add_column("extension")
    for c in cols:
        table.add_column(format_flops(c), justify="right")
    for name, cells in rows:
        table.add_row(name, *cells)
    console.print(table)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze", help="which extension pays: EDFs, effects with CIs, importances and verdicts from runs",
        description="Analyse the complete trials of one or more search runs or sweep folders: per dimension of "
                    "the space, each value's error EDF and its effect on accuracy against a reference value "
                    "(bootstrap 95%% CI), the dimensions' importance, accuracy vs FLOPs plots, and a verdict "
                    "per extension; writes analysis.json, PNGs and a self-contained index.html.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (a search's --out) or sweep folders")
    p.add_argument("--out", help="output folder (default: RUN_DIR/analysis; required for several folders)")
    p.add_argument("--refine", action="store_true",
                   help="also write refined_space.yaml: the space narrowed by the evidence, each change commented")
    p.add_argument("--bootstrap", type=int, default=2000, metavar="N", help="bootstrap resamples per CI")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p.set_defaults(func=_run)
