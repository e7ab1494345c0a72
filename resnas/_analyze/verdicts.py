"""What the statistics say: a verdict per extension value, the budget table, the warnings, and `analyze`, the
whole analysis of some runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resnas._analyze.runs import (
    MIN_TRIALS,
    Exclusion,
    Run,
    Sample,
    check_comparable,
    collect,
    expand,
    load_run,
)
from resnas._analyze.stats import (
    CONFIDENCE,
    MAX_LEVELS,
    MIN_PER_VALUE,
    DimensionStats,
    Effect,
    Importance,
    Level,
    dimension,
    effect_text,
    importance,
)
from resnas._errors import StorageError

# The dimensions verdicts speak of (the rest, depths and widths, are sizes: EDFs, effects and importance only).
EXTENSIONS = ("shortcut", "order", "block", "cardinality", "base_width", "width_multiplier", "growth_rate",
              "bottleneck_size", "compression", "dense_cardinality", "dropout", "survival", "survival_prob")
_WORDS = {("shortcut", "identity"): "identity shortcut", ("shortcut", "gated"): "gated (Highway) shortcut",
          ("shortcut", "dense"): "dense (DenseNet) connectivity", ("order", "pre"): "pre-activation",
          ("order", "post"): "post-activation", ("survival", "none"): "no stochastic depth",
          ("survival", "uniform"): "stochastic depth (uniform)", ("survival", "linear"): "stochastic depth (linear)"}


def _name(dim: str, label: str) -> str:
    """A dimension's value in words: "pre-activation", else "dimension value"."""
    return _WORDS.get((dim, label), f"{dim} {label}")


def verdict(d: DimensionStats, level: Level) -> str:
    """One sentence on `level` against the reference, with its numbers."""
    e = level.effect
    assert e is not None
    this, ref = _name(d.name, level.label), _name(d.name, d.reference)
    n = f"(n = {e.n} / {e.n_ref})"
    if not e.conclusive:
        return f"{this} vs {ref}: too few to conclude, {effect_text(e)} {n}"
    if e.sign > 0:
        return f"{this} pays here: {effect_text(e)} over {ref} {n}"
    if e.sign < 0:
        return f"{this} costs here: {effect_text(e)} against {ref} {n}"
    return f"{this} vs {ref}: no measurable difference (CI spans 0), {effect_text(e)} {n}"


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

    def dimensions(self) -> list[str]:
        """Each varied dimension's name once, in the order the budgets list them."""
        return list(dict.fromkeys(d.name for b in self.budgets for d in b.dims))

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
    """A budget-table cell: the effect, its group sizes, and "(too few)" where inconclusive."""
    mark = "" if e.conclusive else " (too few)"
    return f"{effect_text(e)} (n={e.n}/{e.n_ref}){mark}"


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


