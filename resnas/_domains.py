"""The values a search-space dimension may take (`Choices`, `IntRange`, `FloatRange`), how each is drawn from
an Optuna trial or a `random.Random`, and how a dimension's values move a network's FLOPs (`FlopsTrend`)."""

from __future__ import annotations

import abc
import enum
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class Suggester(Protocol):
    """The part of `optuna.Trial` a space uses; `random.Random` gets it through `_RandomSuggester`."""

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1) -> int: ...

    def suggest_float(self, name: str, low: float, high: float) -> float: ...

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


def plain_text(value: Any) -> str:
    """An enum member's value, or any other value, as text."""
    return str(value.value) if isinstance(value, enum.Enum) else str(value)


def plain_value(v: Any) -> Any:
    """An option as Optuna stores it (an enum's value)."""
    return v.value if isinstance(v, enum.Enum) else v


class _RandomSuggester:
    """`Suggester` over `random.Random`, recording its picks: uniform over each dimension as Optuna's
    RandomSampler, or biased to the cheap side by `lean` < 1 (see `SearchSpace.sample_params`)."""

    def __init__(self, rng: random.Random, trends: Mapping[str, FlopsTrend], fixed: Mapping[str, Any],
                 lean: float) -> None:
        self._rng, self._trends, self._fixed, self._lean = rng, trends, fixed, lean
        self.params: dict[str, Any] = {}

    def _pick(self, name: str, options: Sequence[Any]) -> Any:
        """One of `options`, uniform over all or, leaning, over the cheapest share."""
        trend = self._trends[name]
        if trend in (FlopsTrend.INCREASING, FlopsTrend.DECREASING) and self._lean < 1:
            descending = trend is FlopsTrend.DECREASING
            # A range is sorted already: slicing it stays lazy, where sorted() would materialise it.
            ordered = (options[::-1] if descending else options) if isinstance(options, range) else sorted(
                options, reverse=descending)
            options = ordered[:max(1, math.ceil(self._lean * len(ordered)))]
        # choice() indexes a sequence (a range without listing it), drawing as it did from a list.
        return self._rng.choice(options)

    def _record(self, name: str, draw: Callable[[], Any]) -> Any:
        """The fixed value of parameter `name`, else `draw()`; recorded in `params`."""
        self.params[name] = self._fixed[name] if name in self._fixed else draw()
        return self.params[name]

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1) -> int:
        return int(self._record(name, lambda: self._pick(name, range(low, high + 1, step))))

    def suggest_float(self, name: str, low: float, high: float) -> float:
        def draw() -> float:
            trend = self._trends[name]
            share = self._rng.random() * (self._lean if trend is not FlopsTrend.NONE else 1.0)
            span = share * (high - low)
            return high - span if trend is FlopsTrend.DECREASING else low + span

        return float(self._record(name, draw))

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self._record(name, lambda: self._pick(name, choices))


class Domain(abc.ABC):
    """The values one dimension may take."""

    @property
    @abc.abstractmethod
    def fixed(self) -> bool:
        """True when there is a single value, which is then never suggested."""

    @property
    @abc.abstractmethod
    def first(self) -> Any:
        """The value used where the dimension's value cannot matter (the first listed, or the minimum)."""

    @property
    @abc.abstractmethod
    def low(self) -> Any:
        """The smallest value."""

    @property
    @abc.abstractmethod
    def high(self) -> Any:
        """The largest value."""

    @property
    @abc.abstractmethod
    def count(self) -> int | None:
        """The number of values; None for a continuous range."""

    @abc.abstractmethod
    def options(self) -> Sequence[Any]:
        """Every value, in order (finite domains only); a range stays lazy."""

    @abc.abstractmethod
    def contains(self, value: Any) -> bool:
        """Whether `value` is one of the domain's values."""

    @abc.abstractmethod
    def suggest(self, suggester: Suggester, name: str) -> Any:
        """A value drawn by `suggester` under parameter name `name`."""


@dataclass(frozen=True)
class Choices(Domain):
    """A list of values (enum members for the kind dimensions); one value means fixed."""

    values: tuple[Any, ...]

    @property
    def fixed(self) -> bool:
        return len(self.values) == 1

    @property
    def first(self) -> Any:
        return self.values[0]

    @property
    def low(self) -> Any:
        return min(self.values)

    @property
    def high(self) -> Any:
        return max(self.values)

    @property
    def count(self) -> int:
        return len(self.values)

    def options(self) -> tuple[Any, ...]:
        return self.values

    def contains(self, value: Any) -> bool:
        return value in self.values

    def suggest(self, suggester: Suggester, name: str) -> Any:
        # Optuna stores plain strings, not enum members; map the pick back to the member.
        raw = [plain_value(v) for v in self.values]
        return self.values[raw.index(suggester.suggest_categorical(name, raw))]

    def __str__(self) -> str:
        text = ", ".join(plain_text(v) for v in self.values)
        return f"{text} (fixed)" if self.fixed else text


@dataclass(frozen=True)
class IntRange(Domain):
    """The integers start, start + step, ..., stop (at least two of them)."""

    start: int
    stop: int
    step: int = 1

    @property
    def fixed(self) -> bool:
        return False

    @property
    def first(self) -> int:
        return self.start

    @property
    def low(self) -> int:
        return self.start

    @property
    def high(self) -> int:
        return self.stop

    @property
    def count(self) -> int:
        return (self.stop - self.start) // self.step + 1

    def options(self) -> range:
        return range(self.start, self.stop + 1, self.step)

    def contains(self, value: Any) -> bool:
        return (isinstance(value, int) and not isinstance(value, bool) and self.start <= value <= self.stop
                and (value - self.start) % self.step == 0)

    def suggest(self, suggester: Suggester, name: str) -> int:
        return suggester.suggest_int(name, self.start, self.stop, step=self.step)

    def __str__(self) -> str:
        return f"{self.start}..{self.stop}" + (f" step {self.step}" if self.step != 1 else "")


@dataclass(frozen=True)
class FloatRange(Domain):
    """Every real number in [start, stop], start < stop: a continuous dimension."""

    start: float
    stop: float

    @property
    def fixed(self) -> bool:
        return False

    @property
    def first(self) -> float:
        return self.start

    @property
    def low(self) -> float:
        return self.start

    @property
    def high(self) -> float:
        return self.stop

    @property
    def count(self) -> None:
        return None

    def options(self) -> tuple[float, ...]:
        raise TypeError(f"the continuous range {self} has no finite list of values")

    def contains(self, value: Any) -> bool:
        return isinstance(value, float) and self.start <= value <= self.stop

    def suggest(self, suggester: Suggester, name: str) -> float:
        return suggester.suggest_float(name, self.start, self.stop)

    def __str__(self) -> str:
        return f"[{self.start}, {self.stop}]"


class FlopsTrend(enum.Enum):
    """How a network's FLOPs respond to a dimension, which decides how `flops_range` treats it."""

    KIND = "enumerated"  # no order to exploit: every value is tried
    INCREASING = "increasing"  # more blocks or channels: minimum at the lowest value
    DECREASING = "decreasing"  # stride: minimum at the highest value
    NONE = "none"  # training-only (dropout, stochastic depth): FLOPs are counted in eval mode

