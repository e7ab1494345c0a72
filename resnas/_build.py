"""`plan`, `build`, `count`: `plan` makes an `Arch` plain values, which build a `Network` and price it."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from torch import nn

from resnas._arch import (
    MAX_CLASSES,
    MAX_RESOLUTION,
    MAX_WIDTH,
    MIN_RESOLUTION,
    Arch,
    Block,
    Order,
    Shortcut,
    brief,
    is_integer,
)
from resnas._arch import Stem as StemKind
from resnas._blocks import (
    Cost,
    DenseLayer,
    DenseStage,
    Gate,
    Head,
    HighwayGate,
    IdentityGate,
    Network,
    PostActBlock,
    PreActBlock,
    ResidualStage,
    Stem,
)
from resnas._errors import ConfigError

# Parameters `build` allocates at most: 2.1 G float32 weights are 8.6 GB before gradients and optimizer
# state, over twice BiT's ResNet-152x4 (928 M), the largest ResNet published; the widest zoo network,
# wide_resnet101_2, has 127 M. Larger specs are typos that would exhaust memory.
MAX_PARAMS = 2**31


class BlockKind(NamedTuple):
    """A block variant: its block class, its gate (residual blocks), and whether it starts as the identity."""

    block: type[nn.Module]
    gate: Gate | None = None
    zero_last_bn: bool = False  # its last BN starts at zero (see `init_weights`)


# One entry per block variant (shortcut kind x order).
BLOCKS: dict[tuple[Shortcut, Order], BlockKind] = {
    (Shortcut.IDENTITY, Order.POST): BlockKind(PostActBlock, IdentityGate, zero_last_bn=True),
    (Shortcut.GATED, Order.POST): BlockKind(PostActBlock, HighwayGate),
    (Shortcut.IDENTITY, Order.PRE): BlockKind(PreActBlock, IdentityGate),
    (Shortcut.GATED, Order.PRE): BlockKind(PreActBlock, HighwayGate),
    (Shortcut.DENSE, Order.POST): BlockKind(DenseLayer),
    (Shortcut.DENSE, Order.PRE): BlockKind(DenseLayer),
}

Row = tuple[type[nn.Module], dict[str, Any]]  # a stage: its class and constructor arguments


class Plan(NamedTuple):
    """`Network`'s arguments but num_classes and in_channels: plain values, each block's survival included."""

    stem: dict[str, Any]  # `Stem`'s, less in_channels
    stages: list[Row]
    head: dict[str, Any]  # `Head`'s, less num_classes
    zero_last_bn: type[nn.Module] | None


def dense_transition_width(channels: int, compression: float) -> int:
    """floor(compression * C), at least 1 (the epsilon keeps e.g. 0.57 * 100 from flooring to 56)."""
    return max(1, math.floor(channels * compression + 1e-9))


def _dense_stages(arch: Arch, probs: list[float]) -> tuple[list[Row], int]:
    """Per stage: transition (1x1 conv to floor(compression x C), pool) then dense layers adding k each."""
    growth = arch.growth_rate or 0  # set: validated for dense
    layer = BLOCKS[arch.shortcut, arch.order].block
    rows: list[Row] = []
    channels = arch.stem_width
    for i, spec in enumerate(arch.stages):
        transition = None
        if i > 0:
            transition = (dense_transition_width(channels, arch.compression or 1.0), spec.stride)
        rows.append((DenseStage, dict(
            block=layer, cin=channels, transition=transition, growth=growth,
            bottleneck_size=arch.bottleneck_size, bottleneck=arch.block is Block.BOTTLENECK,
            groups=arch.cardinality, pre=arch.order is Order.PRE, dropout=arch.dropout,
            survival_probs=tuple(probs[:spec.depth]))))
        channels = (transition[0] if transition else channels) + spec.depth * growth
        probs = probs[spec.depth:]
    return rows, channels


def _residual_stages(arch: Arch, probs: list[float]) -> tuple[list[Row], int]:
    """Per stage: blocks, the first with the stage's stride (and a projection where the shape changes)."""
    kind = BLOCKS[arch.shortcut, arch.order]
    rows: list[Row] = []
    channels = arch.stem_width
    for spec, (_, inner, out) in zip(arch.stages, arch.residual_widths()):
        rows.append((ResidualStage, dict(
            block=kind.block, cin=channels, inner=inner, out=out, stride=spec.stride,
            bottleneck=arch.block is Block.BOTTLENECK, groups=arch.cardinality, gate=kind.gate,
            dropout=arch.dropout, survival_probs=tuple(probs[:spec.depth]))))
        channels = out
        probs = probs[spec.depth:]
    return rows, channels


def plan(arch: Arch) -> Plan:
    """The stem's, every stage's and the head's constructor arguments, and the initialisation of `arch`."""
    imagenet = arch.stem is StemKind.IMAGENET
    # A pre-activation CIFAR net leaves the stem's BN-ReLU to its first block (He 2016).
    stem = dict(width=arch.stem_width, imagenet=imagenet, norm=imagenet or arch.order is Order.POST)
    stages = _dense_stages if arch.shortcut is Shortcut.DENSE else _residual_stages
    rows, channels = stages(arch, arch.survival_probs())
    kind = BLOCKS[arch.shortcut, arch.order]
    return Plan(stem, rows, dict(cin=channels, final_norm=arch.order is Order.PRE),
                kind.block if kind.zero_last_bn else None)


def _check_io(num_classes: int, in_channels: int) -> None:
    """num_classes and in_channels are positive integers within limits, or a ConfigError says which is not."""
    for name, v, most in (("num_classes", num_classes, MAX_CLASSES), ("in_channels", in_channels, MAX_WIDTH)):
        if not is_integer(v) or not 1 <= v <= most:
            raise ConfigError(f"{name}: {brief(v)} must be a positive integer <= {most}")


def check_resolution(resolution: int) -> None:
    """`resolution` is an integer in [MIN_RESOLUTION, MAX_RESOLUTION], or a ConfigError says it is not."""
    if not is_integer(resolution) or not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise ConfigError(f"{brief(resolution)} must be an integer >= {MIN_RESOLUTION} and <= {MAX_RESOLUTION}",
                          field="resolution")


def build(arch: Arch, *, num_classes: int = 1000, in_channels: int = 3) -> Network:
    """The PyTorch module of `arch`; accepts any input resolution >= 32."""
    check_buildable(arch, num_classes=num_classes, in_channels=in_channels)
    return Network(*plan(arch), num_classes, in_channels)


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
    stem, stages, head, _ = plan(arch)
    cost, h, w = Stem.cost(in_channels, **stem, h=resolution, w=resolution)
    for stage, kwargs in stages:
        c, h, w = stage.cost(**kwargs, h=h, w=w)  # type: ignore[attr-defined]  # every stage class has one
        cost += c
    return cost + Head.cost(num_classes=num_classes, **head, h=h, w=w)
