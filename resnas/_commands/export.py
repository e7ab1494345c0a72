"""`resnas export RUN_DIR [--top K | --trial N]`, or `--arch NAME_OR_ARCH_JSON`: networks as folders."""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from resnas._arch import Arch
from resnas._commands.count import resolve_arch
from resnas._contract import InputContract
from resnas._errors import ConfigError, UserError
from resnas._runfolder import RunFolder, ensure_writable, read_state
from resnas._trial import TrialRecord, ranked


def _numbers(records: list[TrialRecord]) -> str:
    """'3, 7, 12': the trial numbers of `records`, or 'none'."""
    return ", ".join(str(r.number) for r in records) or "none"


def _select(run: RunFolder, top: int | None, trial: int | None) -> list[TrialRecord]:
    """Trials to export: trial N, or the `top` best complete trials whose weights were kept."""
    run_dir = run.path
    rows = run.read_trials()
    complete = ranked(rows)
    if not complete:
        raise UserError(f"{run_dir} has no complete trial yet, so no trained network to export; "
                        "let the search finish a trial, or export an untrained network with --arch")
    kept = [r for r in complete if run.weights_path(r.number).is_file()]
    if trial is not None:
        row = next((r for r in rows if r.number == trial), None)
        if row is None:
            raise UserError(f"{run_dir} has no trial {trial}; its trials are numbered 0 to {len(rows) - 1}")
        if row not in kept:
            raise UserError(f"trial {trial} ({row.state.value}) has no kept weights in {run_dir}; trials with "
                            f"weights: {_numbers(kept)} (a search keeps its --keep-top best and its "
                            "Pareto front)")
        return [row]
    if top is not None and top < 1:
        raise UserError(f"--top must be at least 1, got {top}")
    best = complete[0]
    if top is None and best not in kept:
        raise UserError(f"the best trial, {best.number}, has no weights file "
                        f"({run.weights_path(best.number)}): restore it, or export another trial with "
                        f"--trial N (trials with weights: {_numbers(kept)})")
    if not kept:
        raise UserError(f"no complete trial of {run_dir} has kept weights (complete: {_numbers(complete)})")
    skipped = [r for r in complete[: top or 1] if r not in kept]
    if skipped:
        print(f"trials {_numbers(skipped)} rank among the best {top} but have no weights file; exporting the next "
              "best with weights instead")
    return kept[: top or 1]


def _card(run: dict[str, Any], run_dir: Path, row: TrialRecord, searched: Arch) -> dict[str, Any]:
    """The card facts of one trial, from run.json and its trials.csv row."""
    settings = run.get("settings", {})
    card: dict[str, Any] = {
        "title": f"Trial {row.number} of run {run_dir.resolve().name}",
        "trial": row.number,
        "val_accuracy": row.val_accuracy,
        "data": run.get("data"),
        "proxy_width": run.get("proxy_width"),
        "deployment_input": run.get("deployment_input"),
        "training_input": run.get("training_input"),
        "searched_arch": searched,
    }
    for key in ("dataset", "epochs", "train_samples", "val_samples", "batch_size", "lr", "command"):
        card[key] = settings.get(key)
    return {k: v for k, v in card.items() if v not in (None, "")}


def _contract(record: Mapping[str, Any], key: str, where: Path, fix: str) -> InputContract:
    """The input contract under `key` of the JSON file `where`, or a UserError naming the file and `fix`.

    Refused rather than exported without preprocessing: such a network takes normalised tensors where every
    user feeds images, and scores near chance on them however loud the warning was.
    """
    if key not in record:
        raise UserError(f"{where} does not record how raw images became the networks' inputs (resize, "
                        f"mean/std, class names; an older resnas wrote it): {fix}, then export again")
    try:
        return InputContract.from_dict(record[key])
    except (KeyError, TypeError, ValueError, ConfigError) as e:
        raise UserError(f"{where}: its {key!r} is damaged ({e}): {fix}, then export again") from None


def _search_again(run: Mapping[str, Any]) -> str:
    """The fix for a run.json without an input contract: the search's own command, rerun."""
    command = run.get("settings", {}).get("command")
    shown = f" (`{command}`)" if command else ""
    return f"rerun the search's command{shown} with this resnas: it records it, training only missing trials"


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
    out = Path(args.out) if args.out else folder.export_dir
    verified = folder.verification().read_summary()
    if verified is not None and args.top is None and args.trial is None:
        return _export_verified(folder, run, verified, out)
    selected = _select(folder, args.top, args.trial)
    contract = _contract(run, "input_contract", run_dir / "run.json", _search_again(run))
    ensure_writable(out, "--out")
    for row in selected:
        number = row.number
        if row.arch is None:
            raise UserError(f"trial {number} in {run_dir}/trials.csv has no arch")
        searched = Arch.from_dict(row.arch)
        # Rows without trained_arch come from runs that recorded only the proxy width.
        trained = Arch.from_dict(row.trained_arch) if row.trained_arch else \
            searched.narrowed(float(run.get("proxy_width", 1.0)))
        state = read_state(folder.weights_path(number), "restore it, or export another trial with --trial N")
        exported = export(trained, state, out / f"trial_{number:04d}", num_classes=training["classes"],
                           in_channels=training["channels"], resolution=training["resolution"],
                           card=_card(run, run_dir, row, searched),  # type: ignore[arg-type]
                           contract=contract)
        print(f"trial {number}: val acc {row.val_accuracy or 0.0:.4f} -> {exported}")
    if args.top is not None and len(selected) < args.top:
        print(f"only {len(selected)} complete trial(s) have kept weights; exported those")
    _note_onnx()
    return 0


def _note_onnx() -> None:
    """A note when model.onnx was left out for want of a package."""
    from resnas._card import ONNX_FILE, ONNX_INSTALL
    from resnas._export import onnx_missing

    missing = onnx_missing()
    if missing is not None:
        print(f"note: no {ONNX_FILE} written: {missing} is not installed ({ONNX_INSTALL} adds it)")


def _folder_name(label: str) -> str:
    """A verified network's folder: trial_0012 for "#12", else the label with what a path should not hold
    replaced ("resnet18@w0.62" -> "resnet18_w0.62")."""
    if label.startswith("#") and label[1:].isdigit():
        return f"trial_{int(label[1:]):04d}"
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._") or "network"
    return name


def _pick(folder: RunFolder, summary: Mapping[str, Any]) -> dict[str, Any]:
    """summary.json's entry of the verification's pick, or a UserError naming the fix."""
    where = folder.verification().path / "summary.json"
    label = summary.get("pick")
    entry = next((n for n in summary.get("networks", []) if n.get("label") == label), None)
    if label is None or entry is None:
        raise UserError(f"{where} names no pick among its networks (an older resnas wrote it, or it is "
                        f"damaged): rerun `resnas verify {folder.path}`, then export again; or export a "
                        "trial with --trial N")
    return dict(entry)


def _test_words(summary: Mapping[str, Any], entry: Mapping[str, Any]) -> str:
    """The pick's accuracy in words: on the test split over seeds, and seed 0's (the weights shipped)."""
    test = summary.get("test", {}).get(entry["label"])
    if test is None:  # a dataset without a test split: only the selection split scored it
        mean, spread = entry.get("select_accuracy_mean", 0.0), entry.get("select_accuracy_spread", 0.0)
        return (f"no test split scored; selection-split accuracy {mean:.4f} ± {spread:.4f} over "
                f"{entry.get('seeds', 1)} seeds; these weights are seed 0's")
    seeds = test["seeds"]
    return (f"test accuracy {test['mean']:.4f} ± {test['spread']:.4f} over {len(seeds)} "
            f"seed{'s' * (len(seeds) != 1)}, {float(seeds['0']):.4f} for seed 0, whose weights these are")


def _verified_words(summary: Mapping[str, Any], entry: Mapping[str, Any], recipe: Mapping[str, Any]) -> str:
    """The card's 'verified' fact: the pick's accuracy (`_test_words`), the recipe, why it, the verdict."""
    why = summary.get("pick_reason", "")
    count = len(summary.get("networks", []))
    picked = f"the pick of {count} networks retrained" + (f": {why}" if why else "")
    return (f"{_test_words(summary, entry)} (resnas verify: {recipe.get('train_samples')} images, "
            f"{recipe.get('epochs')} epochs); {picked}. {summary.get('verdict', '')}").strip()


def _export_verified(folder: RunFolder, run: dict[str, Any], summary: dict[str, Any], out: Path) -> int:
    """The verification's pick (summary.json's "pick"), with the weights of its seed-0 training and the input
    contract of the verification's training data (verify.json's "input")."""
    from resnas._export import export

    entry = _pick(folder, summary)
    verification = folder.verification()
    plan = verification.read_plan() or {}
    contract = _contract(plan, "input", verification.path / "verify.json",
                         f"verify again with this resnas (move {verification.path} away, then `resnas verify "
                         f"{folder.path}`): it records it")
    recipe = plan.get("recipe", {})
    width = float(recipe.get("width", run.get("proxy_width", 1.0)))
    searched = Arch.from_dict(entry["arch"])
    label = entry["label"]
    state = read_state(verification.weights_path(label), f"move {verification.path} away to verify afresh")
    name = f"Trial {label[1:]}" if label.startswith("#") else label
    card = {
        "title": f"{name} of run {folder.path.resolve().name}, verified",
        "verified": _verified_words(summary, entry, recipe),
        "data": plan.get("data"), "deployment_input": run.get("deployment_input"),
        "training_input": run["training_input"], "proxy_width": width, "searched_arch": searched,
        "dataset": run.get("settings", {}).get("dataset"), "trial": entry.get("trial"),
    }
    ensure_writable(out, "--out")
    exported = export(searched.narrowed(width), state, out / _folder_name(label),
                      num_classes=contract.num_classes, in_channels=contract.channels,
                      resolution=contract.resolution, contract=contract,
                      card={k: v for k, v in card.items() if v is not None})  # type: ignore[arg-type]
    test = summary.get("test", {}).get(label)
    score = "no test split" if test is None else \
        f"test acc {test['mean']:.4f} (seed 0, these weights: {float(test['seeds']['0']):.4f})"
    print(f"{label} (verified pick): {score} -> {exported}")
    _note_onnx()
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
    print(f"untrained {args.arch if entry else 'network'} -> {folder} (takes normalised tensors: no "
          "training data says how to preprocess images)")
    _note_onnx()
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
        "export", help="write networks as standalone folders (model.py, weights, model.pt2, model.onnx, "
                       "card)",
        description="Write trained networks of a search run (or an untrained --arch) as folders that need "
                    "only PyTorch: model.py, weights.pt and weights.safetensors, arch.json, preprocess.json, "
                    "model.pt2 (torch.export), model.onnx (with resnas[onnx]) and card.md. A trained network "
                    "takes raw images and resizes and normalises them as its training did.")
    p.add_argument("run", nargs="?", metavar="RUN_DIR", help="a search's --out folder")
    p.add_argument("--top", type=int, metavar="K",
                   help="the K best complete trials with kept weights (default: the verification's pick when "
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
                   help="--arch: input size of model.pt2, model.onnx and the card's costs (default: the zoo "
                        "entry's, else 224)")
    p.set_defaults(func=_run)
