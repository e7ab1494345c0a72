"""What a search knows of one trial: its resnas state and record (a trials.csv row), and the rankings over them."""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, TypeVar

# Proxy accuracies this close to the best (0-1) are not told apart: two single proxy trainings of one network
# differ by about a point, and the validation split's binomial error is about 1.3 points at 1000 images.
NEAR_BEST = 0.02


class TrialState(str, enum.Enum):
    """resnas's own account of a trial (Optuna's states cannot tell a budget rejection from pruning)."""

    COMPLETE = "complete"
    PRUNED = "pruned"  # stopped early by the pruner (or ASHA): trained, counts towards `trials`
    OVER_BUDGET = "over_budget"  # rejected by the FLOP screen, never trained
    FAILED = "failed"  # non-finite loss, out of memory, an error: `reason` says which
    INTERRUPTED = "interrupted"  # Ctrl-C or a killed process; retried on the next run
    DUPLICATE = "duplicate"  # the same Arch as a trial trained before: its result reused, not retrained
    RUNNING = "running"

    @property
    def trained(self) -> bool:
        """Counts towards the trials a search was asked for."""
        return self in (TrialState.COMPLETE, TrialState.PRUNED)

    def __str__(self) -> str:
        return self.value


class Origin(str, enum.Enum):
    """Who proposed a trial; trials.csv's `origin` starts with it ("move of #3: shortcut identity -> gated")."""

    CLASSIC = "classic"  # a zoo network queued first
    FIRST = "first"  # the first of a shortcut kind no classic covers
    SCALED = "scaled"  # the cheapest classic at half its FLOPs ("scaled resnet18@d0.5")
    MOVE = "move"  # a one-step move of the best trial so far
    RETRY = "retry"  # an interrupted trial's architecture, queued again
    SAMPLER = "sampler"

    @classmethod
    def of(cls, text: str) -> Origin:
        """The origin a trials.csv cell starts with (files from before the column: the sampler)."""
        head = text.split(" ", 1)[0]
        return cls(head) if head in cls._value2member_map_ else cls.SAMPLER


@dataclass(frozen=True)
class TrialRecord:
    """One trial as trials.csv shows it; `TrialRecord.COLUMNS` are the file's columns, in order."""

    number: int
    state: TrialState
    name: str  # the zoo network the arch is (resnet18, ...), or the scaled classic a baseline is (resnet18@w0.5)
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
    # Who proposed it: "classic", "first gated", "move of #3: shortcut identity -> gated", "retry of #5", "sampler".
    origin: str
    arch: dict[str, Any] | None
    # The network actually trained (narrower than `arch` under a proxy width below 1).
    trained_arch: dict[str, Any] | None = None

    def row(self) -> dict[str, Any]:
        """The trials.csv row: JSON archs, rounded floats, empty cells for None."""
        out: dict[str, Any] = {k: getattr(self, k) for k in COLUMNS}
        out["state"] = self.state.value
        for k in ("arch", "trained_arch"):
            out[k] = json.dumps(out[k], sort_keys=True) if out[k] else ""
        for k, digits in (("val_accuracy", 4), ("budget_fraction", 4), ("duration_s", 4), ("images_per_s", 1)):
            if out[k] is not None:
                out[k] = round(out[k], digits)
        return {k: "" if v is None else v for k, v in out.items()}


    @classmethod
    def from_row(cls, row: Mapping[str, str]) -> TrialRecord:
        """A trials.csv row read back (columns a file predates are empty); ValueError for a damaged cell."""
        try:
            values: dict[str, Any] = {k: _CELL.get(k, str)(row.get(k) or "") for k in COLUMNS}
            values["state"] = TrialState(row.get("state"))
            values["number"] = int(row["number"])
        except (KeyError, TypeError, json.JSONDecodeError) as e:
            raise ValueError(f"{type(e).__name__}: {e}") from None
        return cls(**values)


def _optional(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    return lambda text: kind(text) if text else None


def _json_dict(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise TypeError(f"{text[:40]!r} is not a JSON object")
    return value


# How each trials.csv cell is read back (the rest are text).
_CELL: dict[str, Callable[[str], Any]] = {
    **dict.fromkeys(("flops", "params", "macs", "train_flops"), _optional(int)),
    **dict.fromkeys(("val_accuracy", "budget_fraction", "duration_s", "images_per_s"), _optional(float)),
    "epochs": lambda text: int(text) if text else 0,
    "arch": _optional(_json_dict), "trained_arch": _optional(_json_dict),
}


COLUMNS = tuple(f.name for f in fields(TrialRecord))


T = TypeVar("T")


def pareto(items: Iterable[T], cost: Callable[[T], float], value: Callable[[T], float]) -> list[T]:
    """Items not dominated in (lower cost, higher value), cheapest first."""
    front: list[T] = []
    for item in sorted(items, key=lambda i: (cost(i), -value(i))):
        if not front or value(item) > value(front[-1]):
            front.append(item)
    return front


def pareto_front(records: list[TrialRecord]) -> list[TrialRecord]:
    """Completed trials not dominated in (higher accuracy, fewer deployment FLOPs)."""
    done = [r for r in records if r.state is TrialState.COMPLETE and r.flops is not None]
    return pareto(done, lambda r: r.flops or 0, lambda r: r.val_accuracy or 0.0)


def ranked(records: list[TrialRecord]) -> list[TrialRecord]:
    """Completed trials, best validation accuracy first (fewer FLOPs, then the lower number, break ties)."""
    done = [r for r in records if r.state is TrialState.COMPLETE and r.val_accuracy is not None]
    return sorted(done, key=lambda r: (-(r.val_accuracy or 0.0), r.flops or 0, r.number))
