"""`resnas verify RUN_DIR`: retrain the search's candidates and the classics from scratch, pick the cheapest as
accurate as the best on a held-out split, score the chosen on the test split."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any

from resnas._config import DeviceName
from resnas._errors import ConfigError, StorageError
from resnas._verdict import MARGIN, Pick

if TYPE_CHECKING:
    from resnas._verdict import Score, Summary, UnitResult
    from resnas._verify import Recipe


def _baselines(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise ConfigError("names no network: give zoo names such as resnet18,densenet121", field="baselines")
    return names


def recipe_from_args(run: dict[str, Any], args: argparse.Namespace | None) -> Recipe:
    """The verification recipe: the run's defaults, overridden by the flags given."""
    from resnas._verify import default_recipe

    if args is None:
        return default_recipe(run)
    return default_recipe(run, epochs=args.epochs, train_samples=args.train_samples, batch_size=args.batch_size,
                          lr=args.lr, width=args.width, seeds=args.seeds, top=args.top,
                          baselines=_baselines(args.baselines), drop_below=args.drop_below,
                          select_samples=args.select_samples)


def run_verification(run_dir: str, args: argparse.Namespace | None = None, *, data_root: str | None = None,
                     device_name: DeviceName = DeviceName.AUTO) -> Summary:
    """Verify the run in `run_dir` (flags from `args`, or the defaults), printing progress and the verdict."""
    from rich.console import Console

    from resnas._data import load_verification
    from resnas._lifecycle import resolve_device
    from resnas._runfolder import RunFolder
    from resnas._verify import plan, verify

    console = Console(highlight=False, width=None if Console().is_terminal else 160)
    folder = RunFolder(run_dir)
    run = folder.read_run()
    recipe = recipe_from_args(run, args)
    the_plan = plan(folder, recipe)  # refuses a changed recipe before any data is read
    dataset, training = run.get("settings", {}).get("dataset"), run.get("training_input")
    if not dataset or not training:
        raise StorageError(f"{folder.path}/run.json does not say the dataset and training input yet: "
                           "the search has not loaded its data, or an older resnas wrote it; run the search")
    device = resolve_device(device_name)
    rule = Pick(getattr(args, "pick", None) or Pick.CHEAPEST)
    margin = MARGIN if getattr(args, "margin", None) is None else args.margin
    if not margin >= 0:
        raise ConfigError(f"must be at least 0 accuracy points, got {margin}", field="margin")
    data = load_verification(dataset, root=data_root, test_root=getattr(args, "test_root", None),
                             train_samples=recipe.train_samples, select_samples=recipe.select_samples, seed=0,
                             resolution=training["resolution"])
    race = "" if recipe.drop_below is None or recipe.seeds < 2 else \
        f" (after seed 0, only those within {recipe.drop_below:g} points of the best, and the best of each kind)"
    console.print(f"resnas verify {run_dir}: {len(the_plan.networks)} networks x {recipe.seeds} seeds{race}, "
                  "trained from scratch")
    labels = [n.label + ("" if n.kind.value == "searched" else " (classic)") for n in the_plan.networks]
    console.print(f"  networks: {', '.join(labels)}")
    console.print(f"  recipe: {recipe.epochs} epochs, {recipe.train_samples} images, batch {recipe.batch_size}, lr "
                  f"{recipe.lr:g}, width x{recipe.width:g}, on {device}")
    console.print(f"  data  {data.description}")
    started = time.monotonic()

    def progress(unit: UnitResult, k: int, n: int) -> None:
        console.print(f"unit {k}/{n}: {unit.label} seed {unit.seed}: selection acc {unit.select_accuracy:.4f} "
                      f"({unit.train_seconds:.0f}s)")

    summary = verify(folder, recipe, device=device, data=data, rule=rule, margin=margin, progress=progress)
    _print(console, summary, folder.verification().path, time.monotonic() - started)
    return summary


def _print(console: Any, summary: Summary, out: Any, seconds: float) -> None:
    from rich.table import Table

    table = Table(title="verified on the selection split (training images no network trained on): mean +/- "
                        "spread over seeds")
    for col in ("rank", "network", "kind", "sel acc", "spread", "seeds", "vs most accurate (points, 95% CI)",
                "GFLOPs", "FLOPs vs most accurate", "proxy val acc"):
        table.add_column(col, justify="left" if col in ("network", "kind") else "right")
    best = summary.best.network.flops
    for i, s in enumerate(summary.scores, 1):
        proxy = s.network.proxy_accuracy
        diff = summary.vs_best.get(s.network.label)
        mark = " (pick)" if s is summary.pick else ""
        table.add_row(str(i), s.network.label + mark, _kind(s), f"{s.mean:.4f}", f"{s.spread:.4f}",
                      str(len(s.accuracies)), "-" if diff is None else str(diff).replace(" points", ""),
                      f"{s.network.flops / 1e9:.2f}", f"{s.network.flops / best:.2f}x",
                      "-" if proxy is None else f"{proxy:.4f}")
    console.print(table)
    console.print(f"pick ({summary.rule.value}): {summary.pick_reason}")
    console.print(f"verdict: {summary.verdict}")
    for line in summary.classics:
        console.print(f"  {line}")
    _print_test(console, summary)
    if summary.tau is not None:
        proxied = sum(s.network.proxy_accuracy is not None for s in summary.scores)
        console.print(f"proxy fidelity: Kendall tau {summary.tau:.2f} between the search's validation accuracy "
                      f"and the verified accuracy ({proxied} networks)")
    for w in summary.warnings:
        console.print(f"warning: {w}")
    console.print(f"verification in {out}: verify.csv, summary.json, verify.png, weights/; took {seconds:.0f}s")


def _kind(score: Score) -> str:
    """A network's kind, with who proposed a searched one."""
    origin = score.network.origin.split(":")[0]  # "move of #0", without the move itself
    return score.network.kind.value + (f": {origin}" if origin and origin not in ("classic", "sampler") else "")


def _print_test(console: Any, summary: Summary) -> None:
    """The test split's accuracies of the chosen networks (only those are scored on it)."""
    import statistics

    if not summary.test:
        return
    parts = [f"{label} {statistics.fmean(acc.values()):.4f}"
             + (f" +/- {statistics.stdev(acc.values()):.4f}" if len(acc) > 1 else "")
             for label, acc in summary.test.items()]
    console.print(f"test split (scored only for the pick, the most accurate and the best classic): {'; '.join(parts)}")
    if summary.test_gain is not None and summary.reference is not None:
        console.print(f"  on the test split, {summary.pick.network.label} - {summary.reference.network.label}: "
                      f"{summary.test_gain} paired over {summary.test_gain.pairs} seeds")


def _run(args: argparse.Namespace) -> int:
    run_verification(args.run, args, data_root=args.data_root, device_name=DeviceName(args.device))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify", help="retrain the search's candidates and the classics from scratch; pick the cheapest as "
                       "accurate as the best",
        description="Retrain a run's searched candidates and the classics with one recipe (more data and epochs "
                    "than the search's proxy) over several seeds, compare them on training images held out of "
                    "every training, pick the cheapest network as accurate as the most accurate, say how it "
                    "compares with each classic, and score the chosen networks on the dataset's test split "
                    "(never read by the search nor used to choose). Resumable: rerun the same command.")
    p.add_argument("run", metavar="RUN_DIR", help="a search's --out folder")
    p.add_argument("--top", type=int, help="searched networks to verify: the proxy's most accurate, then the cheapest "
                                          "within 2 points of the best trial (default 3)")
    p.add_argument("--pick", choices=[r.value for r in Pick],
                   help="which network to hand over: cheapest (default) = the fewest FLOPs among those not "
                        "measurably less accurate than the most accurate and at most --margin points below it on "
                        "average; accurate = the most accurate")
    p.add_argument("--margin", type=float, metavar="POINTS",
                   help=f"--pick cheapest: how far below the most accurate, on average, a pick may be (default {MARGIN:g})")
    p.add_argument("--select-samples", type=int, metavar="N",
                   help="training images held out to choose among the networks (default 10000, or what is left)")
    p.add_argument("--baselines", metavar="NAMES",
                   help="comma-separated zoo classics under the run's budget (default: the classics the study "
                        "trained)")
    p.add_argument("--seeds", type=int, help="trainings per network, seeds 0..N-1 (default 3)")
    p.add_argument("--drop-below", type=float, metavar="POINTS",
                   help="after seed 0, networks more than POINTS accuracy points below the best get no more "
                        "seeds, except the best classic and the best searched network (default 2; 100 keeps all)")
    p.add_argument("--epochs", type=int, help="epochs per training (default: the search's + 1, at least 3)")
    p.add_argument("--train-samples", type=int, help="training images (default: 2x the search's)")
    p.add_argument("--batch-size", type=int, help="default: the search's")
    p.add_argument("--lr", type=float, help="peak learning rate (default: the search's)")
    p.add_argument("--width", type=float, help="width factor of the trained networks (default: the search's "
                                               "proxy width; 1 trains the searched networks themselves)")
    p.add_argument("--device", default="auto", choices=[s.value for s in DeviceName])
    p.add_argument("--data-root", help="dataset folder (default: as the search)")
    p.add_argument("--test-root", help="imagefolder only: a folder of held-out images, one sub-folder per class")
    p.set_defaults(func=_run)
