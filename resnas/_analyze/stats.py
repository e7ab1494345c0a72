"""Statistics of one budget's models: error EDFs, bootstrap effects against a reference value, the levels of
each dimension (quartile bins for near-continuous ones), and the dimensions' importance."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from resnas._analyze.runs import Model

# A value needs this many models (and so does its reference) before its CI is read as a conclusion.
MIN_PER_VALUE = 5
# Numeric dimensions with more distinct values than this are split at their sample quartiles.
MAX_LEVELS = 5
CONFIDENCE = 0.95
# "Without the extension": the value every other value of the dimension is compared with, where sampled.
_REFERENCE: dict[str, Any] = {"shortcut": "identity", "order": "post", "survival": "none", "dropout": 0.0,
                              "cardinality": 1, "dense_cardinality": 1, "width_multiplier": 1.0}


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


def effect_text(e: Effect) -> str:
    """The effect in points, with its CI where there is one: "+1.2 points [+0.3, +2.1]"."""
    ci = "" if e.low is None or e.high is None else f" [{e.low:+.1f}, {e.high:+.1f}]"
    return f"{e.points:+.1f} points{ci}"


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
        return _within(value, self.low, self.high)

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


def value_text(value: Any) -> str:
    """A dimension's value as labels show it: floats without trailing zeros."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _levels(values: Sequence[Any]) -> tuple[list[tuple[str, Any, Any]], bool]:
    """(label, low, high) per level of a dimension's observed values, and whether they were binned."""
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if not numeric:
        return [(str(v), v, v) for v in sorted(set(values), key=str)], False
    bins = quartile_bins(values)
    binned = len(bins) < len(set(values))
    short = (lambda v: f"{v:.3g}") if binned else value_text  # bins of a continuous range: 3 digits say enough
    return [(short(lo) if lo == hi else f"{short(lo)}..{short(hi)}", lo, hi) for lo, hi in bins], binned


def dimension(name: str, models: Sequence[Model], *, resamples: int, seed: int) -> DimensionStats | None:
    """The stats of dimension `name` over the models it applies to; None when it took one value there."""
    applied = [m for m in models if name in m.values]
    if len({value_text(m.values[name]) for m in applied}) < 2:
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
                return label, f"{value_text(classic)}: the value without the extension"
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


def _r(x: float | None, digits: int = 3) -> float | None:
    """`x` rounded for analysis.json; None stays None."""
    return None if x is None else round(float(x), digits)

