"""`analyze`: what the trained trials of one or more runs (or sweeps) say about each dimension of their space.

    models       the complete trials trained at the run's full epochs that a sampler chose (trials.csv rows);
                 pruned (fewer epochs), queued classics, duplicates, over-budget and failed trials are counted
                 and left out of every statistic. Runs at one budget are pooled; budgets are analysed apart.
    dimensions   per dimension that varied: each value's error EDF (pycls: the fraction of models with error
                 <= e), mean accuracy and its effect against the dimension's reference value (difference of
                 means in points, 95% percentile bootstrap CI, each group resampled on its own)
    importance   PED-ANOVA (Optuna) over the dimensions' values, else the between-value variance share
    verdicts     one sentence per value of each extension dimension, and the budget table (rows: extensions,
                 columns: budgets)
    refine       the space YAML narrowed on that evidence (`refine`)

Reference values: the value that means "without the extension" where there is one (`_REFERENCE`: identity
shortcut, post-activation, no stochastic depth, no dropout, cardinality 1, width multiplier 1), else (or where
that value was not sampled) the most common value, ties to the smallest.
"""

from __future__ import annotations

import base64
import copy
import enum
import hashlib
import html
import json
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from resnas._errors import DataError, StorageError
from resnas._runfolder import RUN_FILE, RunFolder, SweepFolder, atomic_write, ensure_writable, save_figure
from resnas._trial import Origin, pareto

# Fewer complete sampled trials per budget than this cannot say anything about a space of ~10 dimensions.
MIN_TRIALS = 8
# A value needs this many models (and so does its reference) before its CI is read as a conclusion.
MIN_PER_VALUE = 5
# Numeric dimensions with more distinct values than this are split at their sample quartiles.
MAX_LEVELS = 5
# Top-quartile models needed before `refine` shrinks a size range to theirs.
MIN_TOP = 3
CONFIDENCE = 0.95
# "Without the extension": the value every other value of the dimension is compared with, where sampled.
_REFERENCE: dict[str, Any] = {"shortcut": "identity", "order": "post", "survival": "none", "dropout": 0.0,
                              "cardinality": 1, "dense_cardinality": 1, "width_multiplier": 1.0}
# The dimensions verdicts speak of (the rest, depths and widths, are sizes: EDFs, effects and importance only).
EXTENSIONS = ("shortcut", "order", "block", "cardinality", "base_width", "width_multiplier", "growth_rate",
              "bottleneck_size", "compression", "dense_cardinality", "dropout", "survival", "survival_prob")
# Sizes that `refine` shrinks to the top quartile's span (the other dimensions lose significantly bad values).
_SIZE = re.compile(r"stem_width|growth_rate|stages\[\d+\]\.(depth|width)")
_WORDS = {("shortcut", "identity"): "identity shortcut", ("shortcut", "gated"): "gated (Highway) shortcut",
          ("shortcut", "dense"): "dense (DenseNet) connectivity", ("order", "pre"): "pre-activation",
          ("order", "post"): "post-activation", ("survival", "none"): "no stochastic depth",
          ("survival", "uniform"): "stochastic depth (uniform)", ("survival", "linear"): "stochastic depth (linear)"}


class Exclusion(str, enum.Enum):
    """Why a trial is left out of the statistics."""

    PRUNED = "pruned"  # stopped early: its accuracy is a lower-epoch number
    CLASSIC = "classic"  # a zoo network queued by the search, not sampled
    MOVE = "local_move"  # a one-step move of the best trial, or a half-sized classic: chosen, not sampled
    SHORT = "fewer_epochs"  # complete, yet trained for fewer epochs than the run's
    DUPLICATE = "duplicate"  # another trial's result reused
    OVER_BUDGET = "over_budget"  # rejected by the FLOP screen, never trained
    NOT_TRAINED = "not_trained"  # failed, interrupted or running


# -- loading --------------------------------------------------------------------------------------


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
                     features(arch), arch)
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise StorageError(f"{run.path / 'trials.csv'}: trial {row.get('number')} is damaged ({type(e).__name__}: "
                           f"{e}); restore the file from the study (rerun the search to rewrite it)") from None


def features(arch: Mapping[str, Any]) -> dict[str, Any]:
    """The value of every dimension that applies to `arch` (a to_dict()), named as the space names them."""
    out: dict[str, Any] = {k: arch[k] for k in ("stem", "stem_width", "block", "shortcut", "order")}
    dense = arch["shortcut"] == "dense"
    for i, s in enumerate(arch["stages"]):
        out[f"stages[{i}].depth"], out[f"stages[{i}].stride"] = s["depth"], s["stride"]
        if not dense:
            out[f"stages[{i}].width"] = s["width"]
    bottleneck = arch["block"] == "bottleneck"
    if dense:
        out.update({k: arch[k] for k in ("growth_rate", "bottleneck_size", "compression")})
        if bottleneck:
            out["dense_cardinality"] = arch["cardinality"]
    else:
        out["width_multiplier"] = arch["width_multiplier"]
        if bottleneck:
            out["cardinality"] = arch["cardinality"]
            if arch["cardinality"] > 1:
                out["base_width"] = arch["base_width"]
    out["dropout"], out["survival"] = arch["dropout"], arch["survival"]
    if arch["survival"] != "none":
        out["survival_prob"] = arch["survival_prob"]
    return out


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


# -- statistics -----------------------------------------------------------------------------------


def edf(errors: Iterable[float]) -> list[tuple[float, float]]:
    """The error EDF as steps: each distinct error e and the fraction of models with error <= e."""
    ordered = sorted(errors)
    n = len(ordered)
    return [(e, sum(x <= e for x in ordered) / n) for e in sorted(set(ordered))]


def bootstrap_difference(a: Sequence[float], b: Sequence[float], *, resamples: int,
                         seed: int) -> tuple[float, float | None, float | None]:
    """mean(a) - mean(b) and its 95% percentile bootstrap CI (None with under 2 in a group).

    Scheme: rng = numpy.random.default_rng(seed); indices for a, then for b, as rng.integers(0, n, (resamples,
    n)); the CI is numpy.percentile of the resampled differences at 2.5 and 97.5.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(x.mean() - y.mean())
    if len(x) < 2 or len(y) < 2:
        return diff, None, None
    rng = np.random.default_rng(seed)
    ia = rng.integers(0, len(x), (resamples, len(x)))
    ib = rng.integers(0, len(y), (resamples, len(y)))
    diffs = x[ia].mean(axis=1) - y[ib].mean(axis=1)
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(diffs, [tail, 100 - tail])
    return diff, float(low), float(high)


def quartile_bins(values: Sequence[float]) -> list[tuple[float, float]]:
    """Levels of a numeric dimension: each distinct value, or the quartile bins (q_k < v <= q_k+1 at numpy's
    linear quartiles; empty bins dropped) past MAX_LEVELS distinct values or past one per two models (a
    continuous range: nearly every model its own value); each level as (smallest, largest member)."""
    distinct = sorted(set(values))
    if len(distinct) <= MAX_LEVELS and len(distinct) <= max(2, len(values) / 2):
        return [(v, v) for v in distinct]
    edges = np.quantile(np.asarray(values, dtype=float), [0.25, 0.5, 0.75])
    groups: dict[int, list[float]] = {}
    for v in distinct:
        groups.setdefault(int(np.searchsorted(edges, v, side="left")), []).append(v)
    return [(min(g), max(g)) for _, g in sorted(groups.items())]


@dataclass(frozen=True)
class Effect:
    """A value's mean accuracy minus the reference's, in points, with its CI and the two group sizes."""

    points: float
    low: float | None
    high: float | None
    n: int
    n_ref: int

    @property
    def conclusive(self) -> bool:
        """Both groups big enough (MIN_PER_VALUE) for the CI to be read."""
        return self.low is not None and min(self.n, self.n_ref) >= MIN_PER_VALUE

    @property
    def sign(self) -> int:
        """+1 CI above 0, -1 below, 0 spanning it or inconclusive."""
        if not self.conclusive or self.low is None or self.high is None:
            return 0
        return 1 if self.low > 0 else -1 if self.high < 0 else 0

    def to_dict(self) -> dict[str, Any]:
        return {"points": _r(self.points), "ci_low": _r(self.low), "ci_high": _r(self.high), "n": self.n,
                "n_reference": self.n_ref, "conclusive": self.conclusive}


@dataclass(frozen=True)
class Level:
    """One value (or bin) of a dimension: its models' accuracies (points), EDF and effect."""

    label: str
    low: Any
    high: Any
    accuracies: tuple[float, ...]
    effect: Effect | None  # None for the reference itself

    @property
    def n(self) -> int:
        return len(self.accuracies)

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    def contains(self, value: Any) -> bool:
        return value == self.low if self.low == self.high else self.low <= value <= self.high

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.label, "low": self.low, "high": self.high, "n": self.n,
                "mean_accuracy": _r(self.mean), "effect": None if self.effect is None else self.effect.to_dict(),
                "edf": [[_r(e), _r(f)] for e, f in edf(100 - a for a in self.accuracies)]}


@dataclass(frozen=True)
class DimensionStats:
    """A varied dimension at one budget: its levels, which is the reference, whether binned."""

    name: str
    levels: tuple[Level, ...]
    reference: str
    binned: bool
    reference_rule: str

    def level(self, label: str) -> Level:
        return next(lv for lv in self.levels if lv.label == label)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "reference": self.reference, "reference_rule": self.reference_rule,
                "binned": self.binned, "levels": [lv.to_dict() for lv in self.levels]}


def _label(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _levels(values: Sequence[Any]) -> tuple[list[tuple[str, Any, Any]], bool]:
    """(label, low, high) per level of a dimension's observed values, and whether they were binned."""
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if not numeric:
        return [(str(v), v, v) for v in sorted(set(values), key=str)], False
    bins = quartile_bins(values)
    binned = len(bins) < len(set(values))
    short = (lambda v: f"{v:.3g}") if binned else _label  # bins of a continuous range: 3 digits say enough
    return [(short(lo) if lo == hi else f"{short(lo)}..{short(hi)}", lo, hi) for lo, hi in bins], binned


def dimension(name: str, models: Sequence[Model], *, resamples: int, seed: int) -> DimensionStats | None:
    """The stats of dimension `name` over the models it applies to; None when it took one value there."""
    applied = [m for m in models if name in m.values]
    if len({_label(m.values[name]) for m in applied}) < 2:
        return None
    spans, binned = _levels([m.values[name] for m in applied])
    groups = [(label, lo, hi, tuple(100 * m.accuracy for m in applied if _within(m.values[name], lo, hi)))
              for label, lo, hi in spans]
    reference, rule = _reference(name, [(label, lo, hi, len(accs)) for label, lo, hi, accs in groups])
    ref_accs = next(accs for label, _, _, accs in groups if label == reference)
    levels = []
    for label, lo, hi, accs in groups:
        effect = None
        if label != reference:
            points, low, high = bootstrap_difference(accs, ref_accs, resamples=resamples, seed=seed)
            effect = Effect(points, low, high, len(accs), len(ref_accs))
        levels.append(Level(label, lo, hi, accs, effect))
    return DimensionStats(name, tuple(levels), reference, binned, rule)


def _within(value: Any, low: Any, high: Any) -> bool:
    return value == low if low == high else low <= value <= high


def _reference(name: str, levels: Sequence[tuple[str, Any, Any, int]]) -> tuple[str, str]:
    """The reference level's label and why: the "without" value where sampled, else the most common level."""
    classic = _REFERENCE.get(name)
    if classic is not None:
        for label, lo, hi, _ in levels:
            if _within(classic, lo, hi):
                return label, f"{_label(classic)}: the value without the extension"
    most = max(levels, key=lambda lv: (lv[3], -levels.index(lv)))
    return most[0], "the most common value"


# -- importance -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Importance:
    """Each dimension's importance (summing to 1), the method that gave it, and the variance share always."""

    method: str
    values: dict[str, float]
    variance_share: dict[str, float]
    note: str

    def top(self, k: int = 3) -> list[str]:
        return [n for n, v in sorted(self.values.items(), key=lambda kv: -kv[1])[:k] if v >= 0.005]

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "values": {k: _r(v, 4) for k, v in self.values.items()},
                "variance_share": {k: _r(v, 4) for k, v in self.variance_share.items()}, "note": self.note}


def importance(dims: Sequence[DimensionStats], models: Sequence[Model]) -> Importance:
    """PED-ANOVA over the dimensions' levels (top max(10%, 5 models), at most half, against all); where it
    fails or finds nothing, the between-value variance share (eta squared over the models it applies to)."""
    share = {d.name: _variance_share(d) for d in dims}
    try:
        ped = _ped_anova(dims, models)
    except Exception as e:  # noqa: BLE001 -- any failure of Optuna's evaluator falls back, saying why
        ped, why = None, f"PED-ANOVA failed ({type(e).__name__}: {e})"
    else:
        why = "PED-ANOVA found no difference between the top models and the rest"
    if ped is not None and sum(ped.values()) > 0:
        total = sum(ped.values())
        return Importance("ped-anova", {k: v / total for k, v in ped.items()}, share,
                          "Optuna's PED-ANOVA: how much each dimension's values differ between the top models "
                          "and all models")
    total = sum(share.values()) or 1.0
    return Importance("variance-share", {k: v / total for k, v in share.items()}, share,
                      f"{why}; the share of accuracy variance between a dimension's values (eta squared), "
                      "normalised")


def _variance_share(d: DimensionStats) -> float:
    """Between-level sum of squares over the total, for the models the dimension applies to."""
    every = np.concatenate([np.asarray(lv.accuracies) for lv in d.levels])
    total = float(((every - every.mean()) ** 2).sum())
    between = sum(lv.n * (lv.mean - every.mean()) ** 2 for lv in d.levels)
    return between / total if total > 0 else 0.0


def _ped_anova(dims: Sequence[DimensionStats], models: Sequence[Model]) -> dict[str, float]:
    """Optuna's PED-ANOVA on an in-memory study of the models, each dimension categorical over its levels."""
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances

    trials = []
    for m in models:
        params, dists = {}, {}
        for d in dims:
            if d.name in m.values:
                level = next(lv for lv in d.levels if lv.contains(m.values[d.name]))
                params[d.name] = level.label
                dists[d.name] = CategoricalDistribution([lv.label for lv in d.levels])
        trials.append(optuna.trial.create_trial(params=params, distributions=dists, value=m.accuracy))
    quantile = min(0.5, max(0.1, 5 / len(models)))
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # restored below: no process-wide change left
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # small-sample and experimental warnings: the note says what it is
            study = optuna.create_study(direction="maximize")
            study.add_trials(trials)
            found = get_param_importances(study, evaluator=PedAnovaImportanceEvaluator(target_quantile=quantile),
                                          normalize=False)
    finally:
        optuna.logging.set_verbosity(verbosity)
    return {d.name: float(found.get(d.name, 0.0)) for d in dims}


# -- verdicts -------------------------------------------------------------------------------------


def _name(dim: str, label: str) -> str:
    return _WORDS.get((dim, label), f"{dim} {label}")


def _numbers(e: Effect) -> str:
    ci = "" if e.low is None or e.high is None else f" [{e.low:+.1f}, {e.high:+.1f}]"
    return f"{e.points:+.1f} points{ci}"


def verdict(d: DimensionStats, level: Level) -> str:
    """One sentence on `level` against the reference, with its numbers."""
    e = level.effect
    assert e is not None
    this, ref = _name(d.name, level.label), _name(d.name, d.reference)
    n = f"(n = {e.n} / {e.n_ref})"
    if not e.conclusive:
        return f"{this} vs {ref}: too few to conclude, {_numbers(e)} {n}"
    if e.sign > 0:
        return f"{this} pays here: {_numbers(e)} over {ref} {n}"
    if e.sign < 0:
        return f"{this} costs here: {_numbers(e)} against {ref} {n}"
    return f"{this} vs {ref}: no measurable difference (CI spans 0), {_numbers(e)} {n}"


@dataclass
class BudgetAnalysis:
    """Everything analysed at one budget."""

    sample: Sample
    dims: list[DimensionStats]
    importance: Importance
    verdicts: list[str]

    @property
    def budget(self) -> int:
        return self.sample.budget

    def top_sentence(self) -> str:
        """Which dimensions matter most; importances always rank something, so say when no effect is measurable."""
        top = self.importance.top()
        parts = ", ".join(f"{n} ({self.importance.values[n]:.0%})" for n in top)
        if not top:
            return "no dimension stands out"
        if not any(lv.effect.sign for d in self.dims for lv in d.levels if lv.effect is not None):
            return (f"no dimension has a measurable effect here (every CI spans 0 or rests on too few models); "
                    f"{self.importance.method} ranks, with that caveat: {parts}")
        return f"dimensions that matter most ({self.importance.method}): {parts}"

    def to_dict(self) -> dict[str, Any]:
        return {"budget": self.budget, "models": len(self.sample.models),
                "excluded": dict(sorted(self.sample.excluded.items())),
                "runs": [str(r.path) for r in self.sample.runs],
                "dimensions": [d.to_dict() for d in self.dims], "importance": self.importance.to_dict(),
                "top_dimensions": self.importance.top(), "verdicts": self.verdicts,
                "summary": self.top_sentence()}


def analyze_sample(sample: Sample, *, resamples: int, seed: int) -> BudgetAnalysis:
    """Dimensions, importance and verdicts of one budget's models."""
    names = list(dict.fromkeys(n for m in sample.models for n in m.values))
    dims = [d for n in names if (d := dimension(n, sample.models, resamples=resamples, seed=seed)) is not None]
    verdicts = [verdict(d, lv) for d in dims if d.name in EXTENSIONS for lv in d.levels if lv.effect is not None]
    return BudgetAnalysis(sample, dims, importance(dims, sample.models), verdicts)


@dataclass
class Analysis:
    """The whole analysis: per budget, with the budget table, warnings and verified accuracies."""

    runs: list[Run]
    budgets: list[BudgetAnalysis]
    warnings: list[str]
    resamples: int
    seed: int

    def table(self) -> tuple[list[int], list[tuple[str, list[str]]]]:
        """Rows = extension values against their reference, columns = budgets: the effect, or '-'."""
        rows: dict[str, dict[int, str]] = {}
        for b in self.budgets:
            for d in b.dims:
                if d.name not in EXTENSIONS:
                    continue
                for lv in d.levels:
                    if lv.effect is not None:
                        key = f"{_name(d.name, lv.label)} vs {_name(d.name, d.reference)}"
                        rows.setdefault(key, {})[b.budget] = _cell(lv.effect)
        cols = [b.budget for b in self.budgets]
        return cols, [(k, [v.get(c, "-") for c in cols]) for k, v in rows.items()]

    def verified(self) -> list[dict[str, Any]]:
        """Each verified run's accuracies as `resnas verify` summarised them: on the selection split for every
        network, on the test split for those it chose (None for the others), and its pick."""
        out = []
        for run in self.runs:
            if run.verified:
                test = run.verified.get("test") or {}
                nets = [{**{k: n.get(k) for k in ("label", "kind", "flops", "proxy_accuracy", "select_accuracy_mean",
                                                   "select_accuracy_spread", "seeds")},
                         "test_accuracy_mean": (test.get(n.get("label")) or {}).get("mean")}
                        for n in run.verified.get("networks", [])]
                out.append({"run": str(run.path), "verdict": run.verified.get("verdict"),
                            "pick": run.verified.get("pick"), "networks": nets})
        return out

    def to_dict(self) -> dict[str, Any]:
        cols, rows = self.table()
        return {
            "runs": [{"path": str(r.path), "budget": r.budget, "space": r.space, "space_sha256": r.space_sha,
                      "sampler": r.sampler, "classics": r.settings.get("classics"),
                      "epochs": r.settings.get("epochs")} for r in self.runs],
            "settings": {"bootstrap_resamples": self.resamples, "seed": self.seed, "confidence": CONFIDENCE,
                         "min_trials": MIN_TRIALS, "min_per_value": MIN_PER_VALUE, "max_levels": MAX_LEVELS,
                         "accuracy": "validation accuracy in points (percent)", "error": "100 - accuracy"},
            "trials_used": ("complete trials trained at the run's full epochs that the sampler chose; pruned "
                            "trials (lower-epoch accuracies), queued classics, duplicates, over-budget and failed "
                            "trials are left out of every statistic and counted under 'excluded'"),
            "used": [{"run": m.run, "number": m.number} for b in self.budgets for m in b.sample.models],
            "budgets": [b.to_dict() for b in self.budgets],
            "table": {"columns": cols, "rows": [{"extension": k, "cells": v} for k, v in rows]},
            "warnings": self.warnings,
            "verified": self.verified(),
        }


def _cell(e: Effect) -> str:
    mark = "" if e.conclusive else " (too few)"
    return f"{_numbers(e)} (n={e.n}/{e.n_ref}){mark}"


def _warnings(runs: Sequence[Run], budgets: Sequence[BudgetAnalysis]) -> list[str]:
    """What the reader must know about the sample before trusting the numbers."""
    out = []
    biased = sorted({r.sampler for r in runs if r.sampler != "random"})
    if biased:
        out.append(f"sampler {', '.join(biased)}: its trials are not a random sample of the space; EDFs and "
                   "effects describe what the sampler tried (use `resnas sweep` or --sampler random for an "
                   "unbiased sample)")
    for b in budgets:
        ex = b.sample.excluded
        if ex.get(Exclusion.CLASSIC.value):
            out.append(f"budget {b.budget:,}: {ex[Exclusion.CLASSIC.value]} queued classics are not random "
                       "samples: left out of EDFs, effects and importance (shown in the FLOPs plots)")
        if ex.get(Exclusion.MOVE.value):
            out.append(f"budget {b.budget:,}: {ex[Exclusion.MOVE.value]} local moves and half-sized classics "
                       "(chosen, not random samples) left out of EDFs, effects and importance")
        if ex.get(Exclusion.PRUNED.value):
            out.append(f"budget {b.budget:,}: {ex[Exclusion.PRUNED.value]} pruned trials left out (their "
                       "accuracies are of fewer epochs); a pruner stops weak models, so the sample leans good")
        few = sum(not lv.effect.conclusive for d in b.dims for lv in d.levels if lv.effect is not None)
        if few:
            out.append(f"budget {b.budget:,}: {few} comparisons rest on fewer than {MIN_PER_VALUE} models in a "
                       "group: too few to conclude")
    tests = sum(lv.effect.conclusive for b in budgets for d in b.dims for lv in d.levels if lv.effect is not None)
    if tests >= 10:
        out.append(f"{tests} conclusive comparisons at {CONFIDENCE:.0%}: about {tests / 20:.1f} of them may "
                   "exclude 0 by chance alone")
    return out


def analyze(paths: Sequence[str | Path], *, resamples: int = 2000, seed: int = 0) -> Analysis:
    """Load the runs (sweeps expanded), check they compare, and analyse each budget."""
    runs = [load_run(p) for p in expand(paths)]
    if not runs:
        raise StorageError("no run folders given (an empty sweep?); pass the --out folder of a search")
    check_comparable(runs)
    budgets = [analyze_sample(s, resamples=resamples, seed=seed) for s in collect(runs)]
    return Analysis(runs, budgets, _warnings(runs, budgets), resamples, seed)


def _r(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(float(x), digits)


# -- plots ----------------------------------------------------------------------------------------


def _safe(name: str) -> str:
    """A dimension name as a file-name part: stages[0].depth -> stage0_depth."""
    return re.sub(r"[^A-Za-z0-9_]+", "_", name.replace("stages[", "stage")).strip("_")


def _budget_text(budget: int) -> str:
    from resnas._budget import format_flops

    return format_flops(budget)


def plot_edf(name: str, analyses: Sequence[BudgetAnalysis], path: Path) -> None:
    """edf_<dim>.png: one panel per budget, one step line per value of the dimension."""
    from matplotlib.figure import Figure

    panels = [(b, d) for b in analyses for d in b.dims if d.name == name]
    fig = Figure(figsize=(4.2 * len(panels) + 0.6, 3.6), dpi=100)
    for k, (b, d) in enumerate(panels, 1):
        ax = fig.add_subplot(1, len(panels), k)
        for lv in d.levels:
            steps = edf(100 - a for a in lv.accuracies)
            xs, ys = [steps[0][0]] + [e for e, _ in steps], [0.0] + [f for _, f in steps]
            ref = " (ref)" if lv.label == d.reference else ""
            ax.step(xs, ys, where="post", label=f"{lv.label}{ref} (n={lv.n})")
        ax.set_xlabel("validation error (%)")
        ax.set_ylabel("fraction of models with error <= x")
        ax.set_title(f"{name} at {_budget_text(b.budget)}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)


def plot_flops(analysis: Analysis, key: str, path: Path) -> None:
    """Accuracy vs FLOPs of every used model coloured by `key`, classics marked, budget lines, Pareto front."""
    from matplotlib.figure import Figure

    from resnas._trial import TrialState

    models = [m for b in analysis.budgets for m in b.sample.models]
    classics = [(r["name"], float(r["val_accuracy"]), int(r["flops"])) for run in analysis.runs for r in run.rows
                if r.get("name") and r.get("state") == TrialState.COMPLETE.value and r.get("val_accuracy")]
    scale = 1e9 if max(m.flops for m in models) >= 1e9 else 1e6
    unit = "G" if scale == 1e9 else "M"
    fig = Figure(figsize=(7, 4.5), dpi=100)
    ax = fig.add_subplot()
    for value in sorted({str(m.arch[key]) for m in models}):
        pts = [(m.flops / scale, 100 * m.accuracy) for m in models if str(m.arch[key]) == value]
        ax.scatter(*zip(*pts), label=f"{value} ({len(pts)})", alpha=0.75)
    for name, acc, flops in classics:
        ax.scatter([flops / scale], [100 * acc], marker="*", color="black", s=80)
        ax.annotate(name, (flops / scale, 100 * acc), fontsize=7, xytext=(4, 4), textcoords="offset points")
    front = pareto([(m.flops, 100 * m.accuracy) for m in models] + [(f, 100 * a) for _, a, f in classics],
                   lambda p: p[0], lambda p: p[1])
    ax.plot([f / scale for f, _ in front], [a for _, a in front], "-", color="tab:red", label="Pareto front")
    for b in analysis.budgets:
        ax.axvline(b.budget / scale, color="black", linestyle="--", linewidth=1)
    ax.set_xlabel(f"FLOPs at the deployment input ({unit}); dashed: budget(s); stars: classics (not analysed)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(f"accuracy vs FLOPs by {key}: {len(models)} sampled models", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)


def plot_importance(analysis: Analysis, path: Path) -> None:
    """importance.png: each dimension's importance, one bar per budget."""
    from matplotlib.figure import Figure

    names = list(dict.fromkeys(n for b in analysis.budgets for n in b.importance.values))
    fig = Figure(figsize=(7, 1.2 + 0.28 * len(names) * len(analysis.budgets)), dpi=100)
    ax = fig.add_subplot()
    height = 0.8 / len(analysis.budgets)
    for k, b in enumerate(analysis.budgets):
        ys = [i + k * height for i in range(len(names))]
        ax.barh(ys, [b.importance.values.get(n, 0.0) for n in names], height=height,
                label=f"{_budget_text(b.budget)} ({b.importance.method})")
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(names))], names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("importance (sums to 1 per budget)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    save_figure(fig, path)


# -- writing --------------------------------------------------------------------------------------


def write(analysis: Analysis, out: Path) -> list[Path]:
    """analysis.json, the PNGs and index.html in `out`; a previous analysis's PNGs no longer made are removed."""
    ensure_writable(out, "the analysis folder")
    old = _previous_files(out)
    files: dict[str, Path] = {}
    for name in dict.fromkeys(d.name for b in analysis.budgets for d in b.dims):
        files[f"edf_{_safe(name)}.png"] = out / f"edf_{_safe(name)}.png"
        plot_edf(name, analysis.budgets, files[f"edf_{_safe(name)}.png"])
    for key in ("shortcut", "order"):
        files[f"accuracy_vs_flops_by_{key}.png"] = out / f"accuracy_vs_flops_by_{key}.png"
        plot_flops(analysis, key, files[f"accuracy_vs_flops_by_{key}.png"])
    files["importance.png"] = out / "importance.png"
    plot_importance(analysis, files["importance.png"])
    data = {**analysis.to_dict(), "files": sorted(files) + ["index.html"]}
    atomic_write(out / "analysis.json", json.dumps(data, indent=2).encode())
    atomic_write(out / "index.html", render_html(analysis, out).encode())
    for stale in old - set(files):
        (out / stale).unlink(missing_ok=True)
    return [out / "analysis.json", out / "index.html", *files.values()]


def _previous_files(out: Path) -> set[str]:
    """The PNGs an earlier analysis in `out` wrote (its analysis.json lists them)."""
    try:
        listed = json.loads((out / "analysis.json").read_text()).get("files", [])
    except (OSError, json.JSONDecodeError, AttributeError):
        return set()
    return {f for f in listed if isinstance(f, str) and re.fullmatch(r"[\w.]+\.png", f)}


_CSS = """body{font-family:sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}
th{background:#eef}td.num{text-align:right}.warn{background:#fff4e0;padding:0.5em 1em;border-left:4px solid #e90}
img{max-width:100%;border:1px solid #ddd;margin:0.3em 0}h2{border-bottom:2px solid #99c;margin-top:1.5em}"""


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def _html_table(head: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    e = html.escape
    cells = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return "<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + f"</tr>{cells}</table>"


def render_html(analysis: Analysis, out: Path) -> str:
    """index.html: self-contained (inline CSS, PNGs as data URIs, no scripts, no links out)."""
    e = html.escape
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>resnas analyze</title>",
             f"<style>{_CSS}</style></head><body><h1>resnas analyze</h1>",
             f"<p>{e(', '.join(str(r.path) for r in analysis.runs))}: space {e(analysis.runs[0].space)}</p>",
             f"<p>{e(analysis.to_dict()['trials_used'])}.</p>"]
    parts += [f"<p class='warn'>warning: {e(w)}</p>" for w in analysis.warnings]
    for b in analysis.budgets:
        excluded = ", ".join(f"{n} {k}" for k, n in sorted(b.sample.excluded.items())) or "none"
        parts += [f"<h2>budget {e(_budget_text(b.budget))}: {len(b.sample.models)} models</h2>",
                  f"<p>left out: {e(excluded)}</p><p><b>{e(b.top_sentence())}</b></p><ul>",
                  *(f"<li>{e(v)}</li>" for v in b.verdicts), "</ul>"]
    cols, rows = analysis.table()
    if len(cols) > 1:
        parts += ["<h2>which extension pays at which budget</h2>",
                  _html_table(["extension", *(_budget_text(c) for c in cols)], [[k, *v] for k, v in rows])]
    parts += ["<h2>importance</h2>", _img(out / "importance.png")]
    for b in analysis.budgets:
        parts.append(_html_table(["dimension", f"importance at {_budget_text(b.budget)}", "variance share"],
                                 [[n, f"{v:.3f}", f"{b.importance.variance_share.get(n, 0):.3f}"]
                                  for n, v in sorted(b.importance.values.items(), key=lambda kv: -kv[1])]))
    parts += ["<h2>accuracy vs FLOPs</h2>", _img(out / "accuracy_vs_flops_by_shortcut.png"),
              _img(out / "accuracy_vs_flops_by_order.png"), "<h2>dimensions</h2>"]
    for name in dict.fromkeys(d.name for b in analysis.budgets for d in b.dims):
        parts.append(f"<h3>{e(name)}</h3>")
        for b in analysis.budgets:
            for d in (d for d in b.dims if d.name == name):
                parts.append(_html_table(["budget", "value", "n", "mean acc", "effect vs " + d.reference, "95% CI"],
                                         [_level_row(b, lv) for lv in d.levels]))
        parts.append(_img(out / f"edf_{_safe(name)}.png"))
    for v in analysis.verified():
        parts += [f"<h2>verified: {e(v['run'])}</h2><p>pick: {e(str(v['pick']))}. {e(str(v['verdict']))}</p>",
                  _html_table(["network", "kind", "selection acc", "spread", "seeds", "test acc (chosen only)"],
                              [[n["label"], n["kind"], n["select_accuracy_mean"], n["select_accuracy_spread"],
                                n["seeds"], "-" if n["test_accuracy_mean"] is None else n["test_accuracy_mean"]]
                               for n in v["networks"]])]
    return "".join(parts) + "</body></html>\n"


def _level_row(b: BudgetAnalysis, lv: Level) -> list[str]:
    eff = lv.effect
    ci = "-" if eff is None or eff.low is None or eff.high is None else f"[{eff.low:+.2f}, {eff.high:+.2f}]"
    return [_budget_text(b.budget), lv.label, str(lv.n), f"{lv.mean:.2f}",
            "reference" if eff is None else f"{eff.points:+.2f}" + ("" if eff.conclusive else " (too few)"), ci]


# -- refine ---------------------------------------------------------------------------------------


def find_space(run: Run) -> Path:
    """The run's space file (absolute, or relative to here or to the source tree), unchanged since the search."""
    given = Path(run.space)
    root = Path(__file__).resolve().parent.parent
    found = next((p for p in (given, Path.cwd() / given, root / given) if p.is_file()), None)
    if found is None:
        raise StorageError(f"cannot find the space file {run.space} that {run.path} searched; run analyze from the "
                           "folder the search ran in")
    sha = hashlib.sha256(found.read_text().encode()).hexdigest()[:16]
    if run.space_sha is not None and sha != run.space_sha:
        raise StorageError(f"{found} has changed since {run.path} searched it (hash {sha}, the study recorded "
                           f"{run.space_sha}); restore it to refine")
    return found


def refine(analysis: Analysis, out: Path) -> Path:
    """refined_space.yaml in `out`: the run's space narrowed by the evidence, each change commented."""
    from resnas import zoo
    from resnas._space import SearchSpace
    from resnas._space_yaml import load_yaml

    source = find_space(analysis.runs[0])
    raw = load_yaml(source)
    original = SearchSpace.from_dict(raw, source=str(source))
    new, notes = copy.deepcopy(raw), {}
    for name in _dimension_names(analysis):
        note = _refine_dimension(name, analysis, new)
        if note:
            notes[name] = note
    notes.update(_drop_inapplicable(new))
    refined = SearchSpace.from_dict(new, source="the refined space")
    lost = [n for n in zoo.names() if original.contains(zoo.get(n)) and not refined.contains(zoo.get(n))]
    models = sum(len(b.sample.models) for b in analysis.budgets)
    head = [f"Refined by `resnas analyze --refine` from {source} on {models} complete sampled trials of",
            f"{', '.join(str(r.path) for r in analysis.runs)}. Only values of the original; each change says why.",
            f"Dropped: values {_REJECT}.",
            f"Shrunk: sizes to the span of the top-quartile models (>= {MIN_TOP}), where models inside it beat",
            f"those outside (>= {MIN_PER_VALUE}; bootstrap CI above 0) at every budget."]
    head.append(f"Zoo classics of the original no longer contained: {', '.join(lost)}." if lost else
                "Every zoo classic the original contained is still contained.")
    path = out / "refined_space.yaml"
    atomic_write(path, render_yaml(new, notes, head).encode())
    return path


_REJECT = f"whose effect CI lies below 0 at every budget testing them (n >= {MIN_PER_VALUE} per group)"


def _dimension_names(analysis: Analysis) -> list[str]:
    return list(dict.fromkeys(d.name for b in analysis.budgets for d in b.dims))


def _slot(raw: dict[str, Any], name: str) -> tuple[dict[str, Any], str]:
    """The mapping holding dimension `name` in the raw YAML data and its key there."""
    match = re.fullmatch(r"stages\[(\d+)\]\.(\w+)", name)
    if match:
        return raw["stages"][int(match[1])], match[2]
    return raw, name


def _refine_dimension(name: str, analysis: Analysis, raw: dict[str, Any]) -> str | None:
    """Narrow dimension `name` in `raw` in place; the comment saying why, or None when unchanged."""
    holder, key = _slot(raw, name)
    given = holder.get(key)
    if given is None or not isinstance(given, (list, dict)):
        return None
    if _SIZE.fullmatch(name):
        return _shrink(name, analysis, holder, key)
    if not isinstance(given, list):
        return None
    dims = [(b, d) for b in analysis.budgets for d in b.dims if d.name == name and not d.binned]
    dropped, why = [], []
    for value in given:
        effects = [(b, d, lv) for b, d in dims for lv in d.levels
                   if lv.effect is not None and lv.effect.conclusive and lv.contains(_plain(value))]
        if effects and all(lv.effect.sign < 0 for _, _, lv in effects if lv.effect):
            dropped.append(value)
            why += [f"dropped {_label(_plain(value))}: {_numbers(lv.effect)} vs {d.reference}, n={lv.n}/"
                    f"{lv.effect.n_ref} at {_budget_text(b.budget)}" for b, d, lv in effects if lv.effect]
    kept = [v for v in given if v not in dropped]
    if not dropped or not kept:
        return None
    holder[key] = kept
    return "; ".join(why)


def _plain(value: Any) -> Any:
    """A raw YAML value as the analysis labels it: enum strings as they are, numbers as numbers."""
    return float(value) if isinstance(value, float) else value


def _shrink(name: str, analysis: Analysis, holder: dict[str, Any], key: str) -> str | None:
    """Shrink a size to the span of the top-quartile models' values (the union over budgets), where at every
    budget the models inside the span beat those outside it (CI above 0, >= MIN_TOP inside, MIN_PER_VALUE out)."""
    spans = []
    for b in analysis.budgets:
        accs = [m.accuracy for m in b.sample.models]
        cut = float(np.quantile(accs, 0.75))
        top = [m.values[name] for m in b.sample.models if m.accuracy >= cut and name in m.values]
        if len(top) < MIN_TOP:
            return None
        spans.append((min(top), max(top)))
    low, high = min(s[0] for s in spans), max(s[1] for s in spans)
    evidence = []
    for b in analysis.budgets:
        have = [m for m in b.sample.models if name in m.values]
        inside = [100 * m.accuracy for m in have if low <= m.values[name] <= high]
        outside = [100 * m.accuracy for m in have if not low <= m.values[name] <= high]
        if len(inside) < MIN_TOP or len(outside) < MIN_PER_VALUE:
            return None
        points, ci_low, ci_high = bootstrap_difference(inside, outside, resamples=analysis.resamples,
                                                       seed=analysis.seed)
        if ci_low is None or ci_low <= 0:
            return None
        evidence.append(f"inside {_numbers(Effect(points, ci_low, ci_high, 0, 0))} over outside, "
                        f"n={len(inside)}/{len(outside)} at {_budget_text(b.budget)}")
    given = holder[key]
    if isinstance(given, list):
        kept = [v for v in given if low <= v <= high]
        if kept == given or not kept:
            return None
        holder[key] = kept
    else:
        start, stop = max(given["min"], low), min(given["max"], high)
        if (start, stop) == (given["min"], given["max"]):
            return None
        holder[key] = {**given, "min": start, "max": stop}
    return f"shrunk to {_label(low)}..{_label(high)}, the span of the top-quartile models: {'; '.join(evidence)}"


# Keys that apply only where some value of another dimension is allowed (resnas._space's conditions).
_NEEDS: tuple[tuple[str, Callable[[dict[str, Any]], bool], str], ...] = (
    ("growth_rate", lambda r: "dense" in _values(r, "shortcut", "identity"), "dense shortcuts are gone"),
    ("bottleneck_size", lambda r: "dense" in _values(r, "shortcut", "identity"), "dense shortcuts are gone"),
    ("compression", lambda r: "dense" in _values(r, "shortcut", "identity"), "dense shortcuts are gone"),
    ("dense_cardinality", lambda r: "dense" in _values(r, "shortcut", "identity")
     and "bottleneck" in _values(r, "block", "bottleneck"), "no dense bottleneck net is left"),
    ("width_multiplier", lambda r: bool(set(_values(r, "shortcut", "identity")) - {"dense"}), "only dense nets left"),
    ("cardinality", lambda r: bool(set(_values(r, "shortcut", "identity")) - {"dense"})
     and "bottleneck" in _values(r, "block", "bottleneck"), "no residual bottleneck net is left"),
    ("base_width", lambda r: "cardinality" in r and any(v > 1 for v in _values(r, "cardinality", 1)),
     "no cardinality above 1 is left"),
    ("survival_prob", lambda r: any(v != "none" for v in _values(r, "survival", "none")),
     "stochastic depth is gone"),
)


def _values(raw: Mapping[str, Any], key: str, default: Any) -> list[Any]:
    given = raw.get(key, default)
    return list(given) if isinstance(given, list) else [given]


def _drop_inapplicable(raw: dict[str, Any]) -> dict[str, str]:
    """Remove keys that no longer apply after values were dropped (a space file may not hold them)."""
    notes = {}
    for key, applies, why in _NEEDS:
        if key in raw and not applies(raw):
            del raw[key]
            notes[f"{key} (removed)"] = f"{key} removed: {why}"
    if not set(_values(raw, "shortcut", "identity")) - {"dense"}:
        for stage in raw["stages"]:
            stage.pop("width", None)
    return notes


def _yaml_scalar(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        raise ValueError(f"no such value in a space file: {v!r}")
    return repr(v) if isinstance(v, float) else str(v)


def _yaml_value(v: Any) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(_yaml_scalar(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_yaml_scalar(x)}" for k, x in v.items()) + "}"
    return _yaml_scalar(v)


def render_yaml(raw: Mapping[str, Any], notes: Mapping[str, str], head: Sequence[str]) -> str:
    """The space as YAML in search_spaces/'s format, each note as a comment above its key."""
    lines = [f"# {h}" for h in head] + [""]
    lines += [f"# {n}" for k, n in notes.items() if k.endswith("(removed)")]
    for key, value in raw.items():
        if key in notes:
            lines.append(f"# {notes[key]}")
        if key == "input":
            lines += ["input:", *(f"  {k}: {_yaml_scalar(v)}" for k, v in value.items())]
        elif key == "stages":
            lines.append("stages:")
            for i, stage in enumerate(value):
                for j, (k, v) in enumerate(stage.items()):
                    note = notes.get(f"stages[{i}].{k}")
                    if note:
                        lines.append(f"  # {note}")
                    lines.append(("  - " if j == 0 else "    ") + f"{k}: {_yaml_value(v)}")
        else:
            lines.append(f"{key}: {_yaml_value(value)}")
    return "\n".join(lines) + "\n"
