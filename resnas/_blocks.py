"""Building blocks, each with a `cost(...)` beside it: same arguments as its constructor plus the input size.

`BLOCKS` registers each block variant (shortcut kind x order): the module `build` makes and the writer of
its class in an export's model.py. Classes that model.py holds as written here (`conv`, `DropPath`,
`Stem`, `Projection`, `HighwayGate`, `Transition`, `Stage`, `Head`, `init_weights`) use nothing but torch
outside their static methods, which model.py leaves out.

Costs use fvcore's convention (one FLOP per multiply-add of conv/linear, 2 per element of an eval-mode
affine batch norm, 1 per input element of adaptive average pooling; activations, max/avg pooling,
element-wise arithmetic and concatenation are free) so that `flops` equals
`fvcore.nn.FlopCountAnalysis(model.eval(), x).total()` exactly. `macs` counts conv and linear only.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import Literal, NamedTuple, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from resnas._arch import Arch, Block, Order, Shortcut

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


# A channel count or stride, or (writing model.py) the name of the variable that holds it there.
Size = TypeVar("Size", int, str)
# (in channels, out channels, kernel, stride, groups) of one conv of a branch.
ConvSpec = tuple[Size, Size, int, Size | int, Size | int]


def residual_convs(block: Block, cin: Size, inner: Size, out: Size, stride: Size, groups: Size | int
                   ) -> list[ConvSpec[Size]]:
    """Convs of a residual branch; the stride sits on the 3x3 as in torchvision (ResNet v1.5)."""
    if block is Block.BASIC:
        return [(cin, inner, 3, stride, 1), (inner, out, 3, 1, 1)]
    return [(cin, inner, 1, 1, 1), (inner, inner, 3, stride, groups), (inner, out, 1, 1, 1)]


def dense_convs(block: Block, cin: Size, growth: Size, inner: Size, groups: Size | int
                ) -> list[ConvSpec[Size]]:
    """Convs of a dense layer: 1x1 to `inner` (bottleneck_size x k), 3x3 to k (DenseNet-B); or a 3x3 to k."""
    if block is Block.BASIC:
        return [(cin, growth, 3, 1, 1)]
    return [(cin, inner, 1, 1, 1), (inner, growth, 3, 1, groups)]


def _add_convs(module: nn.Module, specs: list[ConvSpec[int]], order: Order) -> None:
    """Register conv{i} and bn{i}; bn{i} normalises conv{i}'s input (pre) or output (post)."""
    for i, (cin, cout, kernel, stride, groups) in enumerate(specs, 1):
        module.add_module(f"conv{i}", conv(cin, cout, kernel, stride, groups))
        module.add_module(f"bn{i}", nn.BatchNorm2d(cin if order is Order.PRE else cout))


def _convs_cost(specs: list[ConvSpec[int]], order: Order, h: int, w: int) -> tuple[Cost, int, int]:
    """Cost of `_add_convs(specs)`'s convs and BNs on an h x w input, and the output size."""
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
        norm = order is Order.POST
        self.shortcut = Projection(cin, out, stride, norm) if stride != 1 or cin != out else None
        self.gate = GATES[shortcut](cin, out, stride)
        self.drop_path = DropPath(survival_prob)

    @staticmethod
    def _cost(block: Block, shortcut: Shortcut, order: Order, cin: int, inner: int, out: int, stride: int,
              groups: int, h: int, w: int) -> tuple[Cost, int, int]:
        """Cost of the branch convs, the projection (where the shape changes) and the gate."""
        cost, ho, wo = _convs_cost(residual_convs(block, cin, inner, out, stride, groups), order, h, w)
        if stride != 1 or cin != out:
            cost += Projection.cost(cin, out, stride, order is Order.POST, h, w)
        return cost + GATES[shortcut].cost(cin, out, stride, h, w), ho, wo


class PostActBlock(_ResidualBlock):
    """y = ReLU(s + r): s = x | proj(x), r = F(x) | T(x)(F(x) - s), F = conv-BN(-ReLU-conv-BN)* (He 2015)."""

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
    """a = ReLU(BN(x)), y = s + r: s = x | proj(a), r = F(a) | T(a)(F(a) - s), F = conv(-BN-ReLU-conv)*."""

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
    """y = [x, F(x)]: F = (BN-ReLU-conv1x1-)BN-ReLU-conv3x3 to k channels (pre), or conv-BN-ReLU units."""

    def __init__(self, block: Block, order: Order, cin: int, growth: int, bottleneck_size: int, groups: int,
                 dropout: float, survival_prob: float) -> None:
        super().__init__()
        specs = dense_convs(block, cin, growth, bottleneck_size * growth, groups)
        self.order = order
        self.num_convs = len(specs)
        _add_convs(self, specs, order)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.drop_path = DropPath(survival_prob)

    @staticmethod
    def cost(block: Block, order: Order, cin: int, growth: int, bottleneck_size: int, groups: int,
             dropout: float, survival_prob: float, h: int, w: int) -> tuple[Cost, int, int]:
        return _convs_cost(dense_convs(block, cin, growth, bottleneck_size * growth, groups), order, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.order is Order.PRE:
            new = self._pre_chain(F.relu(self.bn1(x), inplace=True))
        else:
            new = F.relu(self._post_chain(x), inplace=True)
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


# -- model.py classes of the blocks, specialised to one arch ----------------------------------------

Projections = Literal["none", "some", "all"]  # which blocks of a residual net have a projection shortcut


def class_source(name: str, doc: str, params: str, init: list[str], forward: list[str]) -> str:
    """class `name`: docstring `doc` (summary[, blank, paragraph]), `__init__(params)` = `init`, `forward`."""
    summary, _, details = doc.partition("\n\n")
    lines = [f"class {name}(nn.Module):"]
    if details:
        wrapped = [f"    {line}" for line in textwrap.wrap(details, 96)]
        lines += [f'    """{summary}', ""] + wrapped + ['    """']
    else:
        lines.append(f'    """{summary}"""')
    lines += ["", f"    def __init__(self, {params}) -> None:", "        super().__init__()"]
    lines += [f"        {line}" for line in init]
    lines += ["", "    def forward(self, x: torch.Tensor) -> torch.Tensor:"]
    lines += [f"        {line}" for line in forward]
    return "\n".join(lines) + "\n"


def _conv_lines(specs: list[ConvSpec[str]], order: Order) -> list[str]:
    """`_add_convs(specs)` written out: conv{i}, then bn{i} on conv{i}'s input (pre) or output (post)."""
    lines = []
    for i, (cin, cout, kernel, stride, groups) in enumerate(specs, 1):
        args = [cin, cout, str(kernel)]
        args += [str(stride)] * (stride != 1 or groups != 1) + [str(groups)] * (groups != 1)
        lines.append(f"self.conv{i} = conv({', '.join(args)})")
        lines.append(f"self.bn{i} = nn.BatchNorm2d({cin if order is Order.PRE else cout})")
    return lines


def _chain_lines(n: int, order: Order, dropout: bool, first: str, var: str, relu_last: bool) -> list[str]:
    """`_Branch._post_chain` / `_pre_chain` unrolled into `var = ...` lines; `first`: the chain's input."""
    lines, x = [], first
    for i in range(1, n + 1):
        inp = x if order is Order.POST or i == 1 else f"F.relu(self.bn{i}({x}))"
        if i == n and dropout:
            inp = f"self.dropout({inp})"
        expr = f"self.conv{i}({inp})" if order is Order.PRE else f"self.bn{i}(self.conv{i}({inp}))"
        if order is Order.POST and (i < n or relu_last):
            expr = f"F.relu({expr}, inplace=True)"
        lines.append(f"{var} = {expr}")
        x = var
    return lines


def _residual_init(arch: Arch, projections: Projections, drop_path: bool) -> tuple[str, list[str]]:
    """Parameters and `__init__` body of a model.py residual block: what resnas's registers, in order."""
    basic = arch.block is Block.BASIC
    inner, out = ("width", "width") if basic else ("inner", "out")
    params = f"cin: int, {'width: int' if basic else 'inner: int, out: int'}, stride: int"
    groups = "GROUPS" if arch.cardinality > 1 else 1
    init = _conv_lines(residual_convs(arch.block, "cin", inner, out, "stride", groups), arch.order)
    if arch.dropout > 0:
        init.append("self.dropout = nn.Dropout(DROPOUT)")
    projection = f"Projection(cin, {out}, stride, norm={arch.order is Order.POST})"
    if projections == "some":
        init.append(f"self.shortcut = {projection} if stride != 1 or cin != {out} else None")
    elif projections == "all":
        init.append(f"self.shortcut = {projection}")
    if arch.shortcut is Shortcut.GATED:
        init.append(f"self.gate = HighwayGate(cin, {out}, stride)")
    if drop_path:
        params += ", survival_prob: float"
        init.append("self.drop_path = DropPath(survival_prob)")
    return params, init


def _residual_forward(arch: Arch, num_convs: int, projections: Projections, drop_path: bool) -> list[str]:
    """`forward` of a model.py residual block: PostActBlock's or PreActBlock's, unrolled."""
    pre = arch.order is Order.PRE
    a = "a" if pre else "x"  # what the branch, the projection and the gate see
    forward = ["a = F.relu(self.bn1(x))"] if pre else []
    forward += _chain_lines(num_convs, arch.order, arch.dropout > 0, a, "f", relu_last=False)
    carry = "x"
    if projections != "none":
        carry = "carry"
        forward.append(f"carry = self.shortcut({a})" if projections == "all"
                       else f"carry = x if self.shortcut is None else self.shortcut({a})")
    residual = f"self.gate.residual({a}, {carry}, f)" if arch.shortcut is Shortcut.GATED else "f"
    if drop_path:
        residual = f"self.drop_path({residual})"
    forward.append(f"return {carry} + {residual}" if pre else f"return F.relu({carry} + {residual})")
    return forward


def residual_source(arch: Arch, projections: Projections, drop_path: bool) -> str:
    """model.py's PostActBlock / PreActBlock: y = (ReLU of) s + F or s + T (F - s), specialised to `arch`."""
    pre = arch.order is Order.PRE
    a = "a" if pre else "x"
    kernels = [k for _, _, k, _, _ in residual_convs(arch.block, 0, 0, 0, 1, 1)]
    convs = ", ".join(f"{k}x{k}" for k in kernels) + (" convs with BN-ReLU" if pre else " conv-BNs with ReLU")
    carried = {"none": "s = x", "all": f"s = the projection of {a}",
               "some": f"s = x, or the projection of {a} where the shape changes"}[projections]
    y = f"s + T({a}) (F({a}) - s)" if arch.shortcut is Shortcut.GATED else f"s + F({a})"
    if pre:
        doc = (f"Pre-activation {arch.block.value} block (He et al. 2016).\n\n"
               f"a = ReLU(BN(x)), y = {y}: F = {convs} between, {carried}.")
    else:
        doc = (f"Post-activation {arch.block.value} block (He et al. 2015).\n\n"
               f"y = ReLU({y}): F = {convs} between, {carried}.")
    if arch.shortcut is Shortcut.GATED:
        doc += " T is the Highway gate."
    params, init = _residual_init(arch, projections, drop_path)
    forward = _residual_forward(arch, len(kernels), projections, drop_path)
    return class_source((PreActBlock if pre else PostActBlock).__name__, doc, params, init, forward)


def dense_source(arch: Arch, projections: Projections, drop_path: bool) -> str:
    """model.py's DenseLayer: y = [x, F(x)], F adding GROWTH_RATE channels, specialised to `arch`."""
    pre = arch.order is Order.PRE
    groups = "GROUPS" if arch.cardinality > 1 else 1
    specs = dense_convs(arch.block, "cin", "GROWTH_RATE", "BOTTLENECK_WIDTH", groups)
    params, init = "cin: int", _conv_lines(specs, arch.order)
    if arch.dropout > 0:
        init.append("self.dropout = nn.Dropout(DROPOUT)")
    if drop_path:
        params += ", survival_prob: float"
        init.append("self.drop_path = DropPath(survival_prob)")
    first = "F.relu(self.bn1(x))" if pre else "x"
    forward = _chain_lines(len(specs), arch.order, arch.dropout > 0, first, "new", relu_last=True)
    forward.append(f"return torch.cat([x, {'self.drop_path(new)' if drop_path else 'new'}], 1)")
    units = " then ".join(f"{'BN-ReLU-conv' if pre else 'conv-BN-ReLU'} {k}x{k}" for _, _, k, _, _ in specs)
    doc = f"Dense layer (Huang et al. 2017): y = [x, F(x)], F = {units}."
    return class_source(DenseLayer.__name__, doc, params, init, forward)


# -- the registry: one entry per block variant ------------------------------------------------------


class BlockKind(NamedTuple):
    """A block variant: the module `build` makes, the writer of its model.py class, its initialisation."""

    module: type[nn.Module]
    source: Callable[[Arch, Projections, bool], str]  # (arch, projections, drop_path) -> class source
    zero_last_bn: bool = False  # a new block starts as the identity (see `init_weights`)


BLOCKS: dict[tuple[Shortcut, Order], BlockKind] = {
    (Shortcut.IDENTITY, Order.POST): BlockKind(PostActBlock, residual_source, zero_last_bn=True),
    (Shortcut.GATED, Order.POST): BlockKind(PostActBlock, residual_source),
    (Shortcut.IDENTITY, Order.PRE): BlockKind(PreActBlock, residual_source),
    (Shortcut.GATED, Order.PRE): BlockKind(PreActBlock, residual_source),
    (Shortcut.DENSE, Order.POST): BlockKind(DenseLayer, dense_source),
    (Shortcut.DENSE, Order.PRE): BlockKind(DenseLayer, dense_source),
}


def block_kind(arch: Arch) -> BlockKind:
    """The registered variant of `arch`'s blocks."""
    return BLOCKS[arch.shortcut, arch.order]
