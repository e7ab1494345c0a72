"""The search's and the verification's figures (bare matplotlib Figures: no backend chosen, no pyplot state);
the run folder saves them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from resnas._trial import TrialRecord, TrialState, pareto_front


def trials_figure(records: list[TrialRecord], budget: int) -> Any:
    """accuracy_vs_flops.png: every trained trial against its deployment FLOPs, budget line, Pareto front."""
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
        ax.plot([(r.flops or 0) / 1e9 for r in front], [r.val_accuracy for r in front], "-", color="tab:red",
                marker="*", markersize=11, label="Pareto front")
    rejected = sum(r.state is TrialState.OVER_BUDGET for r in records)
    ax.axvline(budget / 1e9, color="black", linestyle="--", label=f"budget {budget / 1e9:g} GFLOPs")
    ax.set_xlabel("FLOPs at the deployment input (G, fvcore's count)")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"{len(records)} trials, {rejected} rejected over budget (not trained, not shown)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


@dataclass(frozen=True)
class VerifiedPoint:
    """One verified network as verify.png draws it."""

    label: str
    kind: str  # NetworkKind's value
    flops: int
    accuracies: Sequence[float]  # one per seed
    mean: float
    spread: float
    pick: bool


def verify_figure(points: Sequence[VerifiedPoint], verdict: str) -> Any:
    """verify.png: each network's selection-split accuracy per seed and its mean, classics in orange, the pick
    in green, in the order given from the top."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 0.9 + 0.45 * len(points)), dpi=110)
    ax = fig.add_subplot()
    for y, p in enumerate(reversed(points)):
        color = "tab:green" if p.pick else "tab:orange" if p.kind == "classic" else "tab:blue"
        ax.scatter(list(p.accuracies), [y] * len(p.accuracies), color=color, alpha=0.6, s=18)
        ax.errorbar([p.mean], [y], xerr=[[p.spread], [p.spread]], fmt="D", color=color, capsize=3)
    labels = [f"{p.label} ({'pick, ' if p.pick else ''}{p.kind}, {p.flops / 1e9:.2f} GFLOPs)"
              for p in reversed(points)]
    ax.set_yticks(range(len(points)), labels, fontsize=8)
    ax.set_xlabel("selection-split accuracy (dots: seeds; diamond: mean +/- spread)")
    ax.set_title(verdict, fontsize=7, wrap=True)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig
