"""Reading run folders into samples: the runs named (sweeps expanded), checked to compare, and their trained
trials, each used as a `Model` or counted under the `Exclusion` that keeps it out, grouped by budget."""

from __future__ import annotations

import enum
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resnas._arch import Arch
from resnas._errors import DataError, StorageError
from resnas._runfolder import RUN_FILE, RunFolder, SweepFolder
from resnas._space_table import applicable
from resnas._trial import Origin, TrialState

# Fewer complete sampled trials per budget than this cannot say anything about a space of ~10 dimensions.
MIN_TRIALS = 8


class Exclusion(str, enum.Enum):
    """Why a trial is left out of the statistics."""

    PRUNED = "pruned"  # stopped early: its accuracy is a lower-epoch number
    CLASSIC = "classic"  # a zoo network queued by the search, not sampled
    MOVE = "local_move"  # a one-step move of the best trial, or a half-sized classic: chosen, not sampled
    SHORT = "fewer_epochs"  # complete, yet trained for fewer epochs than the run's
    DUPLICATE = "duplicate"  # another trial's result reused
    OVER_BUDGET = "over_budget"  # rejected by the FLOP screen, never trained
    NOT_TRAINED = "not_trained"  # failed, interrupted or running


@dataclass(frozen=True)
class Run:
    """One run folder: its settings, trials.csv rows, the space fingerprint its study recorded, verification."""

    path: Path
    settings: Mapping[str, Any]
    rows: list[dict[str, str]]
    space_sha: str | None
    verified: Mapping[str, Any] | None

    @property
    def budget(self) -> int:
        return int(self.settings["budget"])

    @property
    def space(self) -> str:
        return str(self.settings.get("space", ""))

    @property
    def sampler(self) -> str:
        return str(self.settings.get("sampler", "tpe"))


@dataclass(frozen=True)
class Model:
    """A trial the statistics use: its run, number, accuracy, deployment FLOPs and dimension values."""

    run: str
    number: int
    accuracy: float
    flops: int
    budget: int
    values: Mapping[str, Any]
    arch: Mapping[str, Any]


def expand(paths: Sequence[str | Path]) -> list[Path]:
    """The run folders named, each once: a sweep folder (sweep.json) stands for its runs."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        sweep = SweepFolder(path).read()
        out += [path / str(r) for r in sweep["runs"]] if sweep is not None else [path]
    seen: set[Path] = set()
    unique = []
    for p in out:  # a folder named twice would count its trials twice
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique


def load_run(path: Path) -> Run:
    """A run folder's files; a folder that is not a run is a one-line StorageError."""
    if not (path / RUN_FILE).is_file():
        raise StorageError(f"{path} is not a resnas run folder (no {RUN_FILE}); pass the --out folder of a "
                           "search or a sweep folder")
    folder = RunFolder(path)
    run = folder.read_run()
    settings = run.get("settings")
    if not isinstance(settings, dict) or "budget" not in settings:
        raise StorageError(f"{path / RUN_FILE} holds no search settings yet: the search has not started; run it")
    return Run(path, settings, folder.read_trials(), _space_sha(run), folder.verification().read_summary())


def _space_sha(run: Mapping[str, Any]) -> str | None:
    """The hash of the space file the search read (run.json; None from runs that predate it)."""
    sha = run.get("space_sha256")
    return str(sha) if sha else None


def check_comparable(runs: Sequence[Run]) -> None:
    """Refuse runs of different spaces, or trained differently (their accuracies do not compare)."""
    first = runs[0]
    for run in runs[1:]:
        same_name = Path(first.space).name == Path(run.space).name
        same_sha = first.space_sha is None or run.space_sha is None or first.space_sha == run.space_sha
        if not (same_name and same_sha):
            raise DataError(f"{run.path} searched space {run.space} ({run.space_sha or 'no hash'}), {first.path} "
                            f"{first.space} ({first.space_sha or 'no hash'}): analyze runs of one space at a time")
        for key in ("dataset", "epochs", "train_samples", "val_samples", "proxy_width", "train_resolution"):
            if first.settings.get(key) != run.settings.get(key):
                raise DataError(f"{run.path} was trained with {key} {run.settings.get(key)!r}, {first.path} with "
                                f"{first.settings.get(key)!r}: their accuracies do not compare; analyze them apart")


# -- trials.csv rows: the only code that reads their fields ------------------------------------------


def classify(row: Mapping[str, str], epochs: int) -> Exclusion | None:
    """Why a trials.csv row stays out of the statistics, or None when it is used."""
    state = row.get("state", "")
    if state == "pruned":
        return Exclusion.PRUNED
    if state == "duplicate":
        return Exclusion.DUPLICATE
    if state == "over_budget":
        return Exclusion.OVER_BUDGET
    if state != "complete" or not row.get("val_accuracy") or not row.get("arch") or not row.get("flops"):
        return Exclusion.NOT_TRAINED
    if row.get("name"):
        return Exclusion.CLASSIC
    if Origin.of(row.get("origin", "")) in (Origin.MOVE, Origin.SCALED):  # chosen, not drawn
        return Exclusion.MOVE
    if int(row.get("epochs") or 0) < epochs:
        return Exclusion.SHORT
    return None


def _model(run: Run, row: Mapping[str, str]) -> Model:
    """A used trials.csv row as a Model; a damaged row is a one-line StorageError."""
    try:
        arch = json.loads(row["arch"])
        return Model(str(run.path), int(row["number"]), float(row["val_accuracy"]), int(row["flops"]), run.budget,
                     applicable(Arch.from_dict(arch)), arch)
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise StorageError(f"{run.path / 'trials.csv'}: trial {row.get('number')} is damaged ({type(e).__name__}: "
                           f"{e}); restore the file from the study (rerun the search to rewrite it)") from None


def classics(runs: Sequence[Run]) -> list[tuple[str, float, int]]:
    """Each complete queued classic of the runs, in their order: name, accuracy and deployment FLOPs."""
    return [(r["name"], float(r["val_accuracy"]), int(r["flops"])) for run in runs for r in run.rows
            if r.get("name") and r.get("state") == TrialState.COMPLETE.value and r.get("val_accuracy")]


# -- samples ----------------------------------------------------------------------------------------


@dataclass
class Sample:
    """The models of one budget, and how many trials of each kind were left out."""

    budget: int
    runs: list[Run]
    models: list[Model]
    excluded: Counter[str] = field(default_factory=Counter)


def collect(runs: Sequence[Run]) -> list[Sample]:
    """The runs' models grouped by budget (smallest first); a budget with under MIN_TRIALS is refused."""
    samples: dict[int, Sample] = {}
    for run in runs:
        sample = samples.setdefault(run.budget, Sample(run.budget, [], []))
        sample.runs.append(run)
        epochs = int(run.settings.get("epochs", 1))
        for row in run.rows:
            why = classify(row, epochs)
            if why is not None:
                sample.excluded[why.value] += 1
                continue
            sample.models.append(_model(run, row))
    for s in samples.values():
        if len(s.models) < MIN_TRIALS:
            left = ", ".join(f"{n} {k}" for k, n in sorted(s.excluded.items())) or "none"
            raise DataError(f"{', '.join(str(r.path) for r in s.runs)}: {len(s.models)} complete sampled trials at "
                            f"budget {s.budget:,} FLOPs (left out: {left}), too few to conclude anything; analyze "
                            f"needs {MIN_TRIALS}: rerun the search with a larger --trials to resume it")
    return [samples[b] for b in sorted(samples)]

