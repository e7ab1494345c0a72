"""Search spaces: which `Arch` points a search may propose, read from a commented YAML file.

Every question about a space (suggest for an Optuna trial, sample with `random`, contains, size, the
exact FLOP range) is answered by one walk over its dimensions (`SearchSpace._walk`) that asks a
`pick` function for each dimension's value only where that dimension applies. The walks differ only in
`pick`: a sampler, a replay of a given Arch, or a depth-first enumeration.

Combinations that `Arch` would reject are refused when the file is loaded (`SearchSpace.from_dict`
names the offending keys), never filtered at suggest time, so every walk yields a valid `Arch` and
every suggested parameter has a fixed distribution across trials, as Optuna's samplers need.
"""

from __future__ import annotations

import abc
import difflib
import enum
import math
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Protocol

import yaml

from resnas._arch import MAX_STAGES, MIN_RESOLUTION, Arch, Block, Order, Shortcut, StageSpec, Stem, Survival

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
    # Imported on first use: callers passing their own counter (tests, stubs) need no builder.
    from resnas._build import count

    return count


# -- domains --------------------------------------------------------------------------------------


def _plain(value: Any) -> str:
    return str(value.value) if isinstance(value, enum.Enum) else str(value)


class _RandomSuggester:
    """`Suggester` over `random.Random`, recording its picks: uniform over each dimension as Optuna's
    RandomSampler, or biased to the cheap side by `lean` < 1 (see `SearchSpace.sample_params`)."""

    def __init__(self, rng: random.Random, trends: Mapping[str, FlopsTrend], fixed: Mapping[str, Any],
                 lean: float) -> None:
        self._rng, self._trends, self._fixed, self._lean = rng, trends, fixed, lean
        self.params: dict[str, Any] = {}

    def _pick(self, name: str, options: Sequence[Any]) -> Any:
        trend = self._trends[name]
        if trend in (FlopsTrend.INCREASING, FlopsTrend.DECREASING) and self._lean < 1:
            ordered = sorted(options, reverse=trend is FlopsTrend.DECREASING)
            options = ordered[:max(1, math.ceil(self._lean * len(ordered)))]
        return self._rng.choice(list(options))

    def _record(self, name: str, draw: Callable[[], Any]) -> Any:
        self.params[name] = self._fixed[name] if name in self._fixed else draw()
        return self.params[name]

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1) -> int:
        return int(self._record(name, lambda: self._pick(name, range(low, high + 1, step))))

    def suggest_float(self, name: str, low: float, high: float) -> float:
        def draw() -> float:
            trend = self._trends[name]
            share = self._rng.random() * (self._lean if trend is not FlopsTrend.NONE else 1.0)
            return high - share * (high - low) if trend is FlopsTrend.DECREASING else low + share * (high - low)

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
    def options(self) -> tuple[Any, ...]:
        """Every value, in order (finite domains only)."""

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

    def options(self) -> tuple[int, ...]:
        return tuple(range(self.start, self.stop + 1, self.step))

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


# -- reading YAML -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rule:
    """What a single value may be: `kind` (int, float or an Enum class) passing `ok`."""

    kind: type
    allowed: str
    ok: Callable[[Any], bool] = lambda v: True


def _enum_rule(cls: type[enum.Enum]) -> _Rule:
    return _Rule(cls, "one of " + ", ".join(repr(m.value) for m in cls))


_COUNT = _Rule(int, "an integer >= 1", lambda v: v >= 1)
_PROBABILITY = _Rule(float, "a number in (0, 1]", lambda v: 0 < v <= 1)
_RULES: dict[str, _Rule] = {
    "stem": _enum_rule(Stem),
    "stem_width": _COUNT,
    "block": _enum_rule(Block),
    "shortcut": _enum_rule(Shortcut),
    "order": _enum_rule(Order),
    "depth": _COUNT,
    "width": _COUNT,
    "stride": _Rule(int, "1 or 2", lambda v: v in (1, 2)),
    "cardinality": _COUNT,
    "base_width": _COUNT,
    "width_multiplier": _Rule(float, "a number > 0", lambda v: v > 0),
    "growth_rate": _COUNT,
    "bottleneck_size": _COUNT,
    "compression": _PROBABILITY,
    "dense_cardinality": _COUNT,
    "dropout": _Rule(float, "a number in [0, 1)", lambda v: 0 <= v < 1),
    "survival": _enum_rule(Survival),
    "survival_prob": _PROBABILITY,
}
_INPUT_RULES: dict[str, _Rule] = {
    "resolution": _Rule(int, f"an integer >= {MIN_RESOLUTION}", lambda v: v >= MIN_RESOLUTION),
    "channels": _COUNT,
    "classes": _COUNT,
}
_TOP_KEYS = ("input", "stages") + tuple(k for k in _RULES if k not in ("depth", "width", "stride"))
_STAGE_KEYS = ("depth", "width", "stride")

# Arch's defaults for the dimensions a file may leave out; the others are required where they apply.
_DEFAULTS: dict[str, Any] = {
    "stem": Stem.IMAGENET, "stem_width": 64, "block": Block.BOTTLENECK, "shortcut": Shortcut.IDENTITY,
    "order": Order.POST, "stride": 1, "cardinality": 1, "base_width": 64, "width_multiplier": 1.0,
    "dense_cardinality": 1, "dropout": 0.0, "survival": Survival.NONE,
}

_RESIDUAL = "shortcut not dense"
_RESIDUAL_BOTTLENECK = f"{_RESIDUAL}, bottleneck"
_DENSE = "shortcut dense"


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` may be overridden by design
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float)):
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} is given twice", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep)


def _load_yaml(path: Path) -> Any:
    """The parsed file; a missing file or bad YAML is a one-line ValueError with the line number."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{path}: search space file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read the search space file ({e})") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader: builds plain data only
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        detail = e.problem or ""
        if e.context and e.context_mark:
            # The parser notices an unclosed bracket only lines later; say where the construct began.
            detail += f" ({e.context} from line {e.context_mark.line + 1})"
        raise ValueError(f"{path}: {where}invalid YAML: {' '.join(detail.split())}") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: invalid YAML: {' '.join(str(e).split())}") from None


class _Reader:
    """Checks a parsed file piece by piece; every failure is one line naming file, key path and value."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, message: str) -> NoReturn:
        raise ValueError(f"{self.source}: {where}: {message}")

    def mapping(self, where: str, raw: Any, allowed: Sequence[str]) -> Mapping[str, Any]:
        if not isinstance(raw, dict):
            self.fail(where or "top level", f"got {raw!r}, expected a mapping with keys {', '.join(allowed)}")
        for key in raw:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                self.fail(_join(where, key), f"unknown key {key!r}; {hint}allowed: {', '.join(allowed)}")
        return raw

    def value(self, where: str, raw: Any, rule: _Rule) -> Any:
        kind = rule.kind
        # YAML's true/false are no numbers, though Python's bool is an int.
        number = isinstance(raw, (int, float)) and not isinstance(raw, bool)
        if issubclass(kind, enum.Enum):
            if isinstance(raw, str) and raw in {m.value for m in kind}:
                return kind(raw)
        elif kind is int:
            if number and isinstance(raw, int) and rule.ok(raw):
                return raw
        elif number and math.isfinite(raw) and rule.ok(float(raw)):
            return float(raw)
        self.fail(where, f"got {raw!r}, expected {rule.allowed}")

    def domain(self, where: str, raw: Any, rule: _Rule) -> Domain:
        if isinstance(raw, list):
            if not raw:
                self.fail(where, f"got an empty list, expected one or more of {rule.allowed}")
            values = tuple(self.value(f"{where}[{i}]", v, rule) for i, v in enumerate(raw))
            for i, v in enumerate(values):
                if v in values[:i]:
                    self.fail(f"{where}[{i}]", f"{raw[i]!r} is listed twice")
            return Choices(values)
        if not isinstance(raw, dict):
            return Choices((self.value(where, raw, rule),))
        if issubclass(rule.kind, enum.Enum):
            self.fail(where, f"got {raw!r}: a {{min, max}} range needs numbers; give one or a list of "
                             f"{rule.allowed}")
        keys = ("min", "max", "step") if rule.kind is int else ("min", "max")
        self.mapping(where, raw, keys)
        if "min" not in raw or "max" not in raw:
            self.fail(where, f"got {raw!r}, a range needs both min and max")
        low = self.value(f"{where}.min", raw["min"], rule)
        high = self.value(f"{where}.max", raw["max"], rule)
        if low > high:
            self.fail(where, f"got {raw!r}: min {low} is above max {high}")
        if rule.kind is float:
            return Choices((low,)) if low == high else FloatRange(low, high)
        step = self.value(f"{where}.step", raw.get("step", 1), _COUNT)
        if (high - low) % step:
            self.fail(where, f"got {raw!r}: max - min = {high - low} is no multiple of step {step}")
        return Choices((low,)) if low == high else IntRange(low, high, step)


def _join(parent: str, key: Any) -> str:
    return f"{parent}.{key}" if parent else str(key)


def _read_stages(r: _Reader, stages: Any, residual: bool) -> list[Dimension]:
    """Each stage's depth, stride and (for residual shortcuts) width dimensions."""
    if not isinstance(stages, list) or not 1 <= len(stages) <= MAX_STAGES:
        r.fail("stages", f"got {stages!r}, expected a list of 1 to {MAX_STAGES} stages")
    dims = []
    for i, raw in enumerate(stages):
        where = f"stages[{i}]"
        stage = r.mapping(where, raw, _STAGE_KEYS)
        if "depth" not in stage:
            r.fail(f"{where}.depth", f"missing; expected {_COUNT.allowed}, a list or a range")
        dims.append(Dimension(f"{where}.depth", r.domain(f"{where}.depth", stage["depth"], _COUNT),
                              "always", False, FlopsTrend.INCREASING))
        stride = (r.domain(f"{where}.stride", stage["stride"], _RULES["stride"]) if "stride" in stage
                  else Choices((_DEFAULTS["stride"],)))
        dims.append(Dimension(f"{where}.stride", stride, "always", False, FlopsTrend.DECREASING))
        if not residual and "width" in stage:
            r.fail(f"{where}.width", "never applies, because shortcut is always 'dense' (its width "
                                     "comes from growth_rate); remove it")
        if residual:
            if "width" not in stage:
                r.fail(f"{where}.width", f"missing; shortcut can be identity or gated, which needs "
                                         f"{_COUNT.allowed}, a list or a range")
            dims.append(Dimension(f"{where}.width", r.domain(f"{where}.width", stage["width"], _COUNT),
                                  _RESIDUAL, False, FlopsTrend.INCREASING))
    return dims


# -- the space ------------------------------------------------------------------------------------


class SearchSpace:
    """A set of `Arch` points for one input size: walk it with `suggest`, `sample` or `contains`."""

    def __init__(self, dims: Sequence[Dimension], num_stages: int, *, resolution: int, in_channels: int,
                 num_classes: int, source: str) -> None:
        self._dims = {d.name: d for d in dims}
        self._num_stages = num_stages
        self._resolution = resolution
        self._in_channels = in_channels
        self._num_classes = num_classes
        self.source = source

    # -- loading ------------------------------------------------------------------------------------

    @classmethod
    def from_yaml(cls, path: str | Path) -> SearchSpace:
        """Read a search-space file (format: search_spaces/resnet_family.yaml); errors are ValueErrors."""
        path = Path(path)
        data = _load_yaml(path)
        if data is None:
            raise ValueError(f"{path}: the file is empty; a search space needs at least 'input' and 'stages'")
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<dict>") -> SearchSpace:
        """A space from the parsed YAML mapping; `source` names it in error messages."""
        r = _Reader(source)
        top = r.mapping("", data, _TOP_KEYS)
        for key in ("input", "stages"):
            if key not in top:
                r.fail(key, "missing; every search space needs 'input' and 'stages'")
        inp = r.mapping("input", top["input"], tuple(_INPUT_RULES))
        for key, rule in _INPUT_RULES.items():
            if key not in inp:
                r.fail(f"input.{key}", f"missing; expected {rule.allowed}")
        resolution, channels, classes = (r.value(f"input.{k}", inp[k], rule)
                                         for k, rule in _INPUT_RULES.items())

        def domain(key: str) -> Domain:
            if key in top:
                return r.domain(key, top[key], _RULES[key])
            if key in _DEFAULTS:
                return Choices((_DEFAULTS[key],))
            r.fail(key, f"missing; expected {_RULES[key].allowed}, a list or a range")

        def never(keys: Sequence[str], reason: str) -> None:
            for key in keys:
                if key in top:
                    r.fail(key, f"never applies, because {reason}; remove it")

        def dim(name: str, applies: str, trend: FlopsTrend, *, branches: bool = False) -> Dimension:
            return Dimension(name, domain(name), applies, branches, trend)

        stem, block, shortcut, survival = (domain(k) for k in ("stem", "block", "shortcut", "survival"))
        residual = any(s is not Shortcut.DENSE for s in shortcut.options())
        dense = Shortcut.DENSE in shortcut.options()
        bottleneck = Block.BOTTLENECK in block.options()
        dims = [
            Dimension("stem", stem, "always", False, FlopsTrend.KIND),
            dim("stem_width", "always", FlopsTrend.INCREASING),
            Dimension("block", block, "always", True, FlopsTrend.KIND),
            Dimension("shortcut", shortcut, "always", True, FlopsTrend.KIND),
            dim("order", "always", FlopsTrend.KIND),
        ]
        dims += _read_stages(r, top["stages"], residual)

        if not residual:
            never(("width_multiplier", "cardinality", "base_width"), "shortcut is always 'dense'")
        elif not bottleneck:
            dims.append(dim("width_multiplier", _RESIDUAL, FlopsTrend.INCREASING))
            never(("cardinality", "base_width"), "block is never 'bottleneck'")
        else:
            dims.append(dim("width_multiplier", _RESIDUAL, FlopsTrend.INCREASING))
            dims.append(dim("cardinality", _RESIDUAL_BOTTLENECK, FlopsTrend.KIND, branches=True))
            if dims[-1].domain.high > 1:
                dims.append(dim("base_width", f"{_RESIDUAL_BOTTLENECK}, cardinality > 1", FlopsTrend.KIND))
            else:
                never(("base_width",), "cardinality is never > 1 (it is 64 for cardinality 1)")
        if dense:
            dims += [dim(k, _DENSE, FlopsTrend.INCREASING)
                     for k in ("growth_rate", "bottleneck_size", "compression")]
            if bottleneck:
                dims.append(dim("dense_cardinality", f"{_DENSE}, bottleneck", FlopsTrend.KIND))
            else:
                never(("dense_cardinality",), "block is never 'bottleneck'")
        else:
            never(("growth_rate", "bottleneck_size", "compression", "dense_cardinality"),
                  "shortcut is never 'dense'")
        dims.append(dim("dropout", "always", FlopsTrend.NONE))
        dims.append(Dimension("survival", survival, "always", True, FlopsTrend.NONE))
        if any(s is not Survival.NONE for s in survival.options()):
            dims.append(dim("survival_prob", "survival not none", FlopsTrend.NONE))
        else:
            never(("survival_prob",), "survival is always 'none'")

        space = cls(dims, len(top["stages"]), resolution=resolution, in_channels=channels,
                    num_classes=classes, source=source)
        space._check_combinations(r)
        return space

    def _check_combinations(self, r: _Reader) -> None:
        """Refuse spaces where some combination of allowed values is an invalid `Arch` (see module doc)."""
        d = self._dims
        strides = [d[f"stages[{i}].stride"].domain for i in range(self._num_stages)]
        if "growth_rate" in d:
            if strides[0].high != 1:
                r.fail("stages[0].stride", f"allows {strides[0]}, but shortcut can be 'dense', whose "
                                           "first stage must have stride 1 (it downsamples in its "
                                           "transitions); use 1")
            reduction = (4 if Stem.IMAGENET in d["stem"].domain.options() else 1) * math.prod(
                s.high for s in strides)
            if reduction > MIN_RESOLUTION:
                r.fail("stages", f"strides allow x{reduction} downsampling, but a dense net's average pools "
                                 f"allow at most x{MIN_RESOLUTION}; make fewer strides 2 or drop 'dense'")
        if "dense_cardinality" in d:
            for g in d["growth_rate"].domain.options():
                for c in d["dense_cardinality"].domain.options():
                    if g % c:
                        r.fail("dense_cardinality", f"{c} does not divide growth_rate {g}; every dense "
                                                    "cardinality must divide every growth rate")
        if "base_width" in d:
            # Arch's formula for the group width; it only grows with each factor, so the minima decide.
            planes = min(d[f"stages[{i}].width"].domain.low for i in range(self._num_stages))
            multiplier, base = d["width_multiplier"].domain.low, d["base_width"].domain.low
            if int(planes * multiplier * base / 64) < 1:
                r.fail("base_width", f"{base} with width_multiplier {multiplier} and stage width {planes} "
                                     "gives 0-channel groups when cardinality > 1 (needs width * "
                                     "width_multiplier * base_width >= 64); raise the smallest of them")

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

    def _walk(self, pick: Callable[[Dimension], Any]) -> Arch:
        """The Arch whose every applicable dimension takes the value `pick` gives it."""
        d = self._dims
        stem, stem_width = pick(d["stem"]), pick(d["stem_width"])
        block, shortcut, order = pick(d["block"]), pick(d["shortcut"]), pick(d["order"])
        dense = shortcut is Shortcut.DENSE
        stages = []
        for i in range(self._num_stages):
            depth, stride = pick(d[f"stages[{i}].depth"]), pick(d[f"stages[{i}].stride"])
            stages.append(StageSpec(depth, stride, None if dense else pick(d[f"stages[{i}].width"])))
        extra: dict[str, Any] = {}
        if dense:
            extra.update(growth_rate=pick(d["growth_rate"]), bottleneck_size=pick(d["bottleneck_size"]),
                         compression=pick(d["compression"]))
            if block is Block.BOTTLENECK:
                extra["cardinality"] = pick(d["dense_cardinality"])
        else:
            extra["width_multiplier"] = pick(d["width_multiplier"])
            if block is Block.BOTTLENECK:
                extra["cardinality"] = pick(d["cardinality"])
                if extra["cardinality"] > 1:
                    extra["base_width"] = pick(d["base_width"])
        extra["dropout"] = pick(d["dropout"])
        extra["survival"] = pick(d["survival"])
        if extra["survival"] is not Survival.NONE:
            extra["survival_prob"] = pick(d["survival_prob"])
        return Arch(stages=tuple(stages), block=block, shortcut=shortcut, order=order, stem=stem,
                    stem_width=stem_width, **extra)

    def suggest(self, trial: Suggester) -> Arch:
        """An Arch from an Optuna trial, define-by-run: only applicable, unfixed dimensions are suggested.

        `suggest(optuna.trial.FixedTrial(trial.params))` rebuilds the Arch of a finished trial.
        """

        def pick(dim: Dimension) -> Any:
            return dim.domain.first if dim.domain.fixed else dim.domain.suggest(trial, dim.name)

        return self._walk(pick)

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

    def contains(self, arch: Arch) -> bool:
        """Whether `arch` is in the space: every field allowed, inapplicable ones at their defaults."""
        return self._asked(arch) is not None

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
        values = _values_of(arch)
        asked: list[Dimension] = []

        def replay(dim: Dimension) -> Any:
            if not dim.domain.contains(values[dim.name]):
                raise _Outside
            asked.append(dim)
            return values[dim.name]

        try:
            rebuilt = self._walk(replay)
        except _Outside:
            return None
        # Comparing catches the fields no dimension asks for, e.g. base_width 4 with cardinality 1.
        return asked if rebuilt == arch else None

    def _runs(self, options: Callable[[Dimension], Sequence[Any]]
              ) -> Iterator[tuple[Arch, list[Dimension]]]:
        """Each walk where every dimension may take `options(dim)`, depth first, with the dimensions asked."""
        path: list[int] | None = []
        while path is not None:
            run = _Run(path, options)
            yield self._walk(run), run.asked
            path = run.next_path()

    def size(self) -> int:
        """The exact number of architectures; each continuous dimension counts as one value."""
        total = 0
        # Enumerate only what changes which dimensions apply; the rest multiply independently.
        for _, asked in self._runs(lambda d: d.domain.options() if d.branches else (d.domain.first,)):
            total += math.prod(d.domain.count or 1 for d in asked if not d.branches)
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
        def options(dim: Dimension) -> Sequence[Any]:
            if dim.trend is FlopsTrend.KIND:
                return dim.domain.options()
            if dim.trend is FlopsTrend.NONE:
                return (dim.domain.first,)
            small = (dim.trend is FlopsTrend.INCREASING) == lowest
            return (dim.domain.low if small else dim.domain.high,)

        counted = [(self.flops(arch, count), arch) for arch, _ in self._runs(options)]
        flops, arch = (min if lowest else max)(counted, key=lambda pair: pair[0])
        return flops, arch, len(counted)


class _Run:
    """One walk of a depth-first enumeration: replays a path of value indices, then takes first values."""

    def __init__(self, path: list[int], options: Callable[[Dimension], Sequence[Any]]) -> None:
        self._path = path
        self._options = options
        self._taken: list[int] = []
        self._widths: list[int] = []
        self.asked: list[Dimension] = []

    def __call__(self, dim: Dimension) -> Any:
        values = self._options(dim)
        k = len(self._taken)
        i = self._path[k] if k < len(self._path) else 0
        self._taken.append(i)
        self._widths.append(len(values))
        self.asked.append(dim)
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


def _values_of(arch: Arch) -> dict[str, Any]:
    """Every dimension's value in `arch`, keyed by dimension name."""
    values: dict[str, Any] = {
        "stem": arch.stem, "stem_width": arch.stem_width, "block": arch.block, "shortcut": arch.shortcut,
        "order": arch.order, "width_multiplier": arch.width_multiplier, "cardinality": arch.cardinality,
        "base_width": arch.base_width, "growth_rate": arch.growth_rate,
        "bottleneck_size": arch.bottleneck_size, "compression": arch.compression,
        "dense_cardinality": arch.cardinality, "dropout": arch.dropout, "survival": arch.survival,
        "survival_prob": arch.survival_prob,
    }
    for i, s in enumerate(arch.stages):
        values[f"stages[{i}].depth"], values[f"stages[{i}].stride"] = s.depth, s.stride
        values[f"stages[{i}].width"] = s.width
    return values
