"""`resnas verify RUN_DIR`: retrain the search's best and the classics from scratch; score them on the test split."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any

from resnas._config import DeviceName
from resnas._errors import ConfigError, StorageError

if TYPE_CHECKING:
    from resnas._verify import Recipe, Summary, UnitResult


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
                          baselines=_baselines(args.baselines), drop_below=args.drop_below)


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
    data = load_verification(dataset, root=data_root, test_root=getattr(args, "test_root", None),
                             train_samples=recipe.train_samples, seed=0, resolution=training["resolution"])
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
        console.print(f"unit {k}/{n}: {unit.label} seed {unit.seed}: test acc {unit.test_accuracy:.4f} "
                      f"({unit.train_seconds:.0f}s)")

    summary = verify(folder, recipe, device=device, data=data, progress=progress)
    _print(console, summary, folder.verification().path, time.monotonic() - started)
    return summary


def _print(console: Any, summary: Summary, out: Any, seconds: float) -> None:
    from rich.table import Table

    table = Table(title="verified on the test split (mean +/- spread over seeds)")
    for col in ("rank", "network", "kind", "test acc", "spread", "seeds", "proxy val acc", "GFLOPs"):
        table.add_column(col, justify="left" if col in ("network", "kind") else "right")
    for i, s in enumerate(summary.scores, 1):
        proxy = s.network.proxy_accuracy
        table.add_row(str(i), s.network.label, s.network.kind.value, f"{s.mean:.4f}", f"{s.spread:.4f}",
                      str(len(s.accuracies)), "-" if proxy is None else f"{proxy:.4f}", f"{s.network.flops / 1e9:.2f}")
    console.print(table)
    console.print(f"verdict: {summary.verdict}")
    if summary.tau is not None:
        proxied = sum(s.network.proxy_accuracy is not None for s in summary.scores)
        console.print(f"proxy fidelity: Kendall tau {summary.tau:.2f} between the search's validation accuracy "
                      f"and the verified test accuracy ({proxied} networks)")
    for w in summary.warnings:
        console.print(f"warning: {w}")
    console.print(f"verification in {out}: verify.csv, summary.json, verify.png, weights/; took {seconds:.0f}s")


def _run(args: argparse.Namespace) -> int:
    run_verification(args.run, args, data_root=args.data_root, device_name=DeviceName(args.device))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify", help="retrain the search's best networks and the classics from scratch; score them on the "
                       "test split",
        description="Retrain the top searched networks and the classics of a run with one recipe (more data and "
                    "epochs than the search's proxy) over several seeds, score them on the dataset's test split "
                    "(never read by the search), and say whether the search beat the classics. Resumable: "
                    "rerun the same command.")
    p.add_argument("run", metavar="RUN_DIR", help="a search's --out folder")
    p.add_argument("--top", type=int, help="searched networks to verify, best proxy accuracy first (default 3)")
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
