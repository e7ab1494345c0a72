"""Reading run folders into samples: the runs named (sweeps expanded), checked to compare, and their trained
trials, each used as a `Model` or counted under the `Exclusion` that keeps it out, grouped by budget."""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resnas._arch import Arch
from resnas._errors import DataError, StorageError
from resnas._runfolder import RUN_FILE, RunFolder, SweepFolder
from resnas._space_table import applicable
from resnas._trial import Origin, TrialRecord, TrialState

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
    rows: list[TrialRecord]
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


# -- trials: which ones the statistics use ----------------------------------------------------------


def classify(rec: TrialRecord, epochs: int) -> Exclusion | None:
    """Why a trial stays out of the statistics, or None when it is used."""
    excluded = {TrialState.PRUNED: Exclusion.PRUNED, TrialState.DUPLICATE: Exclusion.DUPLICATE,
                TrialState.OVER_BUDGET: Exclusion.OVER_BUDGET}
    if rec.state in excluded:
        return excluded[rec.state]
    if rec.state is not TrialState.COMPLETE or not rec.val_accuracy or not rec.arch or not rec.flops:
        return Exclusion.NOT_TRAINED
    if rec.name:
        return Exclusion.CLASSIC
    if Origin.of(rec.origin) in (Origin.MOVE, Origin.SCALED):  # chosen, not drawn
        return Exclusion.MOVE
    if rec.epochs < epochs:
        return Exclusion.SHORT
    return None


def _model(run: Run, rec: TrialRecord) -> Model:
    """A used trial as a Model; an arch that is no architecture is a one-line StorageError."""
    arch = rec.arch or {}
    try:
        values = applicable(Arch.from_dict(arch))
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise StorageError(f"{run.path / 'trials.csv'}: trial {rec.number} is damaged ({type(e).__name__}: "
                           f"{e}); restore the file from the study (rerun the search to rewrite it)") from None
    return Model(str(run.path), rec.number, rec.val_accuracy or 0.0, rec.flops or 0, run.budget, values, arch)


def classics(runs: Sequence[Run]) -> list[tuple[str, float, int]]:
    """Each complete queued classic of the runs, in their order: name, accuracy and deployment FLOPs."""
    return [(r.name, r.val_accuracy or 0.0, r.flops or 0) for run in runs for r in run.rows
            if r.name and r.state is TrialState.COMPLETE and r.val_accuracy]


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

