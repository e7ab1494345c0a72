"""The one table of a search space's dimensions, `_SPECS`, and what it answers.

Each row holds a dimension's YAML key and value rule, when it applies (a conjunction of `_When` conditions
on values picked before it), its FLOP trend, the uniform scale that moves it (widths and depths) and the
`Arch` field it sets. Reading a space file, `SearchSpace`'s walks and the questions asked without a space
(`applicable`, `is_size`, `where`, `inapplicable`) all follow it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import MISSING, dataclass, fields
from typing import Any, TypeVar

from resnas._arch import (
    MAX_BLOCKS,
    MAX_CLASSES,
    MAX_RESOLUTION,
    MAX_STAGES,
    MAX_WIDTH,
    MIN_RESOLUTION,
    Arch,
    Block,
    Order,
    Shortcut,
    StageSpec,
    Stem,
    Survival,
    brief,
)
from resnas._domains import Choices, Domain, FloatRange, FlopsTrend, IntRange, plain_value
from resnas._space_moves import Scale
from resnas._space_yaml import Reader, Rule, enum_rule


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
    """One dimension's rules: YAML key, value rule, FLOP trend, when it applies, its scale, the Arch field."""

    key: str  # the YAML key (within each stage when `stage`), and the dimension's name
    rule: Rule
    trend: FlopsTrend
    when: tuple[_When, ...] = ()  # all must hold; each names a dimension whose `when` is a prefix of these
    scale: Scale | None = None  # the uniform scale that moves it: a size (a width or a depth)
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
    _Spec("stem_width", _WIDTH, FlopsTrend.INCREASING, scale=Scale.WIDTH),
    _Spec("block", enum_rule(Block), FlopsTrend.KIND),
    _Spec("shortcut", enum_rule(Shortcut), FlopsTrend.KIND),
    _Spec("order", enum_rule(Order), FlopsTrend.KIND),
    _Spec("depth", _DEPTH, FlopsTrend.INCREASING, scale=Scale.DEPTH, stage=True),
    _Spec("stride", Rule(int, "1 or 2", lambda v: v in (1, 2)), FlopsTrend.DECREASING, stage=True),
    # A dense net's width is its growth rate: both scale with the widths.
    _Spec("width", _WIDTH, FlopsTrend.INCREASING, (_RESIDUAL,), Scale.WIDTH, stage=True,
          note="its width comes from growth_rate"),
    _Spec("width_multiplier", Rule(float, f"a number > 0 and <= {MAX_WIDTH}", lambda v: 0 < v <= MAX_WIDTH),
          FlopsTrend.INCREASING,
          (_RESIDUAL,)),
    _Spec("cardinality", _WIDTH, FlopsTrend.KIND, (_RESIDUAL, _BOTTLENECK)),
    _Spec("base_width", _WIDTH, FlopsTrend.KIND, (_RESIDUAL, _BOTTLENECK, _GROUPED),
          note="it is 64 for cardinality 1"),
    # Every dense cardinality must divide every growth rate, hence check_all.
    _Spec("growth_rate", _WIDTH, FlopsTrend.INCREASING, (_DENSE,), Scale.WIDTH, check_all=True),
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
_TOP_KEYS = ("input", "stages") + tuple(s.key for s in _SPECS if not s.stage)
_STAGE_KEYS = tuple(s.key for s in _STAGE_SPECS)
_M = TypeVar("_M", bound=Mapping[str, Any])


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

    def holder(self, top: _M, stages: Sequence[_M]) -> _M:
        """The mapping of a space file that holds its key: the top level, or its stage's."""
        return top if self.stage is None else stages[self.stage]


def _layout(num_stages: int) -> list[_Slot]:
    """Every spec in table order, the per-stage ones repeated stage by stage where the first one stands."""
    slots: list[_Slot] = []
    for spec in _SPECS:
        if not spec.stage:
            slots.append(_Slot(spec.key, spec, None))
        elif spec is _STAGE_SPECS[0]:
            slots += [_Slot(f"stages[{i}].{s.key}", s, i) for i in range(num_stages) for s in _STAGE_SPECS]
    return slots


_BY_NAME = {slot.name: slot for slot in _layout(MAX_STAGES)}


def walk(slots: Iterable[_Slot], pick: Callable[[_Slot], Any]) -> dict[str, Any]:
    """The value `pick` gives each slot whose conditions the values picked before it meet, by name."""
    picked: dict[str, Any] = {}
    for slot in slots:
        if slot.spec.applies_to(picked):
            picked[slot.name] = pick(slot)
    return picked


# -- questions without a space ----------------------------------------------------------------------


def applicable(arch: Arch) -> dict[str, Any]:
    """Every dimension that applies to `arch`, fixed or not, in table order, with its Optuna value."""
    picked = walk(_layout(len(arch.stages)), lambda slot: slot.read(arch))
    return {name: plain_value(value) for name, value in picked.items()}


def is_size(name: str) -> bool:
    """Whether dimension `name` is a size: a width or a depth, which a uniform `Scale` moves."""
    return _BY_NAME[name].spec.scale is not None


def locate(raw: dict[str, Any], name: str) -> tuple[dict[str, Any], str]:
    """The mapping of a space file's data `raw` that holds dimension `name`, and its key there."""
    slot = _BY_NAME[name]
    return slot.holder(raw, raw["stages"]), slot.spec.key


def inapplicable(raw: Mapping[str, Any]) -> list[str]:
    """The dimensions a valid space file's data `raw` gives where they never apply (as after values of the
    dimensions they depend on were removed), in table order; missing keys take Arch's defaults."""
    stages = raw["stages"]
    return [slot.name for slot, read in _read_slots(Reader("the space"), raw, stages)
            if isinstance(read, str) and slot.spec.key in slot.holder(raw, stages)]


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


def _read_slots(r: Reader, top: Mapping[str, Any],
                stages: Sequence[Mapping[str, Any]]) -> Iterator[tuple[_Slot, Domain | str]]:
    """Each slot in table order with its domain (given, else the default), or why it never applies."""
    domains: dict[str, Domain] = {}
    for slot in _layout(len(stages)):
        spec = slot.spec
        given = slot.holder(top, stages)
        reason = spec.never(domains)
        if reason is not None:
            yield slot, reason
            continue
        if spec.key in given:
            domains[slot.name] = _read_domain(r, slot.name, given[spec.key], spec.rule)
        elif spec.default is not None:
            domains[slot.name] = Choices((spec.default,))
        else:
            applies = f" (it applies when {spec.applies})" if spec.when else ""
            r.fail(slot.name, f"missing; expected {spec.rule.allowed}, a list or a range{applies}")
        yield slot, domains[slot.name]


def _read_dims(r: Reader, top: Mapping[str, Any], stages: Sequence[Mapping[str, Any]]) -> list[Dimension]:
    """Each slot's Dimension where it can apply, in table order; a key where it never applies is an error."""
    dims: list[Dimension] = []
    for slot, read in _read_slots(r, top, stages):
        spec = slot.spec
        if isinstance(read, str):
            if spec.key in slot.holder(top, stages):
                r.fail(slot.name, f"never applies, because {read}; remove it")
            continue
        dims.append(Dimension(slot.name, read, spec.applies, spec.branches, spec.trend))
    return dims

