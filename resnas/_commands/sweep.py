"""`resnas sweep`: N random fitting architectures per budget, trained at the proxy, for `resnas analyze`.

pycls's protocol for error distribution functions: an unbiased sample of the space per FLOP regime, every
model trained the same way to the end. So: the random sampler, no pruning, no classics queued first. Each
budget is an ordinary run folder (resumable, on either backend) under the sweep's folder.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from resnas._config import Objectives, PrunerName, SamplerName
from resnas._errors import ConfigError


def parse_budgets(text: str) -> list[int]:
    """"1G,4G" -> [1e9, 4e9]: distinct budgets, smallest first."""
    from resnas._budget import parse_budget

    parts = [p for p in (part.strip() for part in text.split(",")) if p]
    if not parts:
        raise ConfigError("names no budget: give one or more, comma-separated, such as 1G,4G", field="budget")
    return sorted({parse_budget(p) for p in parts})


def _default_out(args: argparse.Namespace, budgets: list[int]) -> str:
    from resnas._commands.search import DEFAULT_SPACE, budget_slug

    space = Path(args.space or DEFAULT_SPACE).stem
    slugs = "_".join(budget_slug(b) for b in budgets)
    return str(Path("results/sweeps") / f"{space}-{slugs}-{args.dataset}-seed{args.seed}")


def _run(args: argparse.Namespace) -> int:
    import optuna

    from resnas._commands.search import Reporter, budget_slug, config_from_args
    from resnas._lifecycle import check_budget_is_feasible, load_space
    from resnas._runfolder import SweepFolder
    from resnas._search import search

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.samples < 1:
        raise ConfigError(f"must be at least 1, got {args.samples}", field="samples")
    budgets = parse_budgets(args.budget)
    folder = SweepFolder(args.out or _default_out(args, budgets))
    configs = [config_from_args(args, budget=b, out=str(folder.path / budget_slug(b)), trials=args.samples,
                                sampler=SamplerName.RANDOM, pruner=PrunerName.NONE, classics=False,
                                first_of_each_kind=False, local_moves=0.0,
                                objectives=Objectives.ACCURACY, command="resnas " + shlex.join(sys.argv[1:]))
               for b in budgets]
    space, _ = load_space(configs[0].space)
    for cfg in configs:  # every budget checked before anything trains
        check_budget_is_feasible(space, cfg.budget)
    folder.record(configs[0].space, {budget_slug(c.budget): c.budget for c in configs}, args.samples)
    for i, cfg in enumerate(configs, 1):
        print(f"resnas sweep: budget {i} of {len(configs)}, {cfg.out}")
        reporter = Reporter()
        try:
            search(cfg, reporter, faults=args.faults)
        except KeyboardInterrupt:
            print(f"resnas: stopped; the sweep is saved in {folder.path}: rerun the same command to continue",
                  file=sys.stderr)
            return 130
        finally:
            reporter.stop()
    print(f"sweep in {folder.path}: {len(configs)} run(s) of {args.samples} random architectures; "
          f"next: resnas analyze {folder.path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from resnas._commands.search import add_training_flags

    p = sub.add_parser("sweep", help="train N random architectures per budget (for resnas analyze)",
                       description="Train N random fitting architectures of a space per FLOP budget, each to the "
                                   "end (random sampler, no pruning, no classics): the unbiased sample that "
                                   "`resnas analyze` turns into error distributions and effects per extension.")
    p.add_argument("--budget", required=True, help="one or more FLOP budgets, comma-separated: 1G,4G")
    p.add_argument("--samples", type=int, default=32, help="random fitting architectures trained per budget")
    p.add_argument("--out", help="sweep folder, one run folder per budget in it (default "
                                 "results/sweeps/<space>-<budgets>-<dataset>-seed<seed>)")
    add_training_flags(p)
    p.set_defaults(func=_run, trials=None, sampler=SamplerName.RANDOM.value, pruner=PrunerName.NONE.value,
                   objectives=Objectives.ACCURACY.value, no_classics=True, local_moves=0.0, verify=False)
