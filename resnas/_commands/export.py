"""`resnas export RUN_DIR [--top K | --trial N]`, or `--arch NAME_OR_ARCH_JSON`: networks as folders."""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path
from typing import Any

from resnas._arch import Arch
from resnas._commands.count import resolve_arch
from resnas._errors import UserError
from resnas._runfolder import RunFolder, ensure_writable
from resnas._trial import TrialState


def _arch(row: dict[str, str], key: str) -> Arch | None:
    """The Arch in column `key` of a trials.csv row, or None where the column is empty."""
    text = row.get(key) or ""
    return Arch.from_json(text) if text else None


def _numbers(rows: list[dict[str, str]]) -> str:
    """'3, 7, 12': the trial numbers of `rows`, or 'none'."""
    return ", ".join(r["number"] for r in rows) or "none"


def _select(run: RunFolder, top: int | None, trial: int | None) -> list[dict[str, str]]:
    """trials.csv rows to export: trial N, or the `top` best complete trials whose weights were kept."""
    run_dir = run.path
    rows = run.read_trials()
    complete = [r for r in rows if r["state"] == TrialState.COMPLETE.value and r["val_accuracy"]]
    if not complete:
        raise UserError(f"{run_dir} has no complete trial yet, so no trained network to export; "
                        "let the search finish a trial, or export an untrained network with --arch")
    # Best validation accuracy first, fewer FLOPs breaking ties: the order of resnas._trial.ranked.
    complete.sort(key=lambda r: (-float(r["val_accuracy"]), int(r["flops"] or 0), int(r["number"])))
    kept = [r for r in complete if run.weights_path(int(r["number"])).is_file()]
    if trial is not None:
        row = next((r for r in rows if int(r["number"]) == trial), None)
        if row is None:
            raise UserError(f"{run_dir} has no trial {trial}; its trials are numbered 0 to {len(rows) - 1}")
        if row not in kept:
            raise UserError(f"trial {trial} ({row['state']}) has no kept weights in {run_dir}; trials with "
                            f"weights: {_numbers(kept)} (a search keeps its --keep-top best and its "
                            "Pareto front)")
        return [row]
    if top is not None and top < 1:
        raise UserError(f"--top must be at least 1, got {top}")
    best = complete[0]
    if top is None and best not in kept:
        raise UserError(f"the best trial, {best['number']}, has no weights file "
                        f"({run.weights_path(int(best['number']))}): restore it, or export another trial with "
                        f"--trial N (trials with weights: {_numbers(kept)})")
    if not kept:
        raise UserError(f"no complete trial of {run_dir} has kept weights (complete: {_numbers(complete)})")
    skipped = [r for r in complete[: top or 1] if r not in kept]
    if skipped:
        print(f"trials {_numbers(skipped)} rank among the best {top} but have no weights file; exporting the next "
              "best with weights instead")
    return kept[: top or 1]


def _card(run: dict[str, Any], run_dir: Path, row: dict[str, str], searched: Arch) -> dict[str, Any]:
    """The card facts of one trial, from run.json and its trials.csv row."""
    settings = run.get("settings", {})
    card: dict[str, Any] = {
        "title": f"Trial {row['number']} of run {run_dir.resolve().name}",
        "trial": int(row["number"]),
        "val_accuracy": float(row["val_accuracy"]),
        "data": run.get("data"),
        "proxy_width": run.get("proxy_width"),
        "deployment_input": run.get("deployment_input"),
        "training_input": run.get("training_input"),
        "searched_arch": searched,
    }
    for key in ("dataset", "epochs", "train_samples", "val_samples", "batch_size", "lr", "command"):
        card[key] = settings.get(key)
    return {k: v for k, v in card.items() if v not in (None, "")}


def _load_weights(path: Path) -> dict[str, Any]:
    """A kept state dict, or a UserError naming the damaged file."""
    import torch

    try:
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
        raise UserError(f"cannot read {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}; "
                        "the file is damaged") from None
    return state


def _export_run(args: argparse.Namespace) -> int:
    from resnas._export import export

    if args.top is not None and args.trial is not None:
        raise UserError("give --top K or --trial N, not both")
    for flag in ("classes", "in_channels", "resolution"):
        if getattr(args, flag) is not None:
            raise UserError(f"--{flag.replace('_', '-')} applies to --arch exports; a run's networks keep "
                            "the input they were trained on")
    folder = RunFolder(args.run)
    run_dir = folder.path
    run = folder.read_run()
    training = run.get("training_input")
    if not training:
        raise UserError(f"{run_dir}/run.json does not say the training input (classes, channels) "
                        "yet: the search has not loaded its data, or an older resnas wrote it; run the search")
    out = Path(args.out) if args.out else run_dir / "export"
    verified = folder.verification().read_summary()
    if verified is not None and args.top is None and args.trial is None:
        return _export_verified(folder, run, verified, out)
    selected = _select(folder, args.top, args.trial)
    ensure_writable(out, "--out")
    for row in selected:
        number = int(row["number"])
        searched = _arch(row, "arch")
        if searched is None:
            raise UserError(f"trial {number} in {run_dir}/trials.csv has no arch")
        # Rows without trained_arch come from runs that recorded only the proxy width.
        trained = _arch(row, "trained_arch") or searched.narrowed(float(run.get("proxy_width", 1.0)))
        state = _load_weights(folder.weights_path(number))
        exported = export(trained, state, out / f"trial_{number:04d}", num_classes=training["classes"],
                           in_channels=training["channels"], resolution=training["resolution"],
                           card=_card(run, run_dir, row, searched))  # type: ignore[arg-type]
        print(f"trial {number}: val acc {float(row['val_accuracy']):.4f} -> {exported}")
    if args.top is not None and len(selected) < args.top:
        print(f"only {len(selected)} complete trial(s) have kept weights; exported those")
    return 0


def _export_verified(folder: RunFolder, run: dict[str, Any], summary: dict[str, Any], out: Path) -> int:
    """The verified winner (best mean test accuracy), with the weights of its seed-0 training."""
    from resnas._export import export

    best = summary["networks"][0]
    plan = folder.verification().read_plan() or {}
    width = float(plan.get("recipe", {}).get("width", run.get("proxy_width", 1.0)))
    searched = Arch.from_dict(best["arch"])
    label = best["label"]
    state = _load_weights(folder.verification().weights_path(label))
    training = run["training_input"]
    recipe = plan.get("recipe", {})
    card = {
        "title": f"{'Trial ' + label[1:] if label.startswith('#') else label} of run {folder.path.resolve().name}, "
                 "verified",
        "verified": (f"test accuracy {best['test_accuracy_mean']:.4f} ± {best['test_accuracy_spread']:.4f} over "
                     f"{best['seeds']} seeds (resnas verify: {recipe.get('train_samples')} images, "
                     f"{recipe.get('epochs')} epochs); the best of {len(summary['networks'])} networks retrained; "
                     f"these weights are seed 0's. {summary['verdict']}"),
        "data": plan.get("data"), "deployment_input": run.get("deployment_input"), "training_input": training,
        "proxy_width": width, "searched_arch": searched, "dataset": run.get("settings", {}).get("dataset"),
    }
    if best.get("trial") is not None:
        card["trial"] = best["trial"]
    name = f"trial_{int(label[1:]):04d}" if label.startswith("#") else label
    ensure_writable(out, "--out")
    exported = export(searched.narrowed(width), state, out / name, num_classes=training["classes"],
                      in_channels=training["channels"], resolution=training["resolution"],
                      card={k: v for k, v in card.items() if v is not None})  # type: ignore[arg-type]
    print(f"{label} (verified winner): test acc {best['test_accuracy_mean']:.4f} -> {exported}")
    return 0


def _export_arch(args: argparse.Namespace) -> int:
    from resnas._export import export

    if args.top is not None or args.trial is not None:
        raise UserError("--top and --trial choose trials of a run; --arch exports one untrained network")
    if not args.out:
        raise UserError("--arch needs --out DIR: the folder to write the network to")
    from resnas._build import check_buildable

    arch, entry = resolve_arch(args.arch)
    out = Path(args.out)
    classes = args.classes if args.classes is not None else entry.num_classes if entry else 1000
    resolution = args.resolution if args.resolution is not None else entry.resolution if entry else 224
    in_channels = args.in_channels if args.in_channels is not None else 3
    check_buildable(arch, num_classes=classes, in_channels=in_channels)  # before any folder is made
    ensure_writable(out, "--out")
    if entry is not None:
        card = {"title": f"{args.arch} (untrained)", "source": entry.source}
    elif Path(args.arch).is_file():
        card = {"title": f"{Path(args.arch).name} (untrained)"}
    else:
        card = {"title": "An untrained network from an arch JSON"}
    folder = export(arch, None, out, num_classes=classes, in_channels=in_channels, resolution=resolution,
                    card=card)  # type: ignore[arg-type]
    print(f"untrained {args.arch if entry else 'network'} -> {folder}")
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.run and args.arch:
        raise UserError("give either RUN_DIR (trained networks of a search) or --arch (an untrained "
                        "network), not both")
    if args.run:
        return _export_run(args)
    if args.arch:
        return _export_arch(args)
    raise UserError("nothing to export: give a RUN_DIR (a search's --out folder) or --arch NAME_OR_ARCH_JSON")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="write networks as standalone folders (model.py, weights, model.pt2, card)",
        description="Write trained networks of a search run (or an untrained --arch) as folders that need "
                    "only PyTorch: model.py, weights.pt, arch.json, model.pt2 (torch.export) and card.md.")
    p.add_argument("run", nargs="?", metavar="RUN_DIR", help="a search's --out folder")
    p.add_argument("--top", type=int, metavar="K",
                   help="the K best complete trials with kept weights (default: the verified winner when "
                        "`resnas verify` has run, else the best trial)")
    p.add_argument("--trial", type=int, metavar="N", help="trial number N")
    p.add_argument("--arch", metavar="NAME_OR_ARCH_JSON",
                   help="instead of a run: a zoo name, an arch JSON string or file, exported untrained")
    p.add_argument("--out", help="where to write (default RUN_DIR/export, one trial_NNNN/ per network); "
                                 "with --arch, the network's folder itself")
    p.add_argument("--classes", type=int,
                   help="--arch: classifier outputs (default: the zoo entry's, else 1000)")
    p.add_argument("--in-channels", type=int, help="--arch: input channels (default 3)")
    p.add_argument("--resolution", type=int,
                   help="--arch: input size of model.pt2 and the card's costs (default: the zoo entry's, "
                        "else 224)")
    p.set_defaults(func=_run)
