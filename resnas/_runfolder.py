"""`RunFolder`: the one owner of a run's files, for the search that writes them and the commands that read them.

Layout of a run folder (`--out`):
    run.json               the search's settings (space, budget, data and training proxy)
    study.db               the Optuna study (SQLite) unless another storage is given
    trials.csv             one row per trial, rewritten as trials finish
    accuracy_vs_flops.png  every trained trial, the budget line and the Pareto front
    weights/trial_N.pt     state dicts of the top `keep_top` trials (and the Pareto front)
    best/arch.json         the best trial's searched Arch (what the budget was checked on)
    best/trained_arch.json the network actually trained: arch.json narrowed by the proxy width
    best/weights.pt        its state dict: loads into build(trained_arch.json) with the training input's
                           classes and channels (run.json's training_input)
    verify/                `resnas verify`: verify.json (recipe, networks), verify.csv (one row per network
                           and seed), summary.json, verify.png, weights/<network>.pt (seed 0's)
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resnas._errors import StorageError
from resnas._trial import COLUMNS, TrialRecord, TrialState, pareto_front, ranked

if TYPE_CHECKING:
    import torch

    from resnas._verify import Summary

RUN_FILE = "run.json"
STUDY_FILE = "study.db"
TRIALS_FILE = "trials.csv"
PLOT_FILE = "accuracy_vs_flops.png"
WEIGHTS_DIR = "weights"
BEST_DIR = "best"
VERIFY_DIR = "verify"


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


def ensure_writable(folder: Path, what: str = "the output folder") -> None:
    """Create `folder` (and parents) or raise a StorageError naming it and the fix."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".resnas-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise StorageError(f"cannot write to {what} {folder}: {e.strerror or e}; choose a folder you can write "
                           "to") from None


class RunFolder:
    """A run's files under `path`: reads and writes of run.json, trials.csv, weights, best/ and the plot."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def prepare(self) -> None:
        """Create the folder, or fail with a StorageError."""
        ensure_writable(self.path, "the run folder")

    def verification(self) -> VerifyFolder:
        """The files of `resnas verify` in this run."""
        return VerifyFolder(self.path / VERIFY_DIR)

    def study_url(self, storage: str | None) -> str:
        """The study's Optuna storage: `storage`, else study.db in this folder."""
        return storage or f"sqlite:///{(self.path / STUDY_FILE).resolve()}"

    # -- run.json ---------------------------------------------------------------------------------

    def write_run(self, run: Mapping[str, Any]) -> None:
        atomic_write(self.path / RUN_FILE, json.dumps(run, indent=2).encode())

    def read_run(self) -> dict[str, Any]:
        """run.json, or a StorageError saying the folder is not a run."""
        path = self.path / RUN_FILE
        if not path.is_file():
            raise StorageError(f"{self.path} is not a resnas run folder (no {RUN_FILE}); pass the output folder "
                               "of a search")
        try:
            run: dict[str, Any] = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise StorageError(f"{path} is corrupt ({e}); rerun the search or restore the file") from None
        return run

    # -- trials.csv -------------------------------------------------------------------------------

    def write_trials(self, records: list[TrialRecord]) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS)
        writer.writeheader()
        for r in sorted(records, key=lambda r: r.number):
            writer.writerow(r.row())
        atomic_write(self.path / TRIALS_FILE, buf.getvalue().encode())

    def read_trials(self) -> list[dict[str, str]]:
        """trials.csv's rows as strings; none before the first trial has finished."""
        try:
            with open(self.path / TRIALS_FILE, newline="") as f:
                return list(csv.DictReader(f))
        except FileNotFoundError:
            return []

    # -- weights ----------------------------------------------------------------------------------

    def weights_path(self, number: int) -> Path:
        return self.path / WEIGHTS_DIR / f"trial_{number:04d}.pt"

    def save_weights(self, number: int, state: Mapping[str, torch.Tensor]) -> None:
        """A trial's state dict, on the CPU, written atomically."""
        _save_state(self.weights_path(number), state)

    def keep_weights(self, records: list[TrialRecord], keep_top: int) -> set[int]:
        """Delete weight files outside the top `keep_top` and the Pareto front; refresh best/."""
        keep = {r.number for r in ranked(records)[:keep_top]} | {r.number for r in pareto_front(records)}
        folder = self.path / WEIGHTS_DIR
        for f in folder.glob("trial_*.pt") if folder.is_dir() else ():
            try:
                number = int(f.stem.split("_")[1])
            except (IndexError, ValueError):
                continue
            if number not in keep:
                f.unlink(missing_ok=True)
        best = ranked(records)[:1]
        if best and self.weights_path(best[0].number).is_file():
            self._write_best(best[0])
        return keep

    def _write_best(self, best: TrialRecord) -> None:
        folder = self.path / BEST_DIR
        folder.mkdir(exist_ok=True)
        atomic_write(folder / "arch.json", json.dumps(best.arch, indent=2, sort_keys=True).encode())
        atomic_write(folder / "trained_arch.json", json.dumps(best.trained_arch, indent=2, sort_keys=True).encode())
        shutil.copyfile(self.weights_path(best.number), folder / "weights.pt")
        atomic_write(folder / "trial.json", json.dumps(best.row(), indent=2).encode())

    # -- the plot ---------------------------------------------------------------------------------

    def plot(self, records: list[TrialRecord], budget: int) -> None:
        """accuracy_vs_flops.png: every trained trial against its deployment FLOPs, budget line, Pareto front."""
        # A bare Figure renders without pyplot: no backend chosen, no global figure state left behind.
        from matplotlib.figure import Figure

        fig = Figure(figsize=(7, 4.5), dpi=110)
        ax = fig.add_subplot()
        styles = {TrialState.COMPLETE: ("o", "tab:blue", "complete"), TrialState.PRUNED: ("x", "tab:gray", "pruned")}
        for state, (marker, color, label) in styles.items():
            pts = [(r.flops / 1e9, r.val_accuracy) for r in records
                   if r.state is state and r.flops is not None and r.val_accuracy is not None]
            if pts:
                ax.scatter(*zip(*pts), marker=marker, color=color, label=f"{label} ({len(pts)})", alpha=0.8)
        for r in records:  # the classics by name: the points the search must beat
            if r.name and r.state is TrialState.COMPLETE and r.flops is not None and r.val_accuracy is not None:
                ax.annotate(r.name, (r.flops / 1e9, r.val_accuracy), fontsize=7, xytext=(4, 4),
                            textcoords="offset points")
        front = pareto_front(records)
        if front:
            ax.plot([r.flops / 1e9 for r in front], [r.val_accuracy for r in front], "-", color="tab:red",
                    marker="*", markersize=11, label="Pareto front")
        rejected = sum(r.state is TrialState.OVER_BUDGET for r in records)
        ax.axvline(budget / 1e9, color="black", linestyle="--", label=f"budget {budget / 1e9:g} GFLOPs")
        ax.set_xlabel("FLOPs at the deployment input (G, fvcore's count)")
        ax.set_ylabel("validation accuracy")
        ax.set_title(f"{len(records)} trials, {rejected} rejected over budget (not trained, not shown)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=f".{PLOT_FILE}.", suffix=".png")
        os.close(fd)
        fig.savefig(tmp)
        os.replace(tmp, self.path / PLOT_FILE)


class VerifyFolder:
    """`resnas verify`'s files in a run folder (see the module docstring)."""

    PLAN, UNITS, SUMMARY, PLOT = "verify.json", "verify.csv", "summary.json", "verify.png"

    def __init__(self, path: Path) -> None:
        self.path = path

    def read_plan(self) -> dict[str, Any] | None:
        return self._read_json(self.PLAN)

    def write_plan(self, plan: Mapping[str, Any]) -> None:
        ensure_writable(self.path, "the verification folder")
        atomic_write(self.path / self.PLAN, json.dumps(plan, indent=2).encode())

    def read_summary(self) -> dict[str, Any] | None:
        return self._read_json(self.SUMMARY)

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        atomic_write(self.path / self.SUMMARY, json.dumps(summary, indent=2).encode())

    def _read_json(self, name: str) -> dict[str, Any] | None:
        path = self.path / name
        if not path.is_file():
            return None
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise StorageError(f"{path} is corrupt ({e}); move {self.path} away to verify afresh") from None
        return data

    def read_units(self) -> list[dict[str, str]]:
        """verify.csv's rows, one per finished unit (none before the first)."""
        try:
            with open(self.path / self.UNITS, newline="") as f:
                return list(csv.DictReader(f))
        except FileNotFoundError:
            return []

    def write_units(self, rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.path / self.UNITS, buf.getvalue().encode())

    def weights_path(self, label: str) -> Path:
        """Seed 0's state dict of network `label` ("#12" is trial_0012)."""
        stem = f"trial_{int(label[1:]):04d}" if label.startswith("#") else label
        return self.path / WEIGHTS_DIR / f"{stem}.pt"

    def save_weights(self, label: str, state: Mapping[str, torch.Tensor]) -> None:
        _save_state(self.weights_path(label), state)

    def plot(self, summary: Summary) -> None:
        """verify.png: each network's test accuracy per seed and its mean, classics in orange, best first."""
        from matplotlib.figure import Figure

        scores = summary.scores
        fig = Figure(figsize=(7, 0.9 + 0.45 * len(scores)), dpi=110)
        ax = fig.add_subplot()
        for y, s in enumerate(reversed(scores)):
            color = "tab:orange" if s.network.kind.value == "classic" else "tab:blue"
            ax.scatter(list(s.accuracies.values()), [y] * len(s.accuracies), color=color, alpha=0.6, s=18)
            ax.errorbar([s.mean], [y], xerr=[[s.spread], [s.spread]], fmt="D", color=color, capsize=3)
        ax.set_yticks(range(len(scores)), [f"{s.network.label} ({s.network.kind.value})" for s in reversed(scores)],
                      fontsize=8)
        ax.set_xlabel("test accuracy (dots: seeds; diamond: mean +/- spread)")
        ax.set_title(summary.verdict, fontsize=7, wrap=True)
        ax.grid(alpha=0.3, axis="x")
        fig.tight_layout()
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=f".{self.PLOT}.", suffix=".png")
        os.close(fd)
        fig.savefig(tmp)
        os.replace(tmp, self.path / self.PLOT)


def _save_state(path: Path, state: Mapping[str, torch.Tensor]) -> None:
    """A state dict, on the CPU, written atomically."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({k: v.detach().cpu() for k, v in state.items()}, tmp)
    os.replace(tmp, path)
