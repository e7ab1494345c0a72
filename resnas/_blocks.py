"""Building blocks, each with a `cost(...)` beside it: same arguments as its constructor plus the input size.

Costs use fvcore's convention (one FLOP per multiply-add of conv/linear, 2 per element of an eval-mode
affine batch norm, 1 per input element of adaptive average pooling; activations, max/avg pooling,
element-wise arithmetic and concatenation are free) so that `flops` equals
`fvcore.nn.FlopCountAnalysis(model.eval(), x).total()` exactly. `macs` counts conv and linear only.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from resnas._arch import Block, Order, Shortcut, Stem as StemKind

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


def conv_out(size: int, kernel: int, stride: int) -> int:
    """Output size of a conv with 'same' padding kernel // 2."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def conv(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, bias: bool = False) -> nn.Conv2d:
    """A square conv with padding kernel // 2."""
    return nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=bias)


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
    """ImageNet: conv 7x7/2-BN-ReLU-maxpool 3x3/2; CIFAR: conv 3x3/1 (-BN-ReLU in post order)."""

    def __init__(self, kind: StemKind, in_channels: int, width: int, order: Order) -> None:
        super().__init__()
        self.kind = kind
        kernel, stride = (7, 2) if kind is StemKind.IMAGENET else (3, 1)
        self.conv = conv(in_channels, width, kernel, stride)
        self.bn = nn.BatchNorm2d(width) if Stem.has_norm(kind, order) else None
        self.pool = nn.MaxPool2d(3, 2, 1) if kind is StemKind.IMAGENET else None

    @staticmethod
    def has_norm(kind: StemKind, order: Order) -> bool:
        """A pre-activation CIFAR net leaves the stem's BN-ReLU to its first block (He et al. 2016)."""
        return kind is StemKind.IMAGENET or order is Order.POST

    @staticmethod
    def cost(kind: StemKind, in_channels: int, width: int, order: Order, h: int, w: int) -> tuple[Cost, int, int]:
        kernel, stride = (7, 2) if kind is StemKind.IMAGENET else (3, 1)
        cost, h, w = conv_cost(in_channels, width, kernel, stride, 1, False, h, w)
        if Stem.has_norm(kind, order):
            cost += bn_cost(width, h, w)
        if kind is StemKind.IMAGENET:
            h, w = conv_out(h, 3, 2), conv_out(w, 3, 2)
        return cost, h, w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = F.relu(self.bn(x), inplace=True)
        if self.pool is not None:
            x = self.pool(x)
        return x



ConvSpec = tuple[int, int, int, int, int]  # (in channels, out channels, kernel, stride, groups)


def residual_convs(block: Block, cin: int, inner: int, out: int, stride: int, groups: int) -> list[ConvSpec]:
    """Convs of a residual branch; the stride sits on the 3x3 as in torchvision (ResNet v1.5)."""
    if block is Block.BASIC:
        return [(cin, inner, 3, stride, 1), (inner, out, 3, 1, 1)]
    return [(cin, inner, 1, 1, 1), (inner, inner, 3, stride, groups), (inner, out, 1, 1, 1)]


def dense_convs(block: Block, cin: int, growth: int, bottleneck_size: int, groups: int) -> list[ConvSpec]:
    """Convs of a dense layer: 1x1 to bottleneck_size * k then 3x3 to k (DenseNet-B), or one 3x3 to k."""
    if block is Block.BASIC:
        return [(cin, growth, 3, 1, 1)]
    inner = bottleneck_size * growth
    return [(cin, inner, 1, 1, 1), (inner, growth, 3, 1, groups)]


def _add_convs(module: nn.Module, specs: list[ConvSpec], order: Order) -> None:
    """Register conv{i} and bn{i}; bn{i} normalises conv{i}'s input (pre) or output (post)."""
    for i, (cin, cout, kernel, stride, groups) in enumerate(specs, 1):
        module.add_module(f"conv{i}", conv(cin, cout, kernel, stride, groups))
        module.add_module(f"bn{i}", nn.BatchNorm2d(cin if order is Order.PRE else cout))


def _convs_cost(specs: list[ConvSpec], order: Order, h: int, w: int) -> tuple[Cost, int, int]:
    cost = Cost()
    for cin, cout, kernel, stride, groups in specs:
        if order is Order.PRE:
            cost += bn_cost(cin, h, w)
        c, h, w = conv_cost(cin, cout, kernel, stride, groups, False, h, w)
        cost += c
        if order is Order.POST:
            cost += bn_cost(cout, h, w)
    return cost, h, w


class _Branch(nn.Module):
    """Shared forward of conv chains; subclasses register conv1..convN / bn1..bnN and `dropout`."""

    num_convs: int
    dropout: nn.Dropout | None

    def _post_chain(self, x: torch.Tensor) -> torch.Tensor:
        """conv-BN-ReLU, ..., conv-BN (dropout before the last conv); no ReLU at the end."""
        for i in range(1, self.num_convs + 1):
            if i == self.num_convs and self.dropout is not None:
                x = self.dropout(x)
            x = getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x))
            if i < self.num_convs:
                x = F.relu(x, inplace=True)
        return x

    def _pre_chain(self, activated: torch.Tensor) -> torch.Tensor:
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
    """Shortcut where the shape changes: 1x1 conv with the block's stride (+ BN in post order)."""

    def __init__(self, cin: int, cout: int, stride: int, order: Order) -> None:
        super().__init__()
        self.conv = conv(cin, cout, 1, stride)
        self.bn = nn.BatchNorm2d(cout) if order is Order.POST else None

    @staticmethod
    def cost(cin: int, cout: int, stride: int, order: Order, h: int, w: int) -> Cost:
        cost, h, w = conv_cost(cin, cout, 1, stride, 1, False, h, w)
        return cost + bn_cost(cout, h, w) if order is Order.POST else cost

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


GATES: dict[Shortcut, type[IdentityGate] | type[HighwayGate]] = {
    Shortcut.IDENTITY: IdentityGate,
    Shortcut.GATED: HighwayGate,
}


class _ResidualBlock(_Branch):
    """Parts shared by both orders: branch convs, projection shortcut, gate, stochastic depth."""

    def __init__(self, block: Block, shortcut: Shortcut, order: Order, cin: int, inner: int, out: int,
                 stride: int, groups: int, dropout: float, survival_prob: float) -> None:
        super().__init__()
        specs = residual_convs(block, cin, inner, out, stride, groups)
        self.num_convs = len(specs)
        _add_convs(self, specs, order)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.shortcut = Projection(cin, out, stride, order) if stride != 1 or cin != out else None
        self.gate = GATES[shortcut](cin, out, stride)
        self.drop_path = DropPath(survival_prob)

    @staticmethod
    def _cost(block: Block, shortcut: Shortcut, order: Order, cin: int, inner: int, out: int, stride: int,
              groups: int, h: int, w: int) -> tuple[Cost, int, int]:
        cost, ho, wo = _convs_cost(residual_convs(block, cin, inner, out, stride, groups), order, h, w)
        if stride != 1 or cin != out:
            cost += Projection.cost(cin, out, stride, order, h, w)
        return cost + GATES[shortcut].cost(cin, out, stride, h, w), ho, wo


class PostActBlock(_ResidualBlock):
    """y = ReLU(s + r): s = x or proj(x), r = F(x) or T(x)(F(x) - s); F = conv-BN-ReLU ... conv-BN (He 2015)."""

    def __init__(self, block: Block, shortcut: Shortcut, cin: int, inner: int, out: int, stride: int,
                 groups: int, dropout: float, survival_prob: float) -> None:
        super().__init__(block, shortcut, Order.POST, cin, inner, out, stride, groups, dropout, survival_prob)

    @staticmethod
    def cost(block: Block, shortcut: Shortcut, cin: int, inner: int, out: int, stride: int, groups: int,
             dropout: float, survival_prob: float, h: int, w: int) -> tuple[Cost, int, int]:
        return _ResidualBlock._cost(block, shortcut, Order.POST, cin, inner, out, stride, groups, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self._post_chain(x)
        carry = x if self.shortcut is None else self.shortcut(x)
        return F.relu(carry + self.drop_path(self.gate.residual(x, carry, f)), inplace=True)


class PreActBlock(_ResidualBlock):
    """y = s + r on a = ReLU(BN(x)): s = x or proj(a), r = F(a) or T(a)(F(a) - s); F = conv, BN-ReLU-conv ... (He 2016)."""

    def __init__(self, block: Block, shortcut: Shortcut, cin: int, inner: int, out: int, stride: int,
                 groups: int, dropout: float, survival_prob: float) -> None:
        super().__init__(block, shortcut, Order.PRE, cin, inner, out, stride, groups, dropout, survival_prob)

    @staticmethod
    def cost(block: Block, shortcut: Shortcut, cin: int, inner: int, out: int, stride: int, groups: int,
             dropout: float, survival_prob: float, h: int, w: int) -> tuple[Cost, int, int]:
        return _ResidualBlock._cost(block, shortcut, Order.PRE, cin, inner, out, stride, groups, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.bn1(x), inplace=True)
        f = self._pre_chain(a)
        carry = x if self.shortcut is None else self.shortcut(a)
        return carry + self.drop_path(self.gate.residual(a, carry, f))


class DenseLayer(_Branch):
    """y = [x, F(x)]: F = (BN-ReLU-conv1x1-)BN-ReLU-conv3x3 to k channels (pre), or conv-BN-ReLU units (post)."""

    def __init__(self, block: Block, order: Order, cin: int, growth: int, bottleneck_size: int, groups: int,
                 dropout: float, survival_prob: float) -> None:
        super().__init__()
        specs = dense_convs(block, cin, growth, bottleneck_size, groups)
        self.order = order
        self.num_convs = len(specs)
        _add_convs(self, specs, order)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.drop_path = DropPath(survival_prob)

    @staticmethod
    def cost(block: Block, order: Order, cin: int, growth: int, bottleneck_size: int, groups: int,
             dropout: float, survival_prob: float, h: int, w: int) -> tuple[Cost, int, int]:
        cost, h, w = _convs_cost(dense_convs(block, cin, growth, bottleneck_size, groups), order, h, w)
        return cost, h, w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.order is Order.PRE:
            new = self._pre_chain(F.relu(self.bn1(x), inplace=True))
        else:
            new = F.relu(self._post_chain(x), inplace=True)
        return torch.cat([x, self.drop_path(new)], 1)


class Transition(nn.Module):
    """Between dense stages: BN-ReLU-conv1x1 (pre) or conv1x1-BN-ReLU (post), then avg-pool by the stride."""

    def __init__(self, order: Order, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.order = order
        self.bn = nn.BatchNorm2d(cin if order is Order.PRE else cout)
        self.conv = conv(cin, cout, 1)
        self.pool = nn.AvgPool2d(stride, stride) if stride > 1 else None

    @staticmethod
    def cost(order: Order, cin: int, cout: int, stride: int, h: int, w: int) -> tuple[Cost, int, int]:
        cost, _, _ = conv_cost(cin, cout, 1, 1, 1, False, h, w)
        cost += bn_cost(cin if order is Order.PRE else cout, h, w)
        return cost, h // stride, w // stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.order is Order.PRE:
            x = self.conv(F.relu(self.bn(x), inplace=True))
        else:
            x = F.relu(self.bn(self.conv(x)), inplace=True)
        return self.pool(x) if self.pool is not None else x


class Stage(nn.Module):
    """A dense transition (dense nets, after the first stage) followed by the stage's blocks."""

    def __init__(self, blocks: list[nn.Module], transition: Transition | None = None) -> None:
        super().__init__()
        self.transition = transition
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.transition is not None:
            x = self.transition(x)
        return self.blocks(x)


class Head(nn.Module):
    """(BN-ReLU in pre order) - global average pool - linear classifier."""

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
