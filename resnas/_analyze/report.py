"""The analysis on disk: analysis.json, the EDF, FLOPs and importance plots, a self-contained index.html."""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from resnas._analyze.runs import classics
from resnas._analyze.stats import Level, edf
from resnas._analyze.verdicts import Analysis, BudgetAnalysis
from resnas._budget import format_flops
from resnas._runfolder import atomic_write, ensure_writable, save_figure
from resnas._trial import pareto

# -- plots ----------------------------------------------------------------------------------------


def _safe(name: str) -> str:
    """A dimension name as a file-name part: stages[0].depth -> stage0_depth."""
    return re.sub(r"[^A-Za-z0-9_]+", "_", name.replace("stages[", "stage")).strip("_")


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
        ax.set_title(f"{name} at {format_flops(b.budget)}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)


def plot_flops(analysis: Analysis, key: str, path: Path) -> None:
    """Accuracy vs FLOPs of every used model coloured by `key`, classics marked, budget lines, Pareto front."""
    from matplotlib.figure import Figure

    models = [m for b in analysis.budgets for m in b.sample.models]
    stars = classics(analysis.runs)
    scale = 1e9 if max(m.flops for m in models) >= 1e9 else 1e6
    unit = "G" if scale == 1e9 else "M"
    fig = Figure(figsize=(7, 4.5), dpi=100)
    ax = fig.add_subplot()
    for value in sorted({str(m.arch[key]) for m in models}):
        pts = [(m.flops / scale, 100 * m.accuracy) for m in models if str(m.arch[key]) == value]
        ax.scatter(*zip(*pts), label=f"{value} ({len(pts)})", alpha=0.75)
    for name, acc, flops in stars:
        ax.scatter([flops / scale], [100 * acc], marker="*", color="black", s=80)
        ax.annotate(name, (flops / scale, 100 * acc), fontsize=7, xytext=(4, 4), textcoords="offset points")
    front = pareto([(m.flops, 100 * m.accuracy) for m in models] + [(f, 100 * a) for _, a, f in stars],
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
                label=f"{format_flops(b.budget)} ({b.importance.method})")
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
    for name in analysis.dimensions():
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
    """The PNG at `path` as an inline <img>."""
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def _html_table(head: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """An HTML table: a header row, then one row per sequence, every cell escaped."""
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
        parts += [f"<h2>budget {e(format_flops(b.budget))}: {len(b.sample.models)} models</h2>",
                  f"<p>left out: {e(excluded)}</p><p><b>{e(b.top_sentence())}</b></p><ul>",
                  *(f"<li>{e(v)}</li>" for v in b.verdicts), "</ul>"]
    cols, rows = analysis.table()
    if len(cols) > 1:
        parts += ["<h2>which extension pays at which budget</h2>",
                  _html_table(["extension", *(format_flops(c) for c in cols)], [[k, *v] for k, v in rows])]
    parts += ["<h2>importance</h2>", _img(out / "importance.png")]
    for b in analysis.budgets:
        parts.append(_html_table(["dimension", f"importance at {format_flops(b.budget)}", "variance share"],
                                 [[n, f"{v:.3f}", f"{b.importance.variance_share.get(n, 0):.3f}"]
                                  for n, v in sorted(b.importance.values.items(), key=lambda kv: -kv[1])]))
    parts += ["<h2>accuracy vs FLOPs</h2>", _img(out / "accuracy_vs_flops_by_shortcut.png"),
              _img(out / "accuracy_vs_flops_by_order.png"), "<h2>dimensions</h2>"]
    for name in analysis.dimensions():
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
    """One value's row of a dimension table: budget, value, n, mean accuracy, effect, CI."""
    eff = lv.effect
    ci = "-" if eff is None or eff.low is None or eff.high is None else f"[{eff.low:+.2f}, {eff.high:+.2f}]"
    return [format_flops(b.budget), lv.label, str(lv.n), f"{lv.mean:.2f}",
            "reference" if eff is None else f"{eff.points:+.2f}" + ("" if eff.conclusive else " (too few)"), ci]

