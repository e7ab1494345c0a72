"""The architecture spec: one immutable, validated description of a ResNet-family network."""

from __future__ import annotations

import enum
import json
import math
import reprlib
from dataclasses import dataclass, fields
from typing import Any, Mapping

from resnas._errors import ConfigError


class Stem(str, enum.Enum):
    """Input stem: ImageNet (7x7/2 conv, BN, ReLU, 3x3/2 max-pool) or CIFAR (3x3/1 conv)."""

    IMAGENET = "imagenet"
    CIFAR = "cifar"


class Block(str, enum.Enum):
    """Residual unit: basic (3x3, 3x3) or bottleneck (1x1, 3x3, 1x1, expansion 4)."""

    BASIC = "basic"
    BOTTLENECK = "bottleneck"


class Shortcut(str, enum.Enum):
    """How a block's input reaches its output: added, gated (Highway) or concatenated (DenseNet)."""

    IDENTITY = "identity"
    GATED = "gated"
    DENSE = "dense"


class Order(str, enum.Enum):
    """post: conv-BN-ReLU, ReLU after the merge (He 2015); pre: BN-ReLU-conv (He 2016)."""

    POST = "post"
    PRE = "pre"


class Survival(str, enum.Enum):
    """Stochastic-depth survival schedule over all blocks of the net (Huang et al. 2016)."""

    NONE = "none"
    UNIFORM = "uniform"
    LINEAR = "linear"


BOTTLENECK_EXPANSION = 4
MAX_STAGES = 8
# The stem and the dense transitions' average pools must leave at least a 1x1 map at this input size.
MIN_RESOLUTION = 32
# Input side length and classifier outputs at most: 256x and 800x ImageNet's (256 px, 21841 classes in
# ImageNet-21k); past them FLOP counts stop fitting a float and the head alone exceeds any memory.
MAX_RESOLUTION = 2**16
MAX_CLASSES = 2**24
# Channels of any one conv (stem, stage, inner, growth, group): the classics reach 2208 (densenet161's
# last layer), the widest corner of search_spaces/ 49152 (768 x2 in 64 groups of 32 x2); one 3x3 conv
# 65536 channels wide holds 38 G weights, so wider is a typo (and ints past it overflow torch's sizes).
MAX_WIDTH = 2**16
# Blocks (or dense layers) in the whole net: over 3x ResNet-1202's 600, the deepest network published;
# building takes about a second per thousand blocks and torch.export minutes, so deeper is a typo.
MAX_BLOCKS = 2000
# Longest arch JSON text read: a real one is under 1 KB; this keeps a wrong file from filling memory.
MAX_JSON_CHARS = 1_000_000


class _Brief(reprlib.Repr):
    """reprlib's bounded repr, also for integers too long for repr (Python refuses over 4300 digits)."""

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:
            return f"<an integer of {x.bit_length()} bits>"
        return super().repr_int(x, level)


_BRIEF = _Brief()
_BRIEF.maxstring = _BRIEF.maxother = 60


def brief(value: Any) -> str:
    """`value`'s repr for a one-line message: long, deeply nested or huge values abbreviated."""
    return _BRIEF.repr(value)


def label(key: Any) -> str:
    """A key for a message: itself when it is short printable text, else its brief repr."""
    return key if isinstance(key, str) and key.isprintable() and len(key) <= 60 else brief(key)


def _enum(cls: type[enum.Enum], name: str, value: Any) -> Any:
    if isinstance(value, cls):
        return value
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in cls)
        raise ConfigError(f"{name}: {brief(value)} is not one of {allowed}") from None


def is_integer(value: Any) -> bool:
    """An int, not a bool (which Python counts as one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_finite(value: Any) -> bool:
    """A real, finite number: not a bool, nan or inf, nor an int too large for a float (float() overflows)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < 1e300 \
        and math.isfinite(value)


def _int(name: str, value: Any, minimum: int, maximum: int) -> int:
    if not is_integer(value):
        raise ConfigError(f"{name}: expected an integer, got {brief(value)}")
    if value < minimum:
        raise ConfigError(f"{name}: {brief(value)} must be >= {minimum}")
    if value > maximum:
        raise ConfigError(f"{name}: {brief(value)} must be <= {maximum}")
    return value


def _float(name: str, value: Any) -> float:
    if not is_finite(value):
        raise ConfigError(f"{name}: expected a finite number, got {brief(value)}")
    return float(value)


@dataclass(frozen=True)
class StageSpec:
    """One stage: `depth` blocks (or dense layers), the first with `stride`; `width` = planes (residual only)."""

    depth: int
    stride: int = 1
    width: int | None = None

    def __post_init__(self) -> None:
        _int("depth", self.depth, 1, MAX_BLOCKS)
        if not is_integer(self.stride) or self.stride not in (1, 2):
            raise ConfigError(f"stride: {brief(self.stride)} must be 1 or 2")
        if self.width is not None:
            _int("width", self.width, 1, MAX_WIDTH)

    def to_dict(self) -> dict[str, Any]:
        return {"depth": self.depth, "stride": self.stride, "width": self.width}


@dataclass(frozen=True)
class Arch:
    """A ResNet-family network: stem, stages, and how every block is built.

    Residual nets (identity or gated shortcut) use per-stage `width` (torchvision's `planes`),
    `cardinality`, `base_width` and `width_multiplier`. Dense nets use `growth_rate`,
    `bottleneck_size` (the 1x1 conv makes bottleneck_size * growth_rate channels) and `compression`
    (transitions between stages keep floor(compression * C) channels); stage widths must be None.
    """

    stages: tuple[StageSpec, ...]
    block: Block = Block.BOTTLENECK
    shortcut: Shortcut = Shortcut.IDENTITY
    order: Order = Order.POST
    stem: Stem = Stem.IMAGENET
    stem_width: int = 64
    cardinality: int = 1
    base_width: int = 64
    width_multiplier: float = 1.0
    dropout: float = 0.0
    growth_rate: int | None = None
    bottleneck_size: int | None = None
    compression: float | None = None
    survival: Survival = Survival.NONE
    survival_prob: float = 1.0

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "block", _enum(Block, "block", self.block))
        set_(self, "shortcut", _enum(Shortcut, "shortcut", self.shortcut))
        set_(self, "order", _enum(Order, "order", self.order))
        set_(self, "stem", _enum(Stem, "stem", self.stem))
        set_(self, "survival", _enum(Survival, "survival", self.survival))
        stages = self.stages
        if not isinstance(stages, (tuple, list)) or not stages:
            raise ConfigError(f"stages: expected a non-empty list of stages, got {brief(stages)}")
        if len(stages) > MAX_STAGES:
            raise ConfigError(f"stages: {len(stages)} stages, at most {MAX_STAGES} allowed")
        parsed = []
        for i, s in enumerate(stages):
            try:
                parsed.append(s if isinstance(s, StageSpec) else StageSpec(**s))
            except TypeError as e:
                raise ConfigError(f"stages[{i}]: {e}") from None
            except ValueError as e:
                raise ConfigError(f"stages[{i}].{e}") from None
        set_(self, "stages", tuple(parsed))
        if self.num_blocks > MAX_BLOCKS:
            depths = "+".join(str(s.depth) for s in parsed)
            raise ConfigError(f"stages: {depths} = {self.num_blocks} blocks, at most {MAX_BLOCKS} in the whole "
                              "net (ResNet-1202 has 600); use fewer blocks per stage")
        _int("stem_width", self.stem_width, 1, MAX_WIDTH)
        _int("cardinality", self.cardinality, 1, MAX_WIDTH)
        _int("base_width", self.base_width, 1, MAX_WIDTH)
        set_(self, "width_multiplier", _float("width_multiplier", self.width_multiplier))
        set_(self, "dropout", _float("dropout", self.dropout))
        set_(self, "survival_prob", _float("survival_prob", self.survival_prob))
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout: {self.dropout} must be in [0, 1)")
        if not 0.0 < self.survival_prob <= 1.0:
            raise ConfigError(f"survival_prob: {self.survival_prob} must be in (0, 1]")
        if self.survival is Survival.NONE and self.survival_prob != 1.0:
            raise ConfigError(
                f"survival_prob: {self.survival_prob} needs a survival schedule ('uniform' or 'linear'); "
                "with survival 'none' it must be 1.0"
            )
        if self.shortcut is Shortcut.DENSE:
            self._validate_dense()
        else:
            self._validate_residual()

    def _validate_dense(self) -> None:
        for name in ("growth_rate", "bottleneck_size", "compression"):
            if getattr(self, name) is None:
                raise ConfigError(f"{name}: required for shortcut 'dense'")
        _int("growth_rate", self.growth_rate, 1, MAX_WIDTH)
        _int("bottleneck_size", self.bottleneck_size, 1, MAX_WIDTH)
        inner = (self.bottleneck_size or 0) * (self.growth_rate or 0)
        if inner > MAX_WIDTH:
            raise ConfigError(f"bottleneck_size: {self.bottleneck_size} x growth_rate {self.growth_rate} gives a "
                              f"{inner}-channel 1x1 conv, at most {MAX_WIDTH}; lower either")
        compression = _float("compression", self.compression)
        object.__setattr__(self, "compression", compression)
        if not 0.0 < compression <= 1.0:
            raise ConfigError(f"compression: {compression} must be in (0, 1]")
        for i, s in enumerate(self.stages):
            if s.width is not None:
                raise ConfigError(
                    f"stages[{i}].width: {s.width} has no meaning for shortcut 'dense' "
                    "(its width comes from growth_rate); use null"
                )
        if self.stages[0].stride != 1:
            raise ConfigError("stages[0].stride: a dense net's first stage must have stride 1 "
                             "(downsampling happens in the transitions between stages)")
        if self.width_multiplier != 1.0:
            raise ConfigError(f"width_multiplier: {self.width_multiplier} applies to residual nets; "
                             "a dense net's width is set by growth_rate, so it must be 1.0")
        if self.base_width != 64:
            raise ConfigError(f"base_width: {self.base_width} applies to residual nets; "
                             "a dense net's group width is growth_rate / cardinality, so it must be 64")
        if self.cardinality > 1:
            inner = self.bottleneck_size * self.growth_rate
            if self.block is Block.BASIC:
                raise ConfigError(f"cardinality: {self.cardinality} needs block 'bottleneck'; a basic dense "
                                 "layer's single 3x3 sees a varying input width, use cardinality 1")
            if self.growth_rate % self.cardinality or inner % self.cardinality:
                raise ConfigError(f"cardinality: {self.cardinality} must divide growth_rate "
                                 f"({self.growth_rate}) and bottleneck_size * growth_rate ({inner})")
        # Each dense transition floors the map with a stride-sized average pool.
        reduction = (4 if self.stem is Stem.IMAGENET else 1) * math.prod(s.stride for s in self.stages)
        if reduction > MIN_RESOLUTION:
            raise ConfigError(
                f"stages: total downsampling x{reduction} would pool a {MIN_RESOLUTION}x{MIN_RESOLUTION} "
                f"input to nothing; use fewer stride-2 stages (at most x{MIN_RESOLUTION} in all)"
            )

    def _validate_residual(self) -> None:
        kind = self.shortcut.value
        for name in ("growth_rate", "bottleneck_size", "compression"):
            if getattr(self, name) is not None:
                raise ConfigError(f"{name}: only applies to shortcut 'dense', not {kind!r}; use null")
        for i, s in enumerate(self.stages):
            if s.width is None:
                raise ConfigError(f"stages[{i}].width: required for shortcut {kind!r}")
        # Above MAX_WIDTH every inner width would be too (stage widths are >= 1).
        if self.width_multiplier <= 0:
            raise ConfigError(f"width_multiplier: {self.width_multiplier} must be > 0")
        if self.width_multiplier > MAX_WIDTH:
            raise ConfigError(f"width_multiplier: {self.width_multiplier:g} must be <= {MAX_WIDTH}")
        if self.block is Block.BASIC and (self.cardinality != 1 or self.base_width != 64):
            raise ConfigError(
                f"cardinality: {self.cardinality} with base_width {self.base_width} needs block "
                "'bottleneck'; a basic block has no inner 3x3 to group (ResNeXt, Xie et al. 2017), "
                "use cardinality 1 and base_width 64"
            )
        for i, (planes, inner, out) in enumerate(self.residual_widths()):
            if inner < self.cardinality or out < 1:
                raise ConfigError(
                    f"stages[{i}].width: {planes} gives a {inner}-channel inner conv, "
                    f"too narrow for cardinality {self.cardinality}"
                )
            if inner > MAX_WIDTH:
                raise ConfigError(
                    f"stages[{i}].width: {planes} gives a {inner}-channel inner conv (with width_multiplier "
                    f"{self.width_multiplier:g}, cardinality {self.cardinality}, base_width {self.base_width}), "
                    f"at most {MAX_WIDTH}; narrow it"
                )

    # -- derived quantities shared by build() and count() -------------------------------------------

    def residual_widths(self) -> list[tuple[int, int, int]]:
        """Per stage (planes, inner width, output width) of a residual net, as torchvision computes them."""
        widths = []
        for s in self.stages:
            planes = s.width or 0  # never None here: validated for residual nets
            if self.block is Block.BASIC:
                inner = out = max(1, round(planes * self.width_multiplier))
            else:
                group = int(planes * self.width_multiplier * self.base_width / 64)
                inner, out = group * self.cardinality, planes * BOTTLENECK_EXPANSION
            widths.append((planes, inner, out))
        return widths

    @property
    def num_blocks(self) -> int:
        """L: residual blocks or dense layers in the whole net (the survival schedule's length)."""
        return sum(s.depth for s in self.stages)

    def survival_probs(self) -> list[float]:
        """p_l for l = 1..L: uniform p_L, or linear decay p_l = 1 - (l / L)(1 - p_L)."""
        n = self.num_blocks
        if self.survival is Survival.NONE:
            return [1.0] * n
        if self.survival is Survival.UNIFORM:
            return [self.survival_prob] * n
        return [1.0 - (l / n) * (1.0 - self.survival_prob) for l in range(1, n + 1)]

    def narrowed(self, factor: float) -> Arch:
        """The same network with every width (stem, stages, growth rate) scaled by `factor`: a cheap proxy.

        Widths round to the nearest integer, stay >= 1, keep ResNeXt groups at least one channel wide
        and dense growth rates a multiple of the cardinality.
        """
        if not 0.0 < factor <= 1.0:
            raise ConfigError(f"width factor: {factor} must be in (0, 1]")
        if factor == 1.0:
            return self
        stem = max(1, round(self.stem_width * factor))
        if self.shortcut is Shortcut.DENSE:
            card = self.cardinality
            growth = max(card, round((self.growth_rate or 0) * factor / card) * card)
            return self.replace(stem_width=stem, growth_rate=growth)
        # planes * width_multiplier * base_width / 64 must stay >= 1 so every group keeps a channel.
        floor = math.ceil(64 / (self.width_multiplier * self.base_width)) if self.block is Block.BOTTLENECK else 1
        stages = [dict(s.to_dict(), width=max(floor, round((s.width or 0) * factor))) for s in self.stages]
        return self.replace(stem_width=stem, stages=stages)

    # -- serialisation ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict; `Arch.from_dict(a.to_dict()) == a`."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if not f.init:
                continue
            v = getattr(self, f.name)
            if f.name == "stages":
                v = [s.to_dict() for s in v]
            elif isinstance(v, enum.Enum):
                v = v.value
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Arch:
        """Inverse of `to_dict`; unknown keys are errors."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"arch: expected a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls) if f.init}
        unknown = sorted((k for k in data if k not in known), key=str)
        if unknown:
            raise ConfigError(f"{label(unknown[0])}: unknown arch field; allowed: {', '.join(sorted(known))}")
        if "stages" not in data:
            raise ConfigError("stages: required")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Arch:
        """Parse and validate an arch JSON text; anything wrong with it is a one-line ConfigError."""
        if len(text) > MAX_JSON_CHARS:
            raise ConfigError(f"arch JSON: {len(text):,} characters, at most {MAX_JSON_CHARS:,}; "
                              "an arch JSON is a short mapping such as a run's best/arch.json")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"arch JSON: {e}") from None
        except RecursionError:
            raise ConfigError("arch JSON: nested too deeply to be an arch; an arch JSON is a mapping of "
                              "fields with a list of stage mappings") from None
        except ValueError as e:  # e.g. an integer of more than 4300 digits
            raise ConfigError(f"arch JSON: {' '.join(str(e).split())[:200]}") from None
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> Arch:
        """A copy with some fields changed (validated again)."""
        data = self.to_dict()
        data.update(changes)
        return Arch.from_dict(data)
