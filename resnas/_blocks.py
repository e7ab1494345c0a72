"""Building blocks, each with a `cost(...)` beside it: same arguments as its constructor plus the input size.

Every module here takes plain values (ints, floats, bools, tuples, and the classes of its parts, as
torchvision's ResNet takes its block class) and uses nothing but torch outside its `cost`, so an export's
model.py holds these very sources (`resnas._export`); `resnas._build.plan` turns an `Arch` into a
`Network`'s arguments.

Costs use fvcore's convention (one FLOP per multiply-add of conv/linear, 2 per element of an eval-mode
affine batch norm, 1 per input element of adaptive average pooling; activations, max/avg pooling,
element-wise arithmetic and concatenation are free) so that `flops` equals
`fvcore.nn.FlopCountAnalysis(model.eval(), x).total()` exactly. `macs` counts conv and linear only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

# A new gated block starts with T ~ sigmoid(-2) = 0.12, so it mostly carries its input (Highway networks).
GATE_BIAS_INIT = -2.0


class Cost(NamedTuple):
    """FLOPs (fvcore's count), MACs (conv + linear multiply-adds) and parameters of a network or a part."""

    flops: int = 0
    macs: int = 0
    params: int = 0

    # A tuple, for speed: a search prices thousands of candidates. `+` adds costs, not concatenates.
    def __add__(self, other: tuple[int, ...]) -> Cost:  # type: ignore[override]
        return Cost(self[0] + other[0], self[1] + other[1], self[2] + other[2])

    def __mul__(self, n: int) -> Cost:  # type: ignore[override]
        return Cost(self[0] * n, self[1] * n, self[2] * n)


def conv_out(size: int, kernel: int, stride: int) -> int:
    """Output size of a conv with 'same' padding kernel // 2."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def conv(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """A square conv without bias, padding kernel // 2."""
    return nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)


def conv_cost(cin: int, cout: int, kernel: int, stride: int, groups: int, bias: bool, h: int, w: int
              ) -> tuple[Cost, int, int]:
    """Cost of `conv(...)` on an h x w input, and the output size."""
    ho, wo = conv_out(h, kernel, stride), conv_out(w, kernel, stride)
    weights = cout * (cin // groups) * kernel * kernel
    macs = weights * ho * wo
    return Cost(macs, macs, weights + (cout if bias else 0)), ho, wo


def bn_cost(channels: int, h: int, w: int) -> Cost:
    """Cost of an affine BatchNorm2d in eval mode (scale and shift per element)."""
    return Cost(2 * channels * h * w, 0, 2 * channels)


class DropPath(nn.Module):
    """Stochastic depth: keep a sample's branch with probability p, scaled by 1/p; identity in eval.

    The 1/p scaling at training time makes evaluation (no drop, no scaling) equal the expected
    training output of the branch, and keeps exported eval-mode networks free of p.
    """

    def __init__(self, survival_prob: float) -> None:
        super().__init__()
        self.survival_prob = survival_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.survival_prob >= 1.0:
            return x
        keep = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device)
        keep.bernoulli_(self.survival_prob)
        return x * keep / self.survival_prob

    def extra_repr(self) -> str:
        return f"survival_prob={self.survival_prob:.4g}"


class Stem(nn.Module):
    """ImageNet: conv 7x7/2-BN-ReLU-maxpool 3x3/2; CIFAR: conv 3x3/1, then BN-ReLU where `norm`."""

    def __init__(self, in_channels: int, width: int, imagenet: bool, norm: bool) -> None:
        super().__init__()
        kernel, stride = (7, 2) if imagenet else (3, 1)
        self.conv = conv(in_channels, width, kernel, stride)
        self.bn = nn.BatchNorm2d(width) if norm else None
        self.pool = nn.MaxPool2d(3, 2, 1) if imagenet else None

    @staticmethod
    def cost(in_channels: int, width: int, imagenet: bool, norm: bool, h: int, w: int
             ) -> tuple[Cost, int, int]:
        kernel, stride = (7, 2) if imagenet else (3, 1)
        cost, h, w = conv_cost(in_channels, width, kernel, stride, 1, False, h, w)
        if norm:
            cost += bn_cost(width, h, w)
        if imagenet:
            h, w = conv_out(h, 3, 2), conv_out(w, 3, 2)
        return cost, h, w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = F.relu(self.bn(x), inplace=True)
        if self.pool is not None:
            x = self.pool(x)
        return x


# (in channels, out channels, kernel, stride, groups) of one conv of a branch.
ConvSpec = tuple[int, int, int, int, int]


def residual_convs(cin: int, inner: int, out: int, stride: int, groups: int, bottleneck: bool
                   ) -> list[ConvSpec]:
    """Convs of a residual branch; the stride sits on the 3x3 as in torchvision (ResNet v1.5)."""
    if not bottleneck:
        return [(cin, inner, 3, stride, 1), (inner, out, 3, 1, 1)]
    return [(cin, inner, 1, 1, 1), (inner, inner, 3, stride, groups), (inner, out, 1, 1, 1)]


def dense_convs(cin: int, growth: int, inner: int, groups: int, bottleneck: bool) -> list[ConvSpec]:
    """Convs of a dense layer: 1x1 to `inner` (bottleneck_size x k), 3x3 to k (DenseNet-B); or a 3x3 to k."""
    if not bottleneck:
        return [(cin, growth, 3, 1, 1)]
    return [(cin, inner, 1, 1, 1), (inner, growth, 3, 1, groups)]


def add_convs(module: nn.Module, specs: list[ConvSpec], pre: bool) -> None:
    """Register conv{i} and bn{i}; bn{i} normalises conv{i}'s input (pre) or output (post)."""
    for i, (cin, cout, kernel, stride, groups) in enumerate(specs, 1):
        module.add_module(f"conv{i}", conv(cin, cout, kernel, stride, groups))
        module.add_module(f"bn{i}", nn.BatchNorm2d(cin if pre else cout))


def convs_cost(specs: list[ConvSpec], pre: bool, h: int, w: int) -> tuple[Cost, int, int]:
    """Cost of `add_convs(specs)`'s convs and BNs on an h x w input, and the output size."""
    cost = Cost()
    for cin, cout, kernel, stride, groups in specs:
        if pre:
            cost += bn_cost(cin, h, w)
        c, h, w = conv_cost(cin, cout, kernel, stride, groups, False, h, w)
        cost += c
        if not pre:
            cost += bn_cost(cout, h, w)
    return cost, h, w


class Branch(nn.Module):
    """Shared forward of conv chains; subclasses register conv1..convN / bn1..bnN and `dropout`."""

    num_convs: int
    dropout: nn.Dropout | None

    def post_chain(self, x: torch.Tensor) -> torch.Tensor:
        """conv-BN-ReLU, ..., conv-BN (dropout before the last conv); no ReLU at the end."""
        for i in range(1, self.num_convs + 1):
            if i == self.num_convs and self.dropout is not None:
                x = self.dropout(x)
            x = getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x))
            if i < self.num_convs:
                x = F.relu(x, inplace=True)
        return x

    def pre_chain(self, activated: torch.Tensor) -> torch.Tensor:
        """conv1 on the already BN-ReLU'd input, then BN-ReLU-conv, ... (dropout before the last conv)."""
        x = activated
        for i in range(1, self.num_convs + 1):
            if i > 1:
                x = F.relu(getattr(self, f"bn{i}")(x), inplace=True)
            if i == self.num_convs and self.dropout is not None:
                x = self.dropout(x)
            x = getattr(self, f"conv{i}")(x)
        return x


class Projection(nn.Module):
    """Shortcut where the shape changes: 1x1 conv with the block's stride, then BN where `norm` (post)."""

    def __init__(self, cin: int, cout: int, stride: int, norm: bool) -> None:
        super().__init__()
        self.conv = conv(cin, cout, 1, stride)
        self.bn = nn.BatchNorm2d(cout) if norm else None

    @staticmethod
    def cost(cin: int, cout: int, stride: int, norm: bool, h: int, w: int) -> Cost:
        cost, h, w = conv_cost(cin, cout, 1, stride, 1, False, h, w)
        return cost + bn_cost(cout, h, w) if norm else cost

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.bn(x) if self.bn is not None else x


class IdentityGate(nn.Module):
    """Plain residual: the branch added to the carried input is F(x) itself."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()

    @staticmethod
    def cost(cin: int, cout: int, stride: int, h: int, w: int) -> Cost:
        return Cost()

    def residual(self, gate_input: torch.Tensor, carry: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        return f


class HighwayGate(nn.Conv2d):
    """Highway gate T = sigmoid(conv1x1/stride(x) + b) per channel and position; y = T F + (1 - T) carry.

    Written as carry + T (F - carry) so that stochastic depth drops T (F - carry) like any residual branch.
    Weights start at zero and the bias at GATE_BIAS_INIT: a new block carries ~88% of its input.
    """

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__(cin, cout, 1, stride, 0, bias=True)

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)
        if self.bias is not None:
            nn.init.constant_(self.bias, GATE_BIAS_INIT)

    @staticmethod
    def cost(cin: int, cout: int, stride: int, h: int, w: int) -> Cost:
        return conv_cost(cin, cout, 1, stride, 1, True, h, w)[0]

    def residual(self, gate_input: torch.Tensor, carry: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self(gate_input)) * (f - carry)


Gate = type[IdentityGate] | type[HighwayGate]


class ResidualBlock(Branch):
    """Parts shared by both orders: branch convs, projection shortcut, a `gate`, stochastic depth."""

    pre: bool  # BN-ReLU before each conv (PreActBlock), else after (PostActBlock)

    def __init__(self, cin: int, inner: int, out: int, stride: int, bottleneck: bool, groups: int, gate: Gate,
                 dropout: float, survival_prob: float) -> None:
        super().__init__()
        specs = residual_convs(cin, inner, out, stride, groups, bottleneck)
        self.num_convs = len(specs)
        add_convs(self, specs, self.pre)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.shortcut = Projection(cin, out, stride, not self.pre) if stride != 1 or cin != out else None
        self.gate = gate(cin, out, stride)
        self.drop_path = DropPath(survival_prob)

    @classmethod
    def cost(cls, cin: int, inner: int, out: int, stride: int, bottleneck: bool, groups: int, gate: Gate,
             dropout: float, survival_prob: float, h: int, w: int) -> tuple[Cost, int, int]:
        """Cost of the branch convs, the projection (where the shape changes) and the gate."""
        specs = residual_convs(cin, inner, out, stride, groups, bottleneck)
        cost, ho, wo = convs_cost(specs, cls.pre, h, w)
        if stride != 1 or cin != out:
            cost += Projection.cost(cin, out, stride, not cls.pre, h, w)
        return cost + gate.cost(cin, out, stride, h, w), ho, wo


class PostActBlock(ResidualBlock):
    """y = ReLU(s + r): s = x | proj(x), r = F(x) | T(x)(F(x) - s), F = conv-BN(-ReLU-conv-BN)* (He 2015)."""

    pre = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.post_chain(x)
        carry = x if self.shortcut is None else self.shortcut(x)
        return F.relu(carry + self.drop_path(self.gate.residual(x, carry, f)), inplace=True)


class PreActBlock(ResidualBlock):
    """a = ReLU(BN(x)), y = s + r: s = x | proj(a), r = F(a) | T(a)(F(a) - s), F = conv(-BN-ReLU-conv)*."""

    pre = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.bn1(x), inplace=True)
        f = self.pre_chain(a)
        carry = x if self.shortcut is None else self.shortcut(a)
        return carry + self.drop_path(self.gate.residual(a, carry, f))


class DenseLayer(Branch):
    """y = [x, F(x)]: F = (BN-ReLU-conv1x1-)BN-ReLU-conv3x3 to k channels (pre), or conv-BN-ReLU units."""

    def __init__(self, cin: int, growth: int, bottleneck_size: int, bottleneck: bool, groups: int, pre: bool,
                 dropout: float, survival_prob: float) -> None:
        super().__init__()
        specs = dense_convs(cin, growth, bottleneck_size * growth, groups, bottleneck)
        self.pre = pre
        self.num_convs = len(specs)
        add_convs(self, specs, pre)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.drop_path = DropPath(survival_prob)

    @staticmethod
    def cost(cin: int, growth: int, bottleneck_size: int, bottleneck: bool, groups: int, pre: bool,
             dropout: float, survival_prob: float, h: int, w: int) -> tuple[Cost, int, int]:
        return convs_cost(dense_convs(cin, growth, bottleneck_size * growth, groups, bottleneck), pre, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre:
            new = self.pre_chain(F.relu(self.bn1(x), inplace=True))
        else:
            new = F.relu(self.post_chain(x), inplace=True)
        return torch.cat([x, self.drop_path(new)], 1)


class Transition(nn.Module):
    """Between dense stages: BN-ReLU-conv1x1 (`pre`) or conv1x1-BN-ReLU, then avg-pool by the stride."""

    def __init__(self, cin: int, cout: int, stride: int, pre: bool) -> None:
        super().__init__()
        self.pre = pre
        self.bn = nn.BatchNorm2d(cin if pre else cout)
        self.conv = conv(cin, cout, 1)
        self.pool = nn.AvgPool2d(stride, stride) if stride > 1 else None

    @staticmethod
    def cost(cin: int, cout: int, stride: int, pre: bool, h: int, w: int) -> tuple[Cost, int, int]:
        cost, _, _ = conv_cost(cin, cout, 1, 1, 1, False, h, w)
        cost += bn_cost(cin if pre else cout, h, w)
        return cost, h // stride, w // stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre:
            x = self.conv(F.relu(self.bn(x), inplace=True))
        else:
            x = F.relu(self.bn(self.conv(x)), inplace=True)
        return self.pool(x) if self.pool is not None else x


class ResidualStage(nn.Module):
    """`block`s, one per survival probability: the first from cin with `stride`, the rest from out with 1."""

    def __init__(self, block: type[ResidualBlock], cin: int, inner: int, out: int, stride: int,
                 bottleneck: bool, groups: int, gate: Gate, dropout: float, survival_probs: Sequence[float]
                 ) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(
            block(out if i else cin, inner, out, 1 if i else stride, bottleneck, groups, gate, dropout, p)
            for i, p in enumerate(survival_probs)))

    @staticmethod
    def cost(block: type[ResidualBlock], cin: int, inner: int, out: int, stride: int, bottleneck: bool,
             groups: int, gate: Gate, dropout: float, survival_probs: Sequence[float], h: int, w: int
             ) -> tuple[Cost, int, int]:
        # Blocks after the first are identical in eval mode: price one (a search prices deep candidates).
        cost, h, w = block.cost(cin, inner, out, stride, bottleneck, groups, gate, dropout, 1.0, h, w)
        rest = block.cost(out, inner, out, 1, bottleneck, groups, gate, dropout, 1.0, h, w)[0]
        return cost + rest * (len(survival_probs) - 1), h, w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class DenseStage(nn.Module):
    """A Transition to (channels, pool stride) = `transition` where given, then `block`s (dense layers), one
    per survival probability, each adding `growth` channels."""

    def __init__(self, block: type[DenseLayer], cin: int, transition: tuple[int, int] | None, growth: int,
                 bottleneck_size: int, bottleneck: bool, groups: int, pre: bool, dropout: float,
                 survival_probs: Sequence[float]) -> None:
        super().__init__()
        self.transition = Transition(cin, *transition, pre) if transition else None
        cin = transition[0] if transition else cin
        self.blocks = nn.Sequential(*(
            block(cin + i * growth, growth, bottleneck_size, bottleneck, groups, pre, dropout, p)
            for i, p in enumerate(survival_probs)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.transition is not None:
            x = self.transition(x)
        return self.blocks(x)

    @staticmethod
    def cost(block: type[DenseLayer], cin: int, transition: tuple[int, int] | None, growth: int,
             bottleneck_size: int, bottleneck: bool, groups: int, pre: bool, dropout: float,
             survival_probs: Sequence[float], h: int, w: int) -> tuple[Cost, int, int]:
        cost = Cost()
        if transition:
            cost, h, w = Transition.cost(cin, *transition, pre, h, w)
            cin = transition[0]
        for i in range(len(survival_probs)):
            c, h, w = block.cost(cin + i * growth, growth, bottleneck_size, bottleneck, groups, pre, dropout,
                                 1.0, h, w)
            cost += c
        return cost, h, w


class Head(nn.Module):
    """(BN-ReLU where final_norm: a pre-activation net ends un-normalised) - global average pool - linear."""

    def __init__(self, cin: int, num_classes: int, final_norm: bool) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(cin) if final_norm else None
        self.fc = nn.Linear(cin, num_classes)

    @staticmethod
    def cost(cin: int, num_classes: int, final_norm: bool, h: int, w: int) -> Cost:
        cost = Cost(cin * h * w) + Cost(cin * num_classes, cin * num_classes, cin * num_classes + num_classes)
        return cost + bn_cost(cin, h, w) if final_norm else cost

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm is not None:
            x = F.relu(self.norm(x), inplace=True)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def init_weights(model: nn.Module, zero_last_bn: type[nn.Module] | None = None) -> None:
    """He-normal convs, unit BNs; each `zero_last_bn` block's last BN zero, so it starts as the identity.

    A HighwayGate, a Conv2d subclass, keeps its own initialisation. The zero last BN of post-order identity
    blocks (Goyal et al. 2017) helps the short training runs a search uses.
    """
    for m in model.modules():
        if type(m) is nn.Conv2d:
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in model.modules():
        if zero_last_bn is not None and isinstance(m, zero_last_bn):
            norms = [c for c in m.children() if isinstance(c, nn.BatchNorm2d)]
            nn.init.zeros_(norms[-1].weight)


class Network(nn.Module):
    """stem -> stages -> head, from plain values (`resnas._build.plan` makes them from an `Arch`).

    `stages` holds a (stage class, its arguments) row per stage; `zero_last_bn`: see `init_weights`.
    """

    def __init__(self, stem: Mapping[str, Any], stages: Sequence[tuple[type[nn.Module], Mapping[str, Any]]],
                 head: Mapping[str, Any], zero_last_bn: type[nn.Module] | None, num_classes: int,
                 in_channels: int) -> None:
        super().__init__()
        self.stem = Stem(in_channels, **stem)
        self.stages = nn.Sequential(*(stage(**kwargs) for stage, kwargs in stages))
        self.head = Head(num_classes=num_classes, **head)
        init_weights(self, zero_last_bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))
