"""`export` and `load`: a network as a folder that needs nothing but PyTorch.

Layout of an export folder:
    model.py            standalone source of exactly this network (imports torch only): `Model`, `load()`
    weights.pt          its state dict, resnas's own keys (absent from an untrained export)
    arch.json           the `Arch` of this network
    searched_arch.json  the searched `Arch`, when the network here is its narrowed training proxy
    model.pt2           `torch.export` program of the eval-mode network, for any batch size
    card.md             what the network is, what it costs, how it was trained and how to load it

model.py, weights.pt, model.pt2 and arch.json always describe the same network: the one trained.
model.py is written from the source fragments below, one per module kind of `resnas._blocks`,
specialised to the arch; tests/test_export.py holds them to the same outputs as those modules.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, TypedDict

import torch
from torch import nn

from resnas._arch import MIN_RESOLUTION, Arch, Block, Order, Shortcut, Stem, Survival
from resnas._budget import format_flops
from resnas._build import _plan, build, count

MODEL_FILE = "model.py"
WEIGHTS_FILE = "weights.pt"
ARCH_FILE = "arch.json"
SEARCHED_ARCH_FILE = "searched_arch.json"
PROGRAM_FILE = "model.pt2"
CARD_FILE = "card.md"

# model.py and resnas compute the same operations in the same order, so they agree to rounding.
_MATCH_TOLERANCE = 1e-5


class Card(TypedDict, total=False):
    """What card.md tells besides the network itself; every key may be left out."""

    title: str  # the card's heading, e.g. "trial 7 of run cifar-100m"
    source: str  # where the architecture comes from (a paper, a zoo)
    trial: int
    val_accuracy: float
    dataset: str
    data: str  # the training data, as the run describes it
    epochs: int
    train_samples: int
    val_samples: int
    batch_size: int
    lr: float
    proxy_width: float
    command: str  # the search command
    deployment_input: Mapping[str, int]  # resolution, channels, classes: what the FLOP budget refers to
    training_input: Mapping[str, int]  # resolution, channels, classes of the training data
    searched_arch: Arch  # the searched network, when the exported one is its narrowed proxy


# -- describing an arch in words -------------------------------------------------------------------


def describe(arch: Arch) -> str:
    """One sentence on `arch` for people: kind, stages, widths and regularisation."""
    order = "pre-activation" if arch.order is Order.PRE else "post-activation"
    depths = "-".join(str(s.depth) for s in arch.stages)
    stem = f"{'ImageNet' if arch.stem is Stem.IMAGENET else 'CIFAR'} stem ({arch.stem_width} channels)"
    if arch.shortcut is Shortcut.DENSE:
        parts = [f"{order} {arch.block.value} dense network", f"{len(arch.stages)} stages of {depths} layers",
                 f"growth rate {arch.growth_rate}"]
        if arch.block is Block.BOTTLENECK:
            parts.append(f"bottleneck {arch.bottleneck_size}x growth")
        parts.append(f"compression {arch.compression:g}")
    else:
        shortcut = "Highway-gated" if arch.shortcut is Shortcut.GATED else "identity"
        parts = [f"{order} {arch.block.value} residual network with {shortcut} shortcuts",
                 f"{len(arch.stages)} stages of {depths} blocks",
                 "planes " + "-".join(str(s.width) for s in arch.stages)]
        if arch.width_multiplier != 1.0:
            parts.append(f"width x{arch.width_multiplier:g}")
    if arch.cardinality > 1:
        parts.append(f"cardinality {arch.cardinality}" + (f" x {arch.base_width} channels"
                                                          if arch.shortcut is not Shortcut.DENSE else ""))
    parts.append(stem)
    if arch.survival is not Survival.NONE:
        parts.append(f"stochastic depth ({arch.survival.value}, last block survives with "
                     f"p = {arch.survival_prob:.4g})")
    if arch.dropout > 0:
        parts.append(f"dropout {arch.dropout:g}")
    return ", ".join(parts)


def _sentence(arch: Arch) -> str:
    """`describe(arch)` starting with a capital."""
    text = describe(arch)
    return text[0].upper() + text[1:]


# -- model.py: source fragments, one per module kind of resnas._blocks -----------------------------

_HEADER = '''\
"""{title}

{description}.

Standalone: needs PyTorch only. `load()` builds the network and loads the weights.pt beside this
file; `Model()` builds it freshly initialised. State-dict keys are resnas's own.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
'''

_DROP_PATH = '''\
class DropPath(nn.Module):
    """Stochastic depth: keep a sample's branch with probability p, scaled by 1/p; identity in eval."""

    def __init__(self, survival_prob: float) -> None:
        super().__init__()
        self.survival_prob = survival_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.survival_prob >= 1.0:
            return x
        keep = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device)
        keep.bernoulli_(self.survival_prob)
        return x * keep / self.survival_prob
'''

_HIGHWAY_GATE = '''\
class HighwayGate(nn.Conv2d):
    """Highway gate T = sigmoid(conv1x1/stride(x) + b); the block adds T (F - carry) to its carry."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__(cin, cout, 1, stride, 0, bias=True)

    def reset_parameters(self) -> None:
        # T starts near sigmoid(-2) = 0.12: a new block mostly carries its input.
        nn.init.zeros_(self.weight)
        nn.init.constant_(self.bias, -2.0)

    def residual(self, gate_input: torch.Tensor, carry: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self(gate_input)) * (f - carry)
'''

_SURVIVAL_PROBS = '''\
def survival_probs(num_blocks: int) -> list[float]:
    """Stochastic depth, linear decay: block i of L survives with 1 - (i / L)(1 - SURVIVAL_PROB)."""
    return [1.0 - (i / num_blocks) * (1.0 - SURVIVAL_PROB) for i in range(1, num_blocks + 1)]
'''

_LOAD = '''\
def load(folder: str | Path | None = None) -> Model:
    """The trained network in eval mode, with the weights.pt in `folder` (default: beside this file)."""
    path = Path(folder if folder is not None else Path(__file__).parent) / "weights.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no weights here (an untrained export?); "
                                "Model() builds the network freshly initialised")
    model = Model()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()
'''


def _class(name: str, doc: str, params: str, init: list[str], forward: list[str],
           base: str = "nn.Module") -> str:
    """A module class: `__init__(self, params)` running `init`, `forward(self, x)` running `forward`.

    `doc` is the docstring: a summary line, optionally a blank line and one paragraph (wrapped here).
    """
    summary, _, details = doc.partition("\n\n")
    lines = [f"class {name}({base}):"]
    if details:
        lines += [f'    """{summary}', ""]
        lines += [f"    {line}" for line in textwrap.wrap(details, 96)] + ['    """']
    else:
        lines.append(f'    """{summary}"""')
    lines += ["", f"    def __init__(self, {params}) -> None:", "        super().__init__()"]
    lines += [f"        {line}" for line in init]
    lines += ["", "    def forward(self, x: torch.Tensor) -> torch.Tensor:"]
    lines += [f"        {line}" for line in forward]
    return "\n".join(lines) + "\n"


def _conv(cin: str, cout: str, kernel: int, stride: str = "1", groups: str | None = None) -> str:
    """`nn.Conv2d(...)` of resnas's `conv` (padding kernel // 2, no bias), written as a person would."""
    pad = kernel // 2
    args = [cin, cout, str(kernel)]
    if stride != "1":
        args += [stride, str(pad)] if pad else [stride]
    elif pad:
        args.append(f"padding={pad}")
    if groups is not None:
        args.append(f"groups={groups}")
    return f"nn.Conv2d({', '.join(args + ['bias=False'])})"


# (input channels, output channels, kernel, stride, groups) of a branch's convs, as names in model.py.
_ConvSource = tuple[str, str, int, str, str | None]


def _conv_layers(convs: list[_ConvSource], order: Order) -> list[str]:
    """conv{i} and bn{i} as resnas registers them: bn{i} normalises conv{i}'s input (pre) or output (post)."""
    lines = []
    for i, (cin, cout, kernel, stride, groups) in enumerate(convs, 1):
        lines.append(f"self.conv{i} = {_conv(cin, cout, kernel, stride, groups)}")
        lines.append(f"self.bn{i} = nn.BatchNorm2d({cin if order is Order.PRE else cout})")
    return lines


def _chain(n: int, order: Order, dropout: bool, first: str, var: str, relu_last: bool) -> list[str]:
    """resnas's `_post_chain` / `_pre_chain` unrolled: `first` is the input (pre: already BN-ReLU'd)."""
    lines, x = [], first
    for i in range(1, n + 1):
        inp = x if order is Order.POST or i == 1 else f"F.relu(self.bn{i}({x}))"
        if i == n and dropout:
            inp = f"self.dropout({inp})"
        if order is Order.PRE:
            expr = f"self.conv{i}({inp})"
        else:
            expr = f"self.bn{i}(self.conv{i}({inp}))"
            if i < n or relu_last:
                expr = f"F.relu({expr}, inplace=True)"
        lines.append(f"{var} = {expr}")
        x = var
    return lines


def _stem(arch: Arch) -> str:
    """resnas._blocks.Stem for this arch's kind and order."""
    imagenet = arch.stem is Stem.IMAGENET
    norm = imagenet or arch.order is Order.POST
    conv = _conv("in_channels", "width", 7, "2") if imagenet else _conv("in_channels", "width", 3)
    init = [f"self.conv = {conv}"]
    out = "self.conv(x)"
    if norm:
        init.append("self.bn = nn.BatchNorm2d(width)")
        out = f"F.relu(self.bn({out}), inplace=True)"
    if imagenet:
        init.append("self.pool = nn.MaxPool2d(3, 2, 1)")
        out = f"self.pool({out})"
        doc = "7x7/2 conv, BN, ReLU, 3x3/2 max-pool (the ImageNet stem)."
    elif norm:
        doc = "3x3 conv, BN, ReLU (the CIFAR stem)."
    else:
        doc = "3x3 conv (the CIFAR stem); the first block's BN-ReLU follows (pre-activation)."
    return _class("Stem", doc, "in_channels: int, width: int", init, [f"return {out}"])


def _projection(order: Order) -> str:
    """resnas._blocks.Projection: 1x1 conv with the block's stride (+ BN in post order)."""
    init = ["self.conv = nn.Conv2d(cin, cout, 1, stride, bias=False)"]
    out = "self.conv(x)"
    if order is Order.POST:
        init.append("self.bn = nn.BatchNorm2d(cout)")
        out = f"self.bn({out})"
    return _class("Projection", "Shortcut where the shape changes: 1x1 conv with the block's stride"
                  + (", then BN." if order is Order.POST else "."), "cin: int, cout: int, stride: int",
                  init, [f"return {out}"])


def _residual_block(arch: Arch, projection: str, drop_path: bool) -> str:
    """resnas._blocks.PostActBlock / PreActBlock; `projection`: "none", "some" or "all" blocks have one."""
    pre = arch.order is Order.PRE
    groups = "GROUPS" if arch.cardinality > 1 else None
    convs: list[_ConvSource]
    if arch.block is Block.BASIC:
        params, out = "cin: int, width: int, stride: int", "width"
        convs = [("cin", "width", 3, "stride", None), ("width", "width", 3, "1", None)]
    else:
        params, out = "cin: int, inner: int, out: int, stride: int", "out"
        convs = [("cin", "inner", 1, "1", None), ("inner", "inner", 3, "stride", groups),
                 ("inner", "out", 1, "1", None)]
    init = _conv_layers(convs, arch.order)
    if arch.dropout > 0:
        init.append("self.dropout = nn.Dropout(DROPOUT)")
    if projection == "some":
        init.append(f"self.shortcut = Projection(cin, {out}, stride) "
                    f"if stride != 1 or cin != {out} else None")
    elif projection == "all":
        init.append(f"self.shortcut = Projection(cin, {out}, stride)")
    if arch.shortcut is Shortcut.GATED:
        init.append(f"self.gate = HighwayGate(cin, {out}, stride)")
    if drop_path:
        params += ", survival_prob: float"
        init.append("self.drop_path = DropPath(survival_prob)")

    a = "a" if pre else "x"  # what the branch, the projection and the gate see
    forward = ["a = F.relu(self.bn1(x))"] if pre else []
    forward += _chain(len(convs), arch.order, arch.dropout > 0, a, "f", relu_last=False)
    carry = "x"
    if projection != "none":
        carry = "carry"
        forward.append(f"carry = self.shortcut({a})" if projection == "all"
                       else f"carry = x if self.shortcut is None else self.shortcut({a})")
    residual = f"self.gate.residual({a}, {carry}, f)" if arch.shortcut is Shortcut.GATED else "f"
    if drop_path:
        residual = f"self.drop_path({residual})"
    forward.append(f"return {carry} + {residual}" if pre else f"return F.relu({carry} + {residual})")

    convs_doc = ", ".join(f"{c[2]}x{c[2]}" for c in convs)
    shortcut = "s + T(a) (F(a) - s)" if arch.shortcut is Shortcut.GATED else "s + F(a)"
    carried = "s = x, or the projection of a where the shape changes"
    if pre:
        doc = (f"Pre-activation {arch.block.value} block (He et al. 2016).\n\n"
               f"a = ReLU(BN(x)), y = {shortcut}: F = {convs_doc} convs with BN-ReLU between, {carried}.")
    else:
        doc = (f"Post-activation {arch.block.value} block (He et al. 2015).\n\n"
               f"y = ReLU({shortcut.replace('(a)', '(x)')}): F = {convs_doc} conv-BNs with ReLU between, "
               f"{carried.replace('of a', 'of x')}.")
    if projection == "none":
        doc = doc.replace(carried, "s = x").replace(carried.replace("of a", "of x"), "s = x")
    if arch.shortcut is Shortcut.GATED:
        doc += " T is the Highway gate."
    return _class("PreActBlock" if pre else "PostActBlock", doc, params, init, forward)


def _dense_layer(arch: Arch, drop_path: bool) -> str:
    """resnas._blocks.DenseLayer: y = [x, F(x)], F adding GROWTH_RATE channels."""
    pre = arch.order is Order.PRE
    convs: list[_ConvSource]
    if arch.block is Block.BASIC:
        convs = [("cin", "GROWTH_RATE", 3, "1", None)]
    else:
        groups = "GROUPS" if arch.cardinality > 1 else None
        convs = [("cin", "BOTTLENECK_WIDTH", 1, "1", None),
                 ("BOTTLENECK_WIDTH", "GROWTH_RATE", 3, "1", groups)]
    params = "cin: int"
    init = _conv_layers(convs, arch.order)
    if arch.dropout > 0:
        init.append("self.dropout = nn.Dropout(DROPOUT)")
    if drop_path:
        params += ", survival_prob: float"
        init.append("self.drop_path = DropPath(survival_prob)")
    first = "F.relu(self.bn1(x))" if pre else "x"
    forward = _chain(len(convs), arch.order, arch.dropout > 0, first, "new", relu_last=True)
    forward.append(f"return torch.cat([x, {'self.drop_path(new)' if drop_path else 'new'}], 1)")
    units = " then ".join(f"{'BN-ReLU-conv' if pre else 'conv-BN-ReLU'} {c[2]}x{c[2]}" for c in convs)
    return _class("DenseLayer", f"Dense layer (Huang et al. 2017): y = [x, F(x)], F = {units}.", params, init,
                  forward)


def _transition(order: Order, always_pool: bool) -> str:
    """resnas._blocks.Transition: 1x1 conv to fewer channels, then average-pool by the stride."""
    init = ["self.bn = nn.BatchNorm2d(cin)" if order is Order.PRE else "self.bn = nn.BatchNorm2d(cout)",
            "self.conv = nn.Conv2d(cin, cout, 1, bias=False)",
            "self.pool = nn.AvgPool2d(stride)" if always_pool else
            "self.pool = nn.AvgPool2d(stride) if stride > 1 else None"]
    forward = ["x = self.conv(F.relu(self.bn(x)))" if order is Order.PRE
               else "x = F.relu(self.bn(self.conv(x)))",
               "return self.pool(x)" if always_pool else "return x if self.pool is None else self.pool(x)"]
    kind = "BN-ReLU-conv1x1" if order is Order.PRE else "conv1x1-BN-ReLU"
    doc = f"Between dense stages: {kind} to fewer channels, then average-pool by the stride."
    return _class("Transition", doc, "cin: int, cout: int, stride: int", init, forward)


def _stage(transitions: bool) -> str:
    """resnas._blocks.Stage: (a transition, then) the stage's blocks."""
    if not transitions:
        return _class("Stage", "One stage: its blocks in sequence.", "blocks: list[nn.Module]",
                      ["self.blocks = nn.Sequential(*blocks)"], ["return self.blocks(x)"])
    return _class("Stage", "A transition (every stage but the first), then the stage's dense layers.",
                  "layers: list[nn.Module], transition: Transition | None",
                  ["self.transition = transition", "self.blocks = nn.Sequential(*layers)"],
                  ["if self.transition is not None:", "    x = self.transition(x)", "return self.blocks(x)"])


def _head(order: Order) -> str:
    """resnas._blocks.Head: (BN-ReLU in pre order,) global average pool, linear classifier."""
    init, forward = [], []
    if order is Order.PRE:
        init.append("self.norm = nn.BatchNorm2d(cin)")
        forward.append("x = F.relu(self.norm(x))")
    init.append("self.fc = nn.Linear(cin, num_classes)")
    forward.append("return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))")
    doc = ("BN-ReLU (a pre-activation net's last block ends un-normalised), global average pool, linear."
           if order is Order.PRE else "Global average pool, linear classifier.")
    return _class("Head", doc, "cin: int, num_classes: int", init, forward)


def _table(rows: list[Any]) -> str:
    """`STAGES = [...]`, one row per line."""
    return "STAGES = [\n" + "".join(f"    {row!r},\n" for row in rows) + "]"


def model_source(arch: Arch, *, num_classes: int, in_channels: int, title: str) -> str:
    """model.py of `arch`: the classes it uses, a per-stage table, `Model`, `load()`; imports torch only."""
    plan, _ = _plan(arch)
    dense = arch.shortcut is Shortcut.DENSE
    probs = arch.survival_probs()
    drop_path = any(p < 1.0 for p in probs)
    linear = drop_path and arch.survival is Survival.LINEAR
    block = "DenseLayer" if dense else ("PreActBlock" if arch.order is Order.PRE else "PostActBlock")

    unit = "layer" if dense else "block"
    consts = [f"IN_CHANNELS = {in_channels}", f"NUM_CLASSES = {num_classes}",
              f"STEM_WIDTH = {arch.stem_width}"]
    if dense:
        consts.append(f"GROWTH_RATE = {arch.growth_rate}  # channels each dense layer adds")
        if arch.block is Block.BOTTLENECK:
            consts.append(f"BOTTLENECK_WIDTH = {(arch.bottleneck_size or 0) * (arch.growth_rate or 0)}  "
                          f"# each layer's 1x1 conv: {arch.bottleneck_size} x the growth rate")
    if arch.cardinality > 1:
        consts.append(f"GROUPS = {arch.cardinality}  # groups of each {unit}'s 3x3 conv")
    if arch.dropout > 0:
        consts.append(f"DROPOUT = {arch.dropout!r}  # before each {unit}'s last conv")
    if drop_path:
        consts.append(f"SURVIVAL_PROB = {arch.survival_prob!r}  # stochastic depth: "
                      + ("the last block's survival probability" if linear
                         else "every block survives with this"))

    transitions = [s.transition for s in plan if s.transition is not None]
    if dense and transitions:
        consts.append(f"# One row per stage: dense layers, and the transition before it as (output channels, "
                      f"pool stride),\n# None for the first stage; transitions keep "
                      f"floor({arch.compression:g} x channels).")
        rows: list[Any] = [(len(s.blocks), (s.transition.kwargs["cout"], s.transition.kwargs["stride"])
                            if s.transition else None) for s in plan]
    elif dense:
        consts.append("# Dense layers per stage.")
        rows = [len(s.blocks) for s in plan]
    elif arch.block is Block.BASIC:
        consts.append("# One row per stage: blocks, stride of its first block, width.")
        rows = [(len(s.blocks), s.blocks[0].kwargs["stride"], s.blocks[0].kwargs["out"]) for s in plan]
    else:
        consts.append("# One row per stage: blocks, stride of its first block, inner (3x3) width, "
                      "output width.")
        rows = [(len(s.blocks), s.blocks[0].kwargs["stride"], s.blocks[0].kwargs["inner"],
                 s.blocks[0].kwargs["out"]) for s in plan]
    consts.append(_table(rows))

    # The title comes from outside (a run folder's name): it must neither end the docstring nor escape.
    heading = " ".join(title.split()).replace("\\", "/").replace('"""', "'''")
    parts = [_HEADER.format(title=heading, description=textwrap.fill(_sentence(arch), width=100))
             + "\n" + "\n".join(consts) + "\n"]
    if linear:
        parts.append(_SURVIVAL_PROBS)
    if drop_path:
        parts.append(_DROP_PATH)
    parts.append(_stem(arch))
    if dense:
        parts.append(_dense_layer(arch, drop_path))
        if transitions:
            parts.append(_transition(arch.order, all(t.kwargs["stride"] > 1 for t in transitions)))
    else:
        needs = [b.kwargs["stride"] != 1 or b.kwargs["cin"] != b.kwargs["out"]
                 for s in plan for b in s.blocks]
        projection = "all" if all(needs) else "some" if any(needs) else "none"
        if projection != "none":
            parts.append(_projection(arch.order))
        if arch.shortcut is Shortcut.GATED:
            parts.append(_HIGHWAY_GATE)
        parts.append(_residual_block(arch, projection, drop_path))
    parts.append(_stage(bool(transitions)))
    parts.append(_head(arch.order))
    parts.append(_model(arch, block, dense, bool(transitions), drop_path, linear))
    parts.append(_LOAD)
    return "\n\n".join(p.rstrip("\n") + "\n" for p in parts)


def _model(arch: Arch, block: str, dense: bool, transitions: bool, drop_path: bool, linear: bool) -> str:
    """The Model class: stem, stages built from STAGES, head, and resnas's initialisation."""
    prob = ", next(probs)" if linear else ", SURVIVAL_PROB" if drop_path else ""
    init = ["self.stem = Stem(in_channels, STEM_WIDTH)"]
    if linear:
        total = "sum(STAGES)" if dense and not transitions else "sum(row[0] for row in STAGES)"
        init.append(f"probs = iter(survival_probs({total}))")
    init += ["channels = STEM_WIDTH", "stages = []"]
    if dense and transitions:
        init += ["for depth, before in STAGES:",
                 "    transition = None",
                 "    if before is not None:",
                 "        width, stride = before",
                 "        transition = Transition(channels, width, stride)",
                 "        channels = width",
                 "    layers = []",
                 "    for _ in range(depth):",
                 f"        layers.append(DenseLayer(channels{prob}))",
                 "        channels += GROWTH_RATE",
                 "    stages.append(Stage(layers, transition))"]
    elif dense:
        init += ["for depth in STAGES:",
                 "    layers = []",
                 "    for _ in range(depth):",
                 f"        layers.append(DenseLayer(channels{prob}))",
                 "        channels += GROWTH_RATE",
                 "    stages.append(Stage(layers))"]
    else:
        widths = "width" if arch.block is Block.BASIC else "inner, out"
        out = "width" if arch.block is Block.BASIC else "out"
        init += [f"for depth, stride, {widths} in STAGES:",
                 "    blocks = []",
                 "    for i in range(depth):",
                 f"        blocks.append({block}(channels, {widths}, stride if i == 0 else 1{prob}))",
                 f"        channels = {out}",
                 "    stages.append(Stage(blocks))"]
    init += ["self.stages = nn.Sequential(*stages)", "self.head = Head(channels, num_classes)",
             "self._init_weights()"]
    stages = f"{len(arch.stages)} stage{'s' * (len(arch.stages) > 1)}"
    source = _class("Model", f"Stem, {stages} of {block}s, head.",
                    "num_classes: int = NUM_CLASSES, in_channels: int = IN_CHANNELS", init,
                    ["return self.head(self.stages(self.stem(x)))"])
    conv_test = "isinstance(m, nn.Conv2d)"
    if arch.shortcut is Shortcut.GATED:  # a gate keeps its own initialisation (reset_parameters)
        conv_test += " and not isinstance(m, HighwayGate)"
    init_weights = [
        "",
        "    def _init_weights(self) -> None:",
        '        """He-normal convs and unit batch norms, as resnas initialises a network."""',
        "        for m in self.modules():",
        f"            if {conv_test}:",
        '                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")',
        "            elif isinstance(m, nn.BatchNorm2d):",
        "                nn.init.ones_(m.weight)",
        "                nn.init.zeros_(m.bias)",
    ]
    if arch.order is Order.POST and arch.shortcut is Shortcut.IDENTITY:
        last = 2 if arch.block is Block.BASIC else 3
        init_weights += [
            "        # A new block starts as the identity: its last BN scales the branch by zero",
            "        # (Goyal et al. 2017).",
            "        for m in self.modules():",
            "            if isinstance(m, PostActBlock):",
            f"                nn.init.zeros_(m.bn{last}.weight)",
        ]
    return source + "\n".join(init_weights) + "\n"


# -- writing and reading an export folder ----------------------------------------------------------

# An absolute POSIX or Windows path inside a text (not the '/' of "1/p" or of a URL).
_ABSOLUTE_PATH = re.compile(r"(?<![\w./~:-])/[^\s'\"`]+|\b[A-Za-z]:\\[^\s'\"`]+")


def _scrub(text: str) -> str:
    """`text` with absolute paths shortened to .../name, so an export folder tells nothing of this machine."""
    return _ABSOLUTE_PATH.sub(lambda m: ".../" + re.split(r"[/\\]", m[0].rstrip("/\\"))[-1], text)


def _import_model(path: Path) -> ModuleType:
    """Execute an export folder's model.py as a fresh module (not registered in sys.modules)."""
    spec = importlib.util.spec_from_file_location("model", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    previous = sys.dont_write_bytecode
    # A __pycache__ would record this machine's path of model.py inside the folder.
    sys.dont_write_bytecode = True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = previous
    return module


def load(folder: str | os.PathLike[str]) -> nn.Module:
    """The network of an export folder, built by its own model.py, with weights.pt loaded, in eval mode."""
    path = Path(folder) / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a resnas export folder (no {MODEL_FILE})")
    model: nn.Module = _import_model(path).load(folder)
    return model


def _program(model: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """`torch.export` of the eval-mode `model` for any batch size, without this machine's source paths."""
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    for node in program.graph.nodes:
        # Stack traces name the files that defined the modules: absolute paths of this machine.
        node.meta.pop("stack_trace", None)
    return program


def _cost_row(network: str, which: str, arch: Arch, resolution: int, channels: int, classes: int) -> str:
    """A card.md table row: `resnas.count` of `arch` at one input."""
    cost = count(arch, resolution=resolution, num_classes=classes, in_channels=channels)
    return (f"| {network} | {which}{channels}x{resolution}x{resolution}, {classes} classes | "
            f"{format_flops(cost.flops)} ({cost.flops:,}) | {cost.macs / 1e9:.3f} G | "
            f"{cost.params / 1e6:.3f} M |")


def _card(arch: Arch, card: Card, folder: Path, *, num_classes: int, in_channels: int, resolution: int,
          trained: bool, pt2: bool) -> str:
    """card.md: what the folder holds, its costs, its training and how to load it."""
    searched = card.get("searched_arch")
    if searched == arch:
        searched = None  # not narrowed: one network
    title = card.get("title", "A network exported by resnas")
    lines = [f"# {title}", "", _sentence(arch) + ".", ""]
    if "source" in card:
        lines += [f"Source: {_scrub(card['source'])}.", ""]
    facts = []
    if "val_accuracy" in card:
        trial = f" (trial {card['trial']})" if "trial" in card else ""
        facts.append(("validation accuracy", f"{card['val_accuracy']:.4f}{trial}"))
    elif "trial" in card:
        facts.append(("trial", str(card["trial"])))
    if "dataset" in card:
        facts.append(("dataset", card["dataset"] + (f": {_scrub(card['data'])}" if "data" in card else "")))
    facts.append(("input", f"{in_channels}x{resolution}x{resolution}, {num_classes} classes ("
                  + (f"{PROGRAM_FILE}: any batch size at this size; " if pt2 else "")
                  + f"{MODEL_FILE}: any size >= {MIN_RESOLUTION})"))
    facts.append(("weights", f"{WEIGHTS_FILE}: the trained state dict" if trained else
                  "none: an untrained export (Model() is freshly initialised"
                  + (f"; {PROGRAM_FILE} holds a random initialisation, for timing only)" if pt2 else ")")))
    lines += ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in facts] + [""]

    lines += ["## Cost", "", "| network | input | FLOPs (fvcore) | MACs | params |", "|---|---|---|---|---|",
              _cost_row("this network", "training: " if "training_input" in card else "", arch, resolution,
                        in_channels, num_classes)]
    deploy = card.get("deployment_input")
    if deploy is not None:
        if deploy["resolution"] != resolution:
            lines.append(_cost_row("this network", "deployment resolution: ", arch, deploy["resolution"],
                                   in_channels, num_classes))
        lines.append(_cost_row("this network" if searched is None else "searched network",
                               "deployment, the budget's: ", arch if searched is None else searched,
                               deploy["resolution"], deploy["channels"], deploy["classes"]))
    lines += ["", ("FLOPs follow fvcore's count (one per multiply-add, the unit of resnas budgets); MACs "
                   "count conv and linear multiply-adds."), ""]

    proxy = [(k.replace("_", " "), card[k])  # type: ignore[literal-required]
             for k in ("epochs", "train_samples", "val_samples", "batch_size", "lr") if k in card]
    if proxy or "training_input" in card or "proxy_width" in card:
        lines += ["## Training proxy", ""]
        if proxy:
            lines.append("- " + ", ".join(f"{k} {v}" for k, v in proxy))
        if "training_input" in card:
            t = card["training_input"]
            lines.append(f"- training input {t['channels']}x{t['resolution']}x{t['resolution']}, "
                         f"{t['classes']} classes")
        if "proxy_width" in card:
            lines.append(f"- proxy width {card['proxy_width']:g}: every candidate trained with its widths "
                         f"scaled by this factor")
        if "command" in card:
            lines.append(f"- search command: `{_scrub(card['command'])}`")
        lines.append("")

    files = [MODEL_FILE] + [WEIGHTS_FILE] * trained + [PROGRAM_FILE] * pt2
    lines += ["## Architecture", "",
              (f"{ARCH_FILE} is the network in this folder, the one {', '.join(files[:-1])} and {files[-1]} "
               f"describe (`resnas.Arch.from_dict(json.load(open('{ARCH_FILE}')))` reads it back).")]
    if searched is not None:
        width = f" {card['proxy_width']:g}" if "proxy_width" in card else ""
        lines += ["", (f"The search chose {SEARCHED_ARCH_FILE} ({describe(searched)}). It was trained "
                       f"as a cheaper proxy with every width scaled by the proxy width{width}: that narrowed "
                       f"network is the one here, and {WEIGHTS_FILE} only fits it. The searched network "
                       f"itself has never been trained; train {SEARCHED_ARCH_FILE} at full width for the "
                       f"accuracy its budget pays for (`resnas export --arch {SEARCHED_ARCH_FILE} --out DIR` "
                       "writes an untrained model.py of it).")]
    lines.append("")

    name = folder.name
    lines += ["## Loading", "", "```python"]
    if trained:
        lines.append("from model import load; model = load()  # in this folder; needs PyTorch only")
    else:
        lines.append("from model import Model; model = Model()  # untrained; in this folder; PyTorch only")
    lines.append(f'import resnas; model = resnas.load("{name}")  # with resnas installed'
                 + ("" if trained else f"; once a {WEIGHTS_FILE} is saved here"))
    if pt2:
        lines.append(f'import torch; model = torch.export.load("{name}/{PROGRAM_FILE}").module()  '
                     "# any batch size")
    lines += ["```", ""]
    return "\n".join(lines)


def _json(arch: Arch) -> str:
    """arch.json text, as the run folder's best/arch.json is written."""
    return json.dumps(arch.to_dict(), indent=2, sort_keys=True) + "\n"


def export(arch: Arch, state_dict: Mapping[str, torch.Tensor] | None, folder: str | os.PathLike[str], *,
           num_classes: int, in_channels: int = 3, resolution: int | None = None, card: Card | None = None,
           pt2: bool = True) -> Path:
    """Write `arch` (with `state_dict`, or untrained when None) as an export folder; returns the folder.

    `resolution` is the input size model.pt2 is exported for (any batch size) and the card's first cost
    row; default: the card's training input, else its deployment input, else 224. `pt2=False` skips
    model.pt2 (torch.export takes seconds to minutes on deep nets).
    """
    info: Card = card if card is not None else {}
    unknown = sorted(set(info) - set(Card.__annotations__))
    if unknown:
        raise ValueError(f"card: unknown key {unknown[0]!r}; known: {', '.join(Card.__annotations__)}")
    if resolution is None:
        resolution = (info.get("training_input") or info.get("deployment_input") or {}).get("resolution", 224)
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < MIN_RESOLUTION:
        raise ValueError(f"resolution: {resolution!r} must be an integer >= {MIN_RESOLUTION}")
    training = info.get("training_input")
    if training is not None and (training["classes"], training["channels"]) != (num_classes, in_channels):
        raise ValueError(f"card: training_input has {training['classes']} classes and {training['channels']} "
                         f"channels, the network {num_classes} and {in_channels}")

    net = build(arch, num_classes=num_classes, in_channels=in_channels)
    if state_dict is not None:
        try:
            net.load_state_dict(state_dict, strict=True)
        except RuntimeError as e:
            raise ValueError(f"state_dict does not fit the arch: {' '.join(str(e).split())[:500]}") from None
    net.eval()

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    title = info.get("title", "A network exported by resnas")
    source = model_source(arch, num_classes=num_classes, in_channels=in_channels, title=_scrub(title))
    (out / MODEL_FILE).write_text(source, encoding="utf-8")
    model = _import_model(out / MODEL_FILE).Model()
    model.load_state_dict(net.state_dict(), strict=True)
    model.eval()

    example = torch.randn(2, in_channels, resolution, resolution, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = net(example), model(example)
    # equal_nan: an untrained very deep net may overflow; model.py must then overflow the same way.
    if not torch.allclose(got, want, rtol=_MATCH_TOLERANCE, atol=_MATCH_TOLERANCE, equal_nan=True):
        diff = (want - got).abs().max().item()
        raise RuntimeError(f"the generated {MODEL_FILE} computes other logits than resnas (max diff "
                           f"{diff:.3g}); this is a bug in resnas's export, please report it with the arch")

    stale = []
    if state_dict is not None:
        torch.save(net.state_dict(), out / WEIGHTS_FILE)
    else:
        stale.append(WEIGHTS_FILE)
    (out / ARCH_FILE).write_text(_json(arch), encoding="utf-8")
    searched = info.get("searched_arch")
    if searched is not None and searched != arch:
        (out / SEARCHED_ARCH_FILE).write_text(_json(searched), encoding="utf-8")
    else:
        stale.append(SEARCHED_ARCH_FILE)
    if pt2:
        torch.export.save(_program(model, example), out / PROGRAM_FILE)
    else:
        stale.append(PROGRAM_FILE)
    # An earlier export into the same folder must not leave files that describe another network.
    for name in stale:
        (out / name).unlink(missing_ok=True)
    card_text = _card(arch, info, out, num_classes=num_classes, in_channels=in_channels,
                      resolution=resolution, trained=state_dict is not None, pt2=pt2)
    (out / CARD_FILE).write_text(card_text, encoding="utf-8")
    return out
