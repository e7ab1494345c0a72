"""Search spaces: which `Arch` points a search may propose, read from a commented YAML file.

One table, `resnas._space_table._SPECS`, holds every dimension's rules: its YAML key and value rule, when
it applies (a conjunction of conditions on values picked before it), its FLOP trend, its scale and the
`Arch` field it sets. Reading a file, every walk (suggest for an Optuna trial, sample with `random`,
contains, size, the exact FLOP range) and the check of a file's combinations all follow that table: a walk
asks a `pick` function for each dimension's value, in table order, only where the dimension applies; walks
differ only in `pick` (a sampler, a replay of a given Arch, or a depth-first enumeration).

Combinations that `Arch` would reject are refused when the file is loaded (`SearchSpace.from_dict`
names the offending values), never filtered at suggest time, so every walk yields a valid `Arch` and
every suggested parameter has a fixed distribution across trials, as Optuna's samplers need.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from resnas._arch import Arch, StageSpec, brief
from resnas._domains import FlopsTrend, Suggester, _RandomSuggester, plain_text, plain_value
from resnas._errors import ConfigError
from resnas._space_moves import Move, Scale
from resnas._space_table import _TOP_KEYS, Dimension, _layout, _read_dims, _read_input, _read_stages, walk
from resnas._space_yaml import Reader, load_yaml


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


@dataclass(frozen=True)
class FlopsRange:
    """The exact FLOP extremes of a space, the architectures reaching them, and how many were counted."""

    min_flops: int
    max_flops: int
    min_arch: Arch
    max_arch: Arch
    counted: int


# Walks in one enumeration (the checks on load, size, the FLOP range): the shipped spaces need about 100;
# each takes about 0.1 ms (0.6 ms counting FLOPs), so this bounds any of them to seconds.
MAX_WALKS = 10_000
# Other values tried per dimension when naming the culprits of an invalid combination.
_CULPRIT_TRIES = 64


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
                    found.append(f"{name} {plain_text(value)}")
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
        return walk(self._slots.values(), lambda slot: pick(self._dims[slot.name]))

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
            options = [plain_value(o) for o in domain.options()]
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
        moved = dict(params)
        for name, value in params.items():
            dim = self._dims[name]
            if self._slots[name].spec.scale is scale and dim.domain.count is not None and isinstance(value, int):
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
        return {name: plain_value(v) for name, v in values.items()}

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
