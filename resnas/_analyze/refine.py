"""`analyze --refine`: the run's space file narrowed by the evidence, each change commented."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from resnas._analyze.runs import Run
from resnas._analyze.stats import MIN_PER_VALUE, Effect, bootstrap_difference, effect_text, value_text
from resnas._analyze.verdicts import Analysis
from resnas._budget import format_flops
from resnas._errors import StorageError
from resnas._runfolder import atomic_write
from resnas._space import SearchSpace
from resnas._space_table import inapplicable, is_size, locate
from resnas._space_yaml import load_yaml

# Top-quartile models needed before `refine` shrinks a size range to theirs.
MIN_TOP = 3


def find_space(run: Run) -> Path:
    """The run's space file (absolute, or relative to here or to the source tree), unchanged since the search."""
    given = Path(run.space)
    root = Path(__file__).resolve().parents[2]
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
    from resnas import zoo  # imports torch: only where a refinement is asked for

    source = find_space(analysis.runs[0])
    raw = load_yaml(source)
    original = SearchSpace.from_dict(raw, source=str(source))
    new, notes = copy.deepcopy(raw), {}
    for name in analysis.dimensions():
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


def _refine_dimension(name: str, analysis: Analysis, raw: dict[str, Any]) -> str | None:
    """Narrow dimension `name` in `raw` in place; the comment saying why, or None when unchanged."""
    holder, key = locate(raw, name)
    given = holder.get(key)
    if given is None or not isinstance(given, (list, dict)):
        return None
    if is_size(name):
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
            why += [f"dropped {value_text(_plain(value))}: {effect_text(lv.effect)} vs {d.reference}, n={lv.n}/"
                    f"{lv.effect.n_ref} at {format_flops(b.budget)}" for b, d, lv in effects if lv.effect]
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
        evidence.append(f"inside {effect_text(Effect(points, ci_low, ci_high, 0, 0))} over outside, "
                        f"n={len(inside)}/{len(outside)} at {format_flops(b.budget)}")
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
    return f"shrunk to {value_text(low)}..{value_text(high)}, the span of the top-quartile models: {'; '.join(evidence)}"


# Why each key went when values it depends on were dropped; refined_space.yaml lists them in this order.
_GONE = {"growth_rate": "dense shortcuts are gone", "bottleneck_size": "dense shortcuts are gone",
         "compression": "dense shortcuts are gone", "dense_cardinality": "no dense bottleneck net is left",
         "width_multiplier": "only dense nets left", "cardinality": "no residual bottleneck net is left",
         "base_width": "no cardinality above 1 is left", "survival_prob": "stochastic depth is gone"}


def _drop_inapplicable(raw: dict[str, Any]) -> dict[str, str]:
    """Remove keys that no longer apply after values were dropped (a space file may not hold them); a note
    for each top-level one (a stage's width goes with the residual nets, silently)."""
    gone = inapplicable(raw)
    top = [n for n in gone if locate(raw, n)[0] is raw]
    for name in gone:
        holder, key = locate(raw, name)
        del holder[key]
    ordered = [n for n in _GONE if n in top] + [n for n in top if n not in _GONE]
    return {f"{n} (removed)": f"{n} removed: {_GONE.get(n, 'it no longer applies')}" for n in ordered}


def _yaml_scalar(v: Any) -> str:
    """One value as search_spaces/ writes it; YAML's booleans and null are no space values."""
    if isinstance(v, bool) or v is None:
        raise ValueError(f"no such value in a space file: {v!r}")
    return repr(v) if isinstance(v, float) else str(v)


def _yaml_value(v: Any) -> str:
    """A value, a [list] or a {min, max} range in flow style."""
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
