"""`build` and `count`: one walk over the spec (`_plan`) feeds both, so they cannot disagree."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import nn

from resnas._arch import (MAX_CLASSES, MAX_RESOLUTION, MAX_WIDTH, MIN_RESOLUTION, Arch, Order, Shortcut,
                          Stem as StemKind, brief)
from resnas._blocks import Cost, Head, Stage, Stem, Transition, block_kind, init_weights
from resnas._errors import ConfigError

# Parameters `build` allocates at most: 2.1 G float32 weights are 8.6 GB before gradients and optimizer
# state, over twice BiT's ResNet-152x4 (928 M), the largest ResNet published; the widest zoo network,
# wide_resnet101_2, has 127 M. Larger specs are typos that would exhaust memory.
MAX_PARAMS = 2**31

class _Part(NamedTuple):
    """A module class and its constructor arguments; `cls.cost(**kwargs, h=, w=)` prices it."""

    cls: Any
    kwargs: dict[str, Any]


class _StagePlan(NamedTuple):
    """A stage: its dense transition (None for residual nets and a dense net's first stage), its blocks."""

    transition: _Part | None
    blocks: list[_Part]


def dense_transition_width(channels: int, compression: float) -> int:
    """floor(compression * C), at least 1 (the epsilon keeps e.g. 0.57 * 100 from flooring to 56)."""
    return max(1, math.floor(channels * compression + 1e-9))


def stem_kwargs(arch: Arch, in_channels: int) -> dict[str, Any]:
    """`Stem` arguments: a pre-activation CIFAR net leaves the stem's BN-ReLU to its first block (He 2016)."""
    imagenet = arch.stem is StemKind.IMAGENET
    return dict(in_channels=in_channels, width=arch.stem_width, imagenet=imagenet,
                norm=imagenet or arch.order is Order.POST)


def _dense_plan(arch: Arch) -> tuple[list[_StagePlan], int]:
    """Per stage: transition (1x1 conv to floor(compression x C), pool) then dense layers adding k each."""
    probs = iter(arch.survival_probs())
    growth, size = arch.growth_rate or 0, arch.bottleneck_size or 0  # set: validated for dense
    layer = block_kind(arch).module
    stages: list[_StagePlan] = []
    channels = arch.stem_width
    for i, spec in enumerate(arch.stages):
        transition = None
        if i > 0:
            out = dense_transition_width(channels, arch.compression or 1.0)
            transition = _Part(Transition, dict(cin=channels, cout=out, stride=spec.stride,
                                                pre=arch.order is Order.PRE))
            channels = out
        layers = []
        for _ in range(spec.depth):
            layers.append(_Part(layer, dict(
                block=arch.block, order=arch.order, cin=channels, growth=growth, bottleneck_size=size,
                groups=arch.cardinality, dropout=arch.dropout, survival_prob=next(probs))))
            channels += growth
        stages.append(_StagePlan(transition, layers))
    return stages, channels


def _residual_plan(arch: Arch) -> tuple[list[_StagePlan], int]:
    """Per stage: blocks, the first with the stage's stride (and a projection where the shape changes)."""
    probs = iter(arch.survival_probs())
    block = block_kind(arch).module
    stages: list[_StagePlan] = []
    channels = arch.stem_width
    for spec, (_, inner, out) in zip(arch.stages, arch.residual_widths()):
        blocks = []
        for j in range(spec.depth):
            blocks.append(_Part(block, dict(
                block=arch.block, shortcut=arch.shortcut, cin=channels, inner=inner, out=out,
                stride=spec.stride if j == 0 else 1, groups=arch.cardinality, dropout=arch.dropout,
                survival_prob=next(probs))))
            channels = out
        stages.append(_StagePlan(None, blocks))
    return stages, channels


def _plan(arch: Arch) -> tuple[list[_StagePlan], int]:
    """Every stage's transition and blocks with constructor arguments, and the final channel count."""
    return _dense_plan(arch) if arch.shortcut is Shortcut.DENSE else _residual_plan(arch)


class Network(nn.Module):
    """stem -> stages -> head; built from an `Arch` by `resnas.build`."""

    def __init__(self, arch: Arch, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.arch = arch
        self.stem = Stem(**stem_kwargs(arch, in_channels))
        plan, channels = _plan(arch)
        self.stages = nn.Sequential(*(
            Stage([p.cls(**p.kwargs) for p in s.blocks],
                  s.transition.cls(**s.transition.kwargs) if s.transition else None)
            for s in plan
        ))
        self.head = Head(channels, num_classes, final_norm=arch.order is Order.PRE)
        kind = block_kind(arch)
        init_weights(self, kind.module if kind.zero_last_bn else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


def _check_io(num_classes: int, in_channels: int) -> None:
    """num_classes and in_channels are positive integers within limits, or a ConfigError says which is not."""
    for name, v, most in (("num_classes", num_classes, MAX_CLASSES), ("in_channels", in_channels, MAX_WIDTH)):
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= most:
            raise ConfigError(f"{name}: {brief(v)} must be a positive integer <= {most}")


def check_resolution(resolution: int) -> None:
    """`resolution` is an integer in [MIN_RESOLUTION, MAX_RESOLUTION], or a ConfigError says it is not."""
    if (isinstance(resolution, bool) or not isinstance(resolution, int)
            or not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION):
        raise ConfigError(f"{brief(resolution)} must be an integer >= {MIN_RESOLUTION} and <= {MAX_RESOLUTION}",
                          field="resolution")


def build(arch: Arch, *, num_classes: int = 1000, in_channels: int = 3) -> Network:
    """The PyTorch module of `arch`; accepts any input resolution >= 32."""
    check_buildable(arch, num_classes=num_classes, in_channels=in_channels)
    return Network(arch, num_classes, in_channels)


def check_buildable(arch: Arch, *, num_classes: int = 1000, in_channels: int = 3) -> None:
    """`build` would stay within MAX_PARAMS parameters, or a ConfigError says by how much it would not."""
    # Priced by arithmetic before any tensor exists: a typo'd width must not take the machine's memory.
    params = count(arch, resolution=MIN_RESOLUTION, num_classes=num_classes, in_channels=in_channels).params
    if params > MAX_PARAMS:
        raise ConfigError(f"arch: {params:,} parameters ({params * 4 / 2**30:,.0f} GiB of float32 weights), at "
                          f"most {MAX_PARAMS:,}; lower the widths, width_multiplier, depths or num_classes")


def count(arch: Arch, *, resolution: int = 224, num_classes: int = 1000, in_channels: int = 3) -> Cost:
    """FLOPs (== fvcore on the built module in eval mode), MACs and params of `arch`, by arithmetic alone."""
    _check_io(num_classes, in_channels)
    check_resolution(resolution)
    cost, h, w = Stem.cost(**stem_kwargs(arch, in_channels), h=resolution, w=resolution)
    plan, channels = _plan(arch)
    # Blocks after a residual stage's first are identical up to survival_prob, which costs nothing in
    # eval mode: price each distinct block once (a search screens thousands of deep candidates).
    seen: dict[tuple[Any, ...], tuple[Cost, int, int]] = {}
    for stage in plan:
        parts = ([stage.transition] if stage.transition else []) + stage.blocks
        for part in parts:
            key = (part.cls, h, w, *(v for k, v in part.kwargs.items() if k != "survival_prob"))
            priced = seen.get(key)
            if priced is None:
                priced = seen[key] = part.cls.cost(**part.kwargs, h=h, w=w)
            c, h, w = priced
            cost += c
    return cost + Head.cost(channels, num_classes, arch.order is Order.PRE, h, w)
