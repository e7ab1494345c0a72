"""A run folder: the study's trials as files a person can read (trials.csv, plot, best/, kept weights).

Layout of `--out`:
    run.json               the search's settings (space, budget, data and training proxy), written once
    study.db               the Optuna study (SQLite) unless --storage points elsewhere
    trials.csv             one row per trial, rewritten as trials finish
    accuracy_vs_flops.png  every trained trial, the budget line and the Pareto front
    weights/trial_N.pt     state dicts of the top --keep-top trials (and the Pareto front)
    best/arch.json         the best trial's searched Arch (what the budget was checked on)
    best/trained_arch.json the network actually trained: arch.json narrowed by the proxy width
    best/weights.pt        its state dict: loads into build(trained_arch.json) with the training input's
                           classes and channels (run.json's training_input)
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from resnas._errors import UserError

RUN_FILE = "run.json"
TRIALS_FILE = "trials.csv"
PLOT_FILE = "accuracy_vs_flops.png"
WEIGHTS_DIR = "weights"
BEST_DIR = "best"

CSV_COLUMNS = (
    "number", "state", "val_accuracy", "flops", "params", "macs", "budget_fraction", "duration_s", "epochs",
    "train_flops", "images_per_s", "node", "reason", "arch", "trained_arch",
)


class TrialState:
    """resnas's own account of a trial (Optuna's states cannot tell a budget rejection from pruning)."""

    COMPLETE = "complete"
    PRUNED = "pruned"  # stopped early by the pruner (or ASHA): trained, counts towards --trials
    OVER_BUDGET = "over_budget"  # rejected by the FLOP screen, never trained
    FAILED = "failed"  # non-finite loss, out of memory, an error: `reason` says which
    INTERRUPTED = "interrupted"  # Ctrl-C or a killed process; retried on the next run
    RUNNING = "running"

    TRAINED = (COMPLETE, PRUNED)


@dataclass(frozen=True)
class TrialRecord:
    """One row of trials.csv."""

    number: int
    state: str
    val_accuracy: float | None
    flops: int | None
    params: int | None
    macs: int | None
    budget_fraction: float | None
    duration_s: float | None
    epochs: int
    train_flops: int | None
    images_per_s: float | None
    node: str
    reason: str
    arch: dict[str, Any] | None
    # The network actually trained (narrower than `arch` under a --proxy-width below 1).
    trained_arch: dict[str, Any] | None = None

    def row(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in CSV_COLUMNS}
        for k in ("arch", "trained_arch"):
            out[k] = json.dumps(getattr(self, k), sort_keys=True) if getattr(self, k) else ""
        for k in ("val_accuracy", "budget_fraction", "duration_s", "images_per_s"):
            if out[k] is not None:
                out[k] = round(out[k], 4 if k != "images_per_s" else 1)
        return {k: "" if v is None else v for k, v in out.items()}


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so a killed run never leaves a half-written file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def prepare_out_dir(out: Path) -> None:
    """Create `out` (and parents) or fail with a one-line UserError naming the folder and the fix."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".resnas-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to --out {out}: {e.strerror or e}; choose a folder you can write to") from None


def write_trials_csv(out: Path, records: Iterable[TrialRecord]) -> None:
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    for r in sorted(records, key=lambda r: r.number):
        writer.writerow(r.row())
    atomic_write(out / TRIALS_FILE, buf.getvalue().encode())


def read_trials_csv(out: Path) -> list[dict[str, str]]:
    with open(out / TRIALS_FILE, newline="") as f:
        return list(csv.DictReader(f))


def weights_path(out: Path, number: int) -> Path:
    return out / WEIGHTS_DIR / f"trial_{number:04d}.pt"


def pareto_front(records: list[TrialRecord]) -> list[TrialRecord]:
    """Completed trials not dominated in (higher accuracy, fewer deployment FLOPs)."""
    done = sorted((r for r in records if r.state == TrialState.COMPLETE and r.flops is not None),
                  key=lambda r: (r.flops, -(r.val_accuracy or 0.0)))
    front: list[TrialRecord] = []
    for r in done:
        if not front or (r.val_accuracy or 0.0) > (front[-1].val_accuracy or 0.0):
            front.append(r)
    return front


def ranked(records: list[TrialRecord]) -> list[TrialRecord]:
    """Completed trials, best validation accuracy first (fewer FLOPs breaks ties)."""
    done = [r for r in records if r.state == TrialState.COMPLETE and r.val_accuracy is not None]
    return sorted(done, key=lambda r: (-(r.val_accuracy or 0.0), r.flops or 0, r.number))


def keep_weights(out: Path, records: list[TrialRecord], keep_top: int) -> set[int]:
    """Delete weight files outside the top `keep_top` and the Pareto front; refresh best/."""
    keep = {r.number for r in ranked(records)[:keep_top]} | {r.number for r in pareto_front(records)}
    folder = out / WEIGHTS_DIR
    if folder.is_dir():
        for f in folder.glob("trial_*.pt"):
            try:
                number = int(f.stem.split("_")[1])
            except (IndexError, ValueError):
                continue
            if number not in keep:
                f.unlink(missing_ok=True)
    best = ranked(records)[:1]
    if best and weights_path(out, best[0].number).is_file():
        (out / BEST_DIR).mkdir(exist_ok=True)
        atomic_write(out / BEST_DIR / "arch.json", json.dumps(best[0].arch, indent=2, sort_keys=True).encode())
        atomic_write(out / BEST_DIR / "trained_arch.json",
                     json.dumps(best[0].trained_arch, indent=2, sort_keys=True).encode())
        shutil.copyfile(weights_path(out, best[0].number), out / BEST_DIR / "weights.pt")
        atomic_write(out / BEST_DIR / "trial.json", json.dumps(best[0].row(), indent=2).encode())
    return keep


def plot(out: Path, records: list[TrialRecord], budget: int) -> None:
    """accuracy_vs_flops.png: every trained trial against its deployment FLOPs, budget line, Pareto front."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    styles = {TrialState.COMPLETE: ("o", "tab:blue", "complete"), TrialState.PRUNED: ("x", "tab:gray", "pruned")}
    for state, (marker, color, label) in styles.items():
        pts = [(r.flops / 1e9, r.val_accuracy) for r in records
               if r.state == state and r.flops is not None and r.val_accuracy is not None]
        if pts:
            ax.scatter(*zip(*pts), marker=marker, color=color, label=f"{label} ({len(pts)})", alpha=0.8)
    front = pareto_front(records)
    if front:
        ax.plot([r.flops / 1e9 for r in front], [r.val_accuracy for r in front], "-", color="tab:red",
                marker="*", markersize=11, label="Pareto front")
    rejected = sum(r.state == TrialState.OVER_BUDGET for r in records)
    ax.axvline(budget / 1e9, color="black", linestyle="--", label=f"budget {budget / 1e9:g} GFLOPs")
    ax.set_xlabel("FLOPs at the deployment input (G, fvcore's count)")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"{len(records)} trials, {rejected} rejected over budget (not trained, not shown)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{PLOT_FILE}.", suffix=".png")
    os.close(fd)
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out / PLOT_FILE)


def read_run(out: Path) -> dict[str, Any]:
    """run.json of a run folder, or a UserError saying the folder is not a run."""
    path = out / RUN_FILE
    if not path.is_file():
        raise UserError(f"{out} is not a resnas run folder (no {RUN_FILE}); pass the --out folder of a search")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is corrupt ({e}); rerun the search or restore the file") from None
