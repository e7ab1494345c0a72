"""`build` and `count`: one walk over the spec (`_plan`) feeds both, so they cannot disagree."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import nn

from resnas._arch import MIN_RESOLUTION, Arch, Order, Shortcut
from resnas._blocks import (
    Cost,
    DenseLayer,
    Head,
    HighwayGate,
    IdentityGate,
    PostActBlock,
    PreActBlock,
    Stage,
    Stem,
    Transition,
)


class _Part(NamedTuple):
    """A module class and its constructor arguments; `cls.cost(**kwargs, h=, w=)` prices it."""

    cls: Any
    kwargs: dict[str, Any]


class _StagePlan(NamedTuple):
    transition: _Part | None
    blocks: list[_Part]


def dense_transition_width(channels: int, compression: float) -> int:
    """floor(compression * C), at least 1 (the epsilon keeps e.g. 0.57 * 100 from flooring to 56)."""
    return max(1, math.floor(channels * compression + 1e-9))


def _plan(arch: Arch) -> tuple[list[_StagePlan], int]:
    """Every stage's transition and blocks with constructor arguments, and the final channel count."""
    probs = iter(arch.survival_probs())
    stages: list[_StagePlan] = []
    channels = arch.stem_width
    if arch.shortcut is Shortcut.DENSE:
        growth, size = arch.growth_rate or 0, arch.bottleneck_size or 0  # set: validated for dense
        for i, spec in enumerate(arch.stages):
            transition = None
            if i > 0:
                out = dense_transition_width(channels, arch.compression or 1.0)
                transition = _Part(Transition, dict(order=arch.order, cin=channels, cout=out, stride=spec.stride))
                channels = out
            layers = []
            for _ in range(spec.depth):
                layers.append(_Part(DenseLayer, dict(
                    block=arch.block, order=arch.order, cin=channels, growth=growth, bottleneck_size=size,
                    groups=arch.cardinality, dropout=arch.dropout, survival_prob=next(probs))))
                channels += growth
            stages.append(_StagePlan(transition, layers))
        return stages, channels
    block_cls = PreActBlock if arch.order is Order.PRE else PostActBlock
    for spec, (_, inner, out) in zip(arch.stages, arch.residual_widths()):
        blocks = []
        for j in range(spec.depth):
            blocks.append(_Part(block_cls, dict(
                block=arch.block, shortcut=arch.shortcut, cin=channels, inner=inner, out=out,
                stride=spec.stride if j == 0 else 1, groups=arch.cardinality, dropout=arch.dropout,
                survival_prob=next(probs))))
            channels = out
        stages.append(_StagePlan(None, blocks))
    return stages, channels


class Network(nn.Module):
    """stem -> stages -> head; built from an `Arch` by `resnas.build`."""

    def __init__(self, arch: Arch, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.arch = arch
        self.stem = Stem(arch.stem, in_channels, arch.stem_width, arch.order)
        plan, channels = _plan(arch)
        self.stages = nn.Sequential(*(
            Stage([p.cls(**p.kwargs) for p in s.blocks],
                  s.transition.cls(**s.transition.kwargs) if s.transition else None)
            for s in plan
        ))
        self.head = Head(channels, num_classes, final_norm=arch.order is Order.PRE)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and not isinstance(m, HighwayGate):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Zero-init the last BN of each post-order identity branch: a new block starts as the identity
        # (Goyal et al. 2017), which helps the short training runs a search uses.
        for m in self.modules():
            if isinstance(m, PostActBlock) and isinstance(m.gate, IdentityGate):
                nn.init.zeros_(getattr(m, f"bn{m.num_convs}").weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


def _check_io(num_classes: int, in_channels: int) -> None:
    for name, v in (("num_classes", num_classes), ("in_channels", in_channels)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: {v!r} must be a positive integer")


def build(arch: Arch, *, num_classes: int = 1000, in_channels: int = 3) -> Network:
    """The PyTorch module of `arch`; accepts any input resolution >= 32."""
    _check_io(num_classes, in_channels)
    return Network(arch, num_classes, in_channels)


def count(arch: Arch, *, resolution: int = 224, num_classes: int = 1000, in_channels: int = 3) -> Cost:
    """FLOPs (== fvcore on the built module in eval mode), MACs and params of `arch`, by arithmetic alone."""
    _check_io(num_classes, in_channels)
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < MIN_RESOLUTION:
        raise ValueError(f"resolution: {resolution!r} must be an integer >= {MIN_RESOLUTION}")
    cost, h, w = Stem.cost(arch.stem, in_channels, arch.stem_width, arch.order, resolution, resolution)
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
