"""Search spaces: which `Arch` points a search may propose, read from a commented YAML file.

One table, `_SPECS`, holds every dimension's rules: its YAML key and value rule, when it applies (a
conjunction of conditions on values picked before it), its FLOP trend and the `Arch` field it sets.
Reading a file, every walk (suggest for an Optuna trial, sample with `random`, contains, size, the exact
FLOP range) and the check of a file's combinations all follow that table: a walk asks a `pick` function
for each dimension's value, in table order, only where the dimension applies; walks differ only in `pick`
(a sampler, a replay of a given Arch, or a depth-first enumeration).

Combinations that `Arch` would reject are refused when the file is loaded (`SearchSpace.from_dict`
names the offending values), never filtered at suggest time, so every walk yields a valid `Arch` and
every suggested parameter has a fixed distribution across trials, as Optuna's samplers need.
"""

from __future__ import annotations

import abc
import enum
import functools
import math
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, Protocol

from resnas._arch import (MAX_BLOCKS, MAX_CLASSES, MAX_RESOLUTION, MAX_STAGES, MAX_WIDTH, MIN_RESOLUTION, Arch,
                          Block, Order, Shortcut, StageSpec, Stem, Survival, brief)
from resnas._errors import ConfigError
from resnas._space_yaml import Reader, Rule, enum_rule, load_yaml

# -- samplers -------------------------------------------------------------------------------------


class Suggester(Protocol):
    """The part of `optuna.Trial` a space uses; `random.Random` gets it through `_RandomSuggester`."""

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1) -> int: ...

    def suggest_float(self, name: str, low: float, high: float) -> float: ...

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


class _Cost(Protocol):
    """What `CountFn` returns: anything with integer `flops` (resnas.Cost)."""

    @property
    def flops(self) -> int: ...


class CountFn(Protocol):
    """`resnas._build.count`'s signature: the cost of `arch` on a given input."""

    def __call__(self, arch: Arch, *, resolution: int, num_classes: int, in_channels: int) -> _Cost: ...


def _default_count() -> CountFn:
    """resnas._build.count, imported on first use."""
    # Imported on first use: callers passing their own counter (tests, stubs) need no builder.
    from resnas._build import count

    return count


# -- domains --------------------------------------------------------------------------------------


def _plain(value: Any) -> str:
    """An enum member's value, or any other value, as text."""
    return str(value.value) if isinstance(value, enum.Enum) else str(value)


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
        raw = [v.value if isinstance(v, enum.Enum) else v for v in self.values]
        return self.values[raw.index(suggester.suggest_categorical(name, raw))]

    def __str__(self) -> str:
        text = ", ".join(_plain(v) for v in self.values)
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


@dataclass(frozen=True)
class Dimension:
    """One searchable choice: its name (the YAML key path and Optuna parameter name) and values."""

    name: str
    domain: Domain
    applies: str  # when the walk asks for it, for people
    branches: bool  # later dimensions depend on its value (block, shortcut, cardinality, survival)
    trend: FlopsTrend

    @property
    def continuous(self) -> bool:
        """True for a float range, which `size()` counts as one value."""
        return self.domain.count is None


@dataclass(frozen=True)
class FlopsRange:
    """The exact FLOP extremes of a space, the architectures reaching them, and how many were counted."""

    min_flops: int
    max_flops: int
    min_arch: Arch
    max_arch: Arch
    counted: int


# -- the table: every dimension's rules -----------------------------------------------------------


@dataclass(frozen=True)
class _When:
    """One condition for a dimension to apply: the value picked for earlier dimension `key` passes `test`."""

    key: str
    test: Callable[[Any], bool]
    text: str  # for people, when it holds
    never: str  # for people, when no allowed value passes


_RESIDUAL = _When("shortcut", lambda v: v is not Shortcut.DENSE, "shortcut not dense",
                  "shortcut is always 'dense'")
_DENSE = _When("shortcut", lambda v: v is Shortcut.DENSE, "shortcut dense", "shortcut is never 'dense'")
_BOTTLENECK = _When("block", lambda v: v is Block.BOTTLENECK, "bottleneck", "block is never 'bottleneck'")
_GROUPED = _When("cardinality", lambda v: v > 1, "cardinality > 1", "cardinality is never > 1")
_SURVIVAL = _When("survival", lambda v: v is not Survival.NONE, "survival not none",
                  "survival is always 'none'")

_ARCH_DEFAULTS = {f.name: f.default for f in fields(Arch)}
_STAGE_DEFAULTS = {f.name: f.default for f in fields(StageSpec)}


@dataclass(frozen=True)
class _Spec:
    """One dimension's rules: YAML key, value rule, FLOP trend, when it applies, the Arch field it sets."""

    key: str  # the YAML key (within each stage when `stage`), and the dimension's name
    rule: Rule
    trend: FlopsTrend
    when: tuple[_When, ...] = ()  # all must hold; each names a dimension whose `when` is a prefix of these
    stage: bool = False  # one dimension per stage, `stages[i].key`, setting StageSpec's field
    attr: str | None = None  # the Arch (StageSpec) field it sets, when not named `key`
    check_all: bool = False  # Arch's validity depends on every value, not just the cheap end
    required: bool = False  # a file must give it where it applies, although the field has a default
    note: str = ""  # why it never applies, when its last condition is never met

    @property
    def field(self) -> str:
        """The Arch (StageSpec) field the dimension sets."""
        return self.attr or self.key

    @property
    def applies(self) -> str:
        """When it applies, for people."""
        return ", ".join(w.text for w in self.when) or "always"

    @property
    def branches(self) -> bool:
        """Whether later dimensions' conditions depend on its value."""
        return any(w.key == self.key for spec in _SPECS for w in spec.when)

    @property
    def default(self) -> Any:
        """Arch's (StageSpec's) default, taken where a file leaves the key out; None when there is none."""
        value = (_STAGE_DEFAULTS if self.stage else _ARCH_DEFAULTS)[self.field]
        return None if self.required or value is MISSING else value

    def applies_to(self, picked: Mapping[str, Any]) -> bool:
        """Whether it applies given the values picked so far (keyed by dimension name)."""
        return all(w.test(picked[w.key]) for w in self.when)

    def never(self, domains: Mapping[str, Domain]) -> str | None:
        """Why no combination of the earlier dimensions' `domains` makes it apply; None when some does."""
        for w in self.when:
            if not any(w.test(v) for v in domains[w.key].options()):
                return w.never + (f" ({self.note})" if self.note and w is self.when[-1] else "")
        return None


_COUNT = Rule(int, "an integer >= 1", lambda v: v >= 1)
# Arch's own limits, so that a file cannot allow values no Arch accepts.
_WIDTH = Rule(int, f"an integer >= 1 and <= {MAX_WIDTH}", lambda v: 1 <= v <= MAX_WIDTH)
_DEPTH = Rule(int, f"an integer >= 1 and <= {MAX_BLOCKS}", lambda v: 1 <= v <= MAX_BLOCKS)
_PROBABILITY = Rule(float, "a number in (0, 1]", lambda v: 0 < v <= 1)

# In walk order: suggest asks Optuna for the parameters in this order, so it must not change.
_SPECS: tuple[_Spec, ...] = (
    _Spec("stem", enum_rule(Stem), FlopsTrend.KIND),
    _Spec("stem_width", _WIDTH, FlopsTrend.INCREASING),
    _Spec("block", enum_rule(Block), FlopsTrend.KIND),
    _Spec("shortcut", enum_rule(Shortcut), FlopsTrend.KIND),
    _Spec("order", enum_rule(Order), FlopsTrend.KIND),
    _Spec("depth", _DEPTH, FlopsTrend.INCREASING, stage=True),
    _Spec("stride", Rule(int, "1 or 2", lambda v: v in (1, 2)), FlopsTrend.DECREASING, stage=True),
    _Spec("width", _WIDTH, FlopsTrend.INCREASING, (_RESIDUAL,), stage=True,
          note="its width comes from growth_rate"),
    _Spec("width_multiplier", Rule(float, f"a number > 0 and <= {MAX_WIDTH}", lambda v: 0 < v <= MAX_WIDTH),
          FlopsTrend.INCREASING,
          (_RESIDUAL,)),
    _Spec("cardinality", _WIDTH, FlopsTrend.KIND, (_RESIDUAL, _BOTTLENECK)),
    _Spec("base_width", _WIDTH, FlopsTrend.KIND, (_RESIDUAL, _BOTTLENECK, _GROUPED),
          note="it is 64 for cardinality 1"),
    # Every dense cardinality must divide every growth rate, hence check_all.
    _Spec("growth_rate", _WIDTH, FlopsTrend.INCREASING, (_DENSE,), check_all=True),
    _Spec("bottleneck_size", _WIDTH, FlopsTrend.INCREASING, (_DENSE,)),
    _Spec("compression", _PROBABILITY, FlopsTrend.INCREASING, (_DENSE,)),
    _Spec("dense_cardinality", _WIDTH, FlopsTrend.KIND, (_DENSE, _BOTTLENECK), attr="cardinality"),
    _Spec("dropout", Rule(float, "a number in [0, 1)", lambda v: 0 <= v < 1), FlopsTrend.NONE),
    _Spec("survival", enum_rule(Survival), FlopsTrend.NONE),
    # Arch's 1.0 would make a schedule that drops nothing: a file must say what it means.
    _Spec("survival_prob", _PROBABILITY, FlopsTrend.NONE, (_SURVIVAL,), required=True),
)
_STAGE_SPECS = tuple(s for s in _SPECS if s.stage)
_INPUT_RULES: dict[str, Rule] = {
    "resolution": Rule(int, f"an integer >= {MIN_RESOLUTION} and <= {MAX_RESOLUTION}",
                       lambda v: MIN_RESOLUTION <= v <= MAX_RESOLUTION),
    "channels": _WIDTH,
    "classes": Rule(int, f"an integer >= 1 and <= {MAX_CLASSES}", lambda v: 1 <= v <= MAX_CLASSES),
}
# Values in one list: hand-written lists are short; a longer one is a mistake, a range is the fix.
MAX_CHOICES = 1000
# Walks in one enumeration (the checks on load, size, the FLOP range): the shipped spaces need about 100;
# each takes about 0.1 ms (0.6 ms counting FLOPs), so this bounds any of them to seconds.
MAX_WALKS = 10_000
# Other values tried per dimension when naming the culprits of an invalid combination.
_CULPRIT_TRIES = 64
_TOP_KEYS = ("input", "stages") + tuple(s.key for s in _SPECS if not s.stage)
_STAGE_KEYS = tuple(s.key for s in _STAGE_SPECS)


@dataclass(frozen=True)
class _Slot:
    """One dimension of a space with a given number of stages: its name, its rules and its stage (or None)."""

    name: str
    spec: _Spec
    stage: int | None

    @property
    def path(self) -> str:
        """The Arch field it sets, as Arch's errors name it (`stages[i].field` for a stage's)."""
        return self.spec.field if self.stage is None else f"stages[{self.stage}].{self.spec.field}"

    def read(self, arch: Arch) -> Any:
        """Its value in `arch` (which has enough stages)."""
        return getattr(arch if self.stage is None else arch.stages[self.stage], self.spec.field)


def _layout(num_stages: int) -> list[_Slot]:
    """Every spec in table order, the per-stage ones repeated stage by stage where the first one stands."""
    slots: list[_Slot] = []
    for spec in _SPECS:
        if not spec.stage:
            slots.append(_Slot(spec.key, spec, None))
        elif spec is _STAGE_SPECS[0]:
            slots += [_Slot(f"stages[{i}].{s.key}", s, i) for i in range(num_stages) for s in _STAGE_SPECS]
    return slots


# -- reading a file ---------------------------------------------------------------------------------


def _read_domain(r: Reader, where: str, raw: Any, rule: Rule) -> Domain:
    """A scalar (fixed), a list (Choices), {min, max, step} (IntRange) or {min, max} (FloatRange)."""
    if isinstance(raw, list):
        if not raw:
            r.fail(where, f"got an empty list, expected one or more of {rule.allowed}")
        if len(raw) > MAX_CHOICES:
            r.fail(where, f"a list of {len(raw):,} values, at most {MAX_CHOICES:,}; give a range "
                          "{min, max, step} instead")
        values = tuple(r.value(f"{where}[{i}]", v, rule) for i, v in enumerate(raw))
        seen: set[Any] = set()  # values are ints, floats or enum members: hashable, so this is linear
        for i, v in enumerate(values):
            if v in seen:
                r.fail(f"{where}[{i}]", f"{brief(raw[i])} is listed twice")
            seen.add(v)
        return Choices(values)
    if not isinstance(raw, dict):
        return Choices((r.value(where, raw, rule),))
    if issubclass(rule.kind, enum.Enum):
        r.fail(where, f"got {brief(raw)}: a {{min, max}} range needs numbers; give one or a list of "
                      f"{rule.allowed}")
    r.mapping(where, raw, ("min", "max", "step") if rule.kind is int else ("min", "max"))
    if "min" not in raw or "max" not in raw:
        r.fail(where, f"got {brief(raw)}, a range needs both min and max")
    low, high = r.value(f"{where}.min", raw["min"], rule), r.value(f"{where}.max", raw["max"], rule)
    if low > high:
        r.fail(where, f"got {brief(raw)}: min {low} is above max {high}")
    if rule.kind is float:
        return Choices((low,)) if low == high else FloatRange(low, high)
    step = r.value(f"{where}.step", raw.get("step", 1), _COUNT)
    if (high - low) % step:
        r.fail(where, f"got {brief(raw)}: max - min = {high - low} is no multiple of step {step}")
    return Choices((low,)) if low == high else IntRange(low, high, step)


def _read_input(r: Reader, raw: Any) -> tuple[int, int, int]:
    """The `input` mapping's resolution, channels and classes."""
    given = r.mapping("input", raw, tuple(_INPUT_RULES))
    for key, rule in _INPUT_RULES.items():
        if key not in given:
            r.fail(f"input.{key}", f"missing; expected {rule.allowed}")
    resolution, channels, classes = (r.value(f"input.{k}", given[k], rule)
                                     for k, rule in _INPUT_RULES.items())
    return resolution, channels, classes


def _read_stages(r: Reader, raw: Any) -> list[Mapping[str, Any]]:
    """The `stages` list's mappings, each with known keys only."""
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_STAGES:
        r.fail("stages", f"got {brief(raw)}, expected a list of 1 to {MAX_STAGES} stages")
    return [r.mapping(f"stages[{i}]", stage, _STAGE_KEYS) for i, stage in enumerate(raw)]


def _read_dims(r: Reader, top: Mapping[str, Any], stages: Sequence[Mapping[str, Any]]) -> list[Dimension]:
    """Each slot's Dimension where it can apply, in table order; a key where it never applies is an error."""
    domains: dict[str, Domain] = {}
    dims: list[Dimension] = []
    for slot in _layout(len(stages)):
        spec = slot.spec
        given = top if slot.stage is None else stages[slot.stage]
        reason = spec.never(domains)
        if reason is not None:
            if spec.key in given:
                r.fail(slot.name, f"never applies, because {reason}; remove it")
            continue
        if spec.key in given:
            domains[slot.name] = _read_domain(r, slot.name, given[spec.key], spec.rule)
        elif spec.default is not None:
            domains[slot.name] = Choices((spec.default,))
        else:
            applies = f" (it applies when {spec.applies})" if spec.when else ""
            r.fail(slot.name, f"missing; expected {spec.rule.allowed}, a list or a range{applies}")
        dims.append(Dimension(slot.name, domains[slot.name], spec.applies, spec.branches, spec.trend))
    return dims


def _corner(dim: Dimension, cheap: bool) -> Sequence[Any]:
    """Values for a FLOP extreme: every kind value, a monotone one's cheap (or dear) end, else the first."""
    if dim.trend is FlopsTrend.KIND:
        return dim.domain.options()
    if dim.trend is FlopsTrend.NONE:
        return (dim.domain.first,)
    low = (dim.trend is FlopsTrend.INCREASING) == cheap
    return (dim.domain.low if low else dim.domain.high,)


# -- the space ------------------------------------------------------------------------------------


class SearchSpace:
    """A set of `Arch` points for one input size: walk it with `suggest`, `sample` or `contains`."""

    def __init__(self, dims: Sequence[Dimension], num_stages: int, *, resolution: int, in_channels: int,
                 num_classes: int, source: str) -> None:
        self._dims = {d.name: d for d in dims}
        slots = {s.name: s for s in _layout(num_stages)}
        self._slots = {d.name: slots[d.name] for d in dims}
        self._num_stages = num_stages
        self._resolution = resolution
        self._in_channels = in_channels
        self._num_classes = num_classes
        self.source = source

    # -- loading ------------------------------------------------------------------------------------

    @classmethod
    def from_yaml(cls, path: str | Path) -> SearchSpace:
        """Read a search-space file (format: search_spaces/resnet_family.yaml); errors are ConfigErrors."""
        path = Path(path)
        data = load_yaml(path)
        if data is None:
            raise ConfigError(f"{path}: the file is empty; a search space needs at least 'input' and "
                              "'stages'")
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<dict>") -> SearchSpace:
        """A space from the parsed YAML mapping; `source` names it in error messages."""
        r = Reader(source)
        top = r.mapping("", data, _TOP_KEYS)
        for key in ("input", "stages"):
            if key not in top:
                r.fail(key, "missing; every search space needs 'input' and 'stages'")
        resolution, channels, classes = _read_input(r, top["input"])
        stages = _read_stages(r, top["stages"])
        space = cls(_read_dims(r, top, stages), len(stages), resolution=resolution, in_channels=channels,
                    num_classes=classes, source=source)
        space._refuse_invalid(r)
        return space

    def _refuse_invalid(self, r: Reader) -> None:
        """Fail on the first corner Arch refuses, naming where and the allowed values that combine into it.

        Arch refuses networks too thin for their groups or downsampled too far, which sit at the cheap end
        of every monotone dimension (as in `_extreme`), networks too deep or too wide (MAX_BLOCKS, MAX_WIDTH),
        which sit at the dear end, and dense cardinalities that do not divide the growth rate (so `check_all`
        dimensions take every value): these corners cover every refusal.
        """
        def options(dim: Dimension, cheap: bool) -> Sequence[Any]:
            return dim.domain.options() if self._slots[dim.name].spec.check_all else _corner(dim, cheap)

        for picked in (p for cheap in (True, False) for p in self._runs(functools.partial(options, cheap=cheap))):
            problem = self._refusal(picked)
            if problem is None:
                continue
            field, _, detail = problem.partition(": ")
            where = next((n for n in picked if self._slots[n].path == field), field)
            culprits = self._culprits(picked, problem)
            combination = (f"allows the invalid combination {', '.join(culprits)}" if culprits
                           else "its fixed values make an invalid network")
            r.fail(where, f"{combination}: {detail}")

    def _refusal(self, picked: Mapping[str, Any]) -> str | None:
        """Arch's message refusing the picked values; None when they make a valid Arch."""
        try:
            self._arch(picked)
        except ValueError as e:
            return str(e)
        return None

    def _culprits(self, picked: Mapping[str, Any], problem: str) -> list[str]:
        """`name value` for each unfixed pick whose change alone to another allowed value alters `problem`."""
        found = []
        for name, value in picked.items():
            domain = self._dims[name].domain
            if domain.fixed:
                continue
            count = domain.count
            # The extremes first, then a few more: enough to tell, without trying every value of a range.
            few = domain.options()[:_CULPRIT_TRIES] if count is not None and count > 2 else ()
            others = (domain.low, domain.high, *few)
            for other in others:
                def pick(dim: Dimension, name: str = name, other: Any = other) -> Any:
                    return other if dim.name == name else picked.get(dim.name, dim.domain.first)

                if other != value and self._refusal(self._picks(pick)) != problem:
                    found.append(f"{name} {_plain(value)}")
                    break
        return found

    # -- properties ---------------------------------------------------------------------------------

    @property
    def resolution(self) -> int:
        """Input height and width that FLOP budgets refer to."""
        return self._resolution

    @property
    def in_channels(self) -> int:
        """Input channels."""
        return self._in_channels

    @property
    def num_classes(self) -> int:
        """Output classes."""
        return self._num_classes

    @property
    def num_stages(self) -> int:
        """Stages of every network in the space."""
        return self._num_stages

    def dimensions(self) -> list[Dimension]:
        """Every dimension that applies somewhere, in the order suggest asks for them (fixed ones too)."""
        return list(self._dims.values())

    def continuous_dimensions(self) -> list[str]:
        """Names of the float-range dimensions, which `size()` counts as one value each."""
        return [d.name for d in self._dims.values() if d.continuous]

    def __repr__(self) -> str:
        return f"SearchSpace({self.source!r})"

    # -- the walk -----------------------------------------------------------------------------------

    def _picks(self, pick: Callable[[Dimension], Any]) -> dict[str, Any]:
        """The value `pick` gives each dimension that applies, asked in table order, keyed by name."""
        picked: dict[str, Any] = {}
        for name, slot in self._slots.items():
            if slot.spec.applies_to(picked):
                picked[name] = pick(self._dims[name])
        return picked

    def _arch(self, picked: Mapping[str, Any]) -> Arch:
        """The Arch with the picked values in their fields and Arch's defaults in the others."""
        whole: dict[str, Any] = {}
        stages: list[dict[str, Any]] = [{} for _ in range(self._num_stages)]
        for name, value in picked.items():
            slot = self._slots[name]
            (whole if slot.stage is None else stages[slot.stage])[slot.spec.field] = value
        return Arch(stages=tuple(StageSpec(**s) for s in stages), **whole)

    def suggest(self, trial: Suggester) -> Arch:
        """An Arch from an Optuna trial, define-by-run: only applicable, unfixed dimensions are suggested.

        `suggest(optuna.trial.FixedTrial(trial.params))` rebuilds the Arch of a finished trial.
        """

        def pick(dim: Dimension) -> Any:
            return dim.domain.first if dim.domain.fixed else dim.domain.suggest(trial, dim.name)

        return self._arch(self._picks(pick))

    def sample(self, rng: random.Random) -> Arch:
        """An Arch drawn with `rng`, distributed as `suggest` is under Optuna's RandomSampler."""
        return self.sample_params(rng)[0]

    def sample_params(self, rng: random.Random, *, fixed: Mapping[str, Any] | None = None,
                      lean: float = 1.0) -> tuple[Arch, dict[str, Any]]:
        """A random Arch and the Optuna parameters that rebuild it (for `study.enqueue_trial`).

        `fixed` pins parameters to Optuna values. `lean` < 1 draws each dimension whose FLOPs grow (or fall)
        monotonically from the cheapest `lean` share of its values, 0 takes the cheapest: how to find
        architectures under a budget that few random ones fit.
        """
        picks = _RandomSuggester(rng, {d.name: d.trend for d in self._dims.values()}, fixed or {}, lean)
        return self.suggest(picks), picks.params

    def neighbours(self, arch: Arch, rng: random.Random) -> list[Move]:
        """Every Arch one adjacent value of one listed dimension away from `arch` (a point of the space).

        Continuous dimensions have no adjacent value and are not moved; a move that makes other dimensions
        apply (block -> bottleneck asks for cardinality) draws them with `rng`. Budgets are the caller's.
        """
        params = self.params(arch)
        if params is None:
            raise ValueError(f"{brief(arch)} is not in {self.source}")
        found: dict[Arch, Move] = {}
        for name, value in params.items():
            domain = self._dims[name].domain
            if domain.count is None:
                continue
            options = [_plain_value(o) for o in domain.options()]
            i = options.index(value)
            for new in (options[j] for j in (i - 1, i + 1) if 0 <= j < len(options)):
                moved, moved_params = self.sample_params(rng, fixed={**params, name: new})
                if moved != arch and moved not in found:
                    found[moved] = Move(name, value, new, moved, moved_params)
        return list(found.values())

    def scaled(self, arch: Arch, scale: Scale, factor: float) -> Move | None:
        """`arch` with every width (stem, stage widths, growth rate) or every stage depth at the largest option
        of its dimension at most `factor` x its value (at least the smallest option); None when nothing changes.

        Uniform scaling on the space's own grid, as EfficientNet and RegNet scale their baselines: the result is
        a point of the space, so the search can train it. The Move's label says the scale ("width x0.75").
        """
        params = self.params(arch)
        if params is None:
            raise ValueError(f"{brief(arch)} is not in {self.source}")
        fields = _SCALED_FIELDS[scale]
        moved = dict(params)
        for name, value in params.items():
            dim = self._dims[name]
            if self._slots[name].spec.field in fields and dim.domain.count is not None and isinstance(value, int):
                options = sorted(v for v in dim.domain.options() if isinstance(v, int))
                below = [v for v in options if v <= factor * value + 1e-9]
                moved[name] = below[-1] if below else options[0]
        if moved == params:
            return None
        new, new_params = self.sample_params(random.Random(0), fixed=moved)
        return Move(scale.value, 1.0, factor, new, new_params)

    def contains(self, arch: Arch) -> bool:
        """Whether `arch` is in the space: every field allowed, inapplicable ones at their defaults."""
        return self._asked(arch) is not None

    def params(self, arch: Arch) -> dict[str, Any] | None:
        """The Optuna parameters that make `suggest` rebuild `arch` (for `study.enqueue_trial`); None outside."""
        asked = self._asked(arch)
        if asked is None:
            return None
        values = {d.name: self._slots[d.name].read(arch) for d in asked if not d.domain.fixed}
        return {name: _plain_value(v) for name, v in values.items()}

    def probability(self, arch: Arch) -> float:
        """How likely `sample` is to draw `arch`'s discrete choices (continuous ones aside); 0 outside.

        Dividing by it turns sampled architectures into a uniform sample of the space's architectures.
        """
        asked = self._asked(arch)
        return 0.0 if asked is None else math.prod(1 / (d.domain.count or 1) for d in asked)

    def _asked(self, arch: Arch) -> list[Dimension] | None:
        """The dimensions the walk asks to rebuild `arch`, or None when `arch` is outside the space."""
        if len(arch.stages) != self._num_stages:
            return None

        def replay(dim: Dimension) -> Any:
            value = self._slots[dim.name].read(arch)
            if not dim.domain.contains(value):
                raise _Outside
            return value

        try:
            picked = self._picks(replay)
        except _Outside:
            return None
        # Comparing catches the fields no dimension asks for, e.g. base_width 4 with cardinality 1.
        return [self._dims[n] for n in picked] if self._arch(picked) == arch else None

    def _runs(self, options: Callable[[Dimension], Sequence[Any]]) -> Iterator[dict[str, Any]]:
        """The picks of each walk where every dimension may take `options(dim)`, depth first."""
        path: list[int] | None = []
        walks = 0
        while path is not None:
            walks += 1
            if walks > MAX_WALKS:
                raise ConfigError(f"{self.source}: over {MAX_WALKS:,} combinations of its enumerated dimensions "
                                  "(block, shortcut, order, cardinality, base_width, growth_rate, ...) to walk; "
                                  "list fewer values for them")
            run = _Run(path, options)
            yield self._picks(run)
            path = run.next_path()

    def size(self) -> int:
        """The exact number of architectures; each continuous dimension counts as one value."""
        total = 0
        # Enumerate only what changes which dimensions apply; the rest multiply independently.
        for picked in self._runs(lambda d: d.domain.options() if d.branches else (d.domain.first,)):
            total += math.prod(self._dims[n].domain.count or 1 for n in picked if not self._dims[n].branches)
        return total

    # -- FLOPs --------------------------------------------------------------------------------------

    def flops(self, arch: Arch, count: CountFn | None = None) -> int:
        """FLOPs of `arch` on this space's input (count defaults to resnas._build.count)."""
        count = count or _default_count()
        return count(arch, resolution=self._resolution, num_classes=self._num_classes,
                     in_channels=self._in_channels).flops

    def flops_range(self, count: CountFn | None = None) -> FlopsRange:
        """Exact min and max FLOPs: enumerate the kind dimensions, the monotone ones at their extremes.

        Exact as long as FLOPs never fall when depth, a width, stem_width, width_multiplier,
        growth_rate, bottleneck_size or compression grows, or when a stride shrinks.
        """
        count = count or _default_count()
        (lo, lo_arch, n_lo), (hi, hi_arch, n_hi) = (self._extreme(count, lowest) for lowest in (True, False))
        return FlopsRange(lo, hi, lo_arch, hi_arch, n_lo + n_hi)

    def min_flops(self, count: CountFn | None = None) -> int:
        """The exact minimum FLOPs over the space (see flops_range)."""
        return self._extreme(count or _default_count(), lowest=True)[0]

    def max_flops(self, count: CountFn | None = None) -> int:
        """The exact maximum FLOPs over the space (see flops_range)."""
        return self._extreme(count or _default_count(), lowest=False)[0]

    def _extreme(self, count: CountFn, lowest: bool) -> tuple[int, Arch, int]:
        """The lowest (or highest) FLOPs, an Arch with them, and how many corner Archs were counted."""
        archs = [self._arch(picked) for picked in self._runs(lambda dim: _corner(dim, cheap=lowest))]
        counted = [(self.flops(arch, count), arch) for arch in archs]
        flops, arch = (min if lowest else max)(counted, key=lambda pair: pair[0])
        return flops, arch, len(counted)


class Scale(str, enum.Enum):
    """What `SearchSpace.scaled` scales uniformly."""

    WIDTH = "width"
    DEPTH = "depth"


# The Arch fields each scale moves (a dense net's width is its growth rate).
_SCALED_FIELDS = {Scale.WIDTH: ("stem_width", "width", "growth_rate"), Scale.DEPTH: ("depth",)}


@dataclass(frozen=True)
class Move:
    """One step in the space: `dimension` from `old` to `new` (Optuna values), and the Arch it leads to."""

    dimension: str
    old: Any
    new: Any
    arch: Arch
    params: dict[str, Any]  # the Optuna parameters that rebuild `arch`

    @property
    def label(self) -> str:
        return f"{self.dimension} {self.old} -> {self.new}"


def _plain_value(v: Any) -> Any:
    """An option as Optuna stores it (an enum's value)."""
    return v.value if isinstance(v, enum.Enum) else v


class _Run:
    """One walk of a depth-first enumeration: replays a path of value indices, then takes first values."""

    def __init__(self, path: list[int], options: Callable[[Dimension], Sequence[Any]]) -> None:
        self._path = path
        self._options = options
        self._taken: list[int] = []
        self._widths: list[int] = []

    def __call__(self, dim: Dimension) -> Any:
        """The path's next value of `dim` (its first beyond the path), remembering how many there were."""
        values = self._options(dim)
        k = len(self._taken)
        i = self._path[k] if k < len(self._path) else 0
        self._taken.append(i)
        self._widths.append(len(values))
        return values[i]

    def next_path(self) -> list[int] | None:
        """The next walk's path: the deepest decision with values left advanced; None when all are done."""
        taken, widths = list(self._taken), list(self._widths)
        while taken and taken[-1] + 1 == widths[-1]:
            taken.pop()
            widths.pop()
        if not taken:
            return None
        # Later decisions are dropped: which dimensions follow may change with this one's value.
        taken[-1] += 1
        return taken


class _Outside(Exception):
    """Raised inside `contains`' replay when a field is outside its dimension."""
