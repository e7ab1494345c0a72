"""`export` and `load`: a network as a folder that needs nothing but PyTorch.

Layout of an export folder:
    model.py            standalone source of exactly this network (imports torch only): `Model`, `load()`
    weights.pt          its state dict, resnas's own keys (absent from an untrained export)
    arch.json           the `Arch` of this network
    searched_arch.json  the searched `Arch`, when the network here is its narrowed training proxy
    model.pt2           `torch.export` program of the eval-mode network, for any batch size
    card.md             what the network is, what it costs, how it was trained and how to load it

model.py, weights.pt, model.pt2 and arch.json always describe the same network: the one trained.
model.py holds resnas._blocks' own source of the classes that need no specialising (`shared_source`) and,
for the block, the class its `BLOCKS` entry writes for the arch; `export` checks it computes resnas's logits.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import os
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from resnas._arch import Arch, Block, Order, Shortcut, Survival
from resnas._blocks import (
    GATE_BIAS_INIT,
    DropPath,
    Head,
    HighwayGate,
    Projection,
    Projections,
    Stage,
    Stem,
    Transition,
    block_kind,
    class_source,
    conv,
    init_weights,
)
from resnas._build import _plan, _StagePlan, build, check_resolution, stem_kwargs
from resnas._card import (
    ARCH_FILE,
    CARD_FILE,
    DEFAULT_TITLE,
    EXPORT_FILES,
    MODEL_FILE,
    PROGRAM_FILE,
    SEARCHED_ARCH_FILE,
    WEIGHTS_FILE,
    Card,
    FolderInfo,
    describe,
    render,
    scrub,
    sentence,
)
from resnas._errors import ConfigError, StorageError
from resnas._runfolder import ensure_writable, sweep_temporaries

__all__ = ["Card", "describe", "export", "load", "model_source"]

# model.py and resnas compute the same operations in the same order, so they agree to rounding.
_MATCH_TOLERANCE = 1e-5

# -- model.py --------------------------------------------------------------------------------------

# model.py's docstring says this: an export folder holding a model.py without it is not resnas's.
_OURS = "Standalone: needs PyTorch only."
_HEADER = '''\
"""{title}

{description}.

{ours} `load()` builds the network and loads the weights.pt beside this
file; `Model()` builds it freshly initialised. State-dict keys are resnas's own.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
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


def shared_source(obj: type | Callable[..., Any]) -> str:
    """resnas._blocks' source of `obj` for model.py: as written, less a class's static methods (costs)."""
    lines = inspect.getsource(obj).splitlines(keepends=True)
    node = ast.parse("".join(lines)).body[0]
    cut: set[int] = set()
    for item in node.body if isinstance(node, ast.ClassDef) else []:
        if isinstance(item, ast.FunctionDef) and any(
                isinstance(d, ast.Name) and d.id == "staticmethod" for d in item.decorator_list):
            first = item.decorator_list[0].lineno - 1
            if not lines[first - 1].strip():
                first -= 1  # the blank line before it
            cut.update(range(first, item.end_lineno or first))
    return "".join(line for i, line in enumerate(lines) if i not in cut)


def _stage_table(arch: Arch, plan: list[_StagePlan]) -> list[str]:
    """`STAGES = [...]`, one row per stage, after a comment saying what a row holds."""
    transitions = any(s.transition for s in plan)
    rows: list[Any]
    if arch.shortcut is Shortcut.DENSE and transitions:
        lines = ["# One row per stage: dense layers, and the transition before it as (output channels, pool "
                 "stride),",
                 f"# None for the first stage; transitions keep floor({arch.compression:g} x channels)."]
        rows = [(len(s.blocks), (s.transition.kwargs["cout"], s.transition.kwargs["stride"])
                 if s.transition else None) for s in plan]
    elif arch.shortcut is Shortcut.DENSE:
        lines, rows = ["# Dense layers per stage."], [len(s.blocks) for s in plan]
    elif arch.block is Block.BASIC:
        lines = ["# One row per stage: blocks, stride of its first block, width."]
        rows = [(len(s.blocks), s.blocks[0].kwargs["stride"], s.blocks[0].kwargs["out"]) for s in plan]
    else:
        lines = ["# One row per stage: blocks, stride of its first block, inner (3x3) width, output width."]
        rows = [(len(s.blocks), s.blocks[0].kwargs["stride"], s.blocks[0].kwargs["inner"],
                 s.blocks[0].kwargs["out"]) for s in plan]
    return lines + ["STAGES = [\n" + "".join(f"    {row!r},\n" for row in rows) + "]"]


def _constants(arch: Arch, num_classes: int, in_channels: int, drop_path: bool, linear: bool) -> list[str]:
    """model.py's constants: input, widths, groups, regularisation, gate bias."""
    unit = "layer" if arch.shortcut is Shortcut.DENSE else "block"
    consts = [f"IN_CHANNELS = {in_channels}", f"NUM_CLASSES = {num_classes}",
              f"STEM_WIDTH = {arch.stem_width}"]
    if arch.shortcut is Shortcut.DENSE:
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
    if arch.shortcut is Shortcut.GATED:
        consts.append(f"GATE_BIAS_INIT = {GATE_BIAS_INIT!r}  # a new gate starts at T ~ "
                      f"sigmoid({GATE_BIAS_INIT:g}): its block mostly carries its input")
    return consts


def _block_classes(arch: Arch, plan: list[_StagePlan], drop_path: bool) -> list[str]:
    """Sources of the block's class (its `BLOCKS` entry writes it) and of the classes it uses."""
    projections: Projections = "none"
    if arch.shortcut is not Shortcut.DENSE:
        needs = [b.kwargs["stride"] != 1 or b.kwargs["cin"] != b.kwargs["out"]
                 for s in plan for b in s.blocks]
        projections = "all" if all(needs) else "some" if any(needs) else "none"
    parts = [shared_source(Projection)] if projections != "none" else []
    if arch.shortcut is Shortcut.GATED:
        parts.append(shared_source(HighwayGate))
    parts.append(block_kind(arch).source(arch, projections, drop_path))
    if any(s.transition for s in plan):
        parts.append(shared_source(Transition))
    return parts


def _stage_loop(arch: Arch, transitions: bool, prob: str) -> list[str]:
    """The lines of `Model.__init__` that build `stages` from STAGES, as `_plan` does."""
    if arch.shortcut is not Shortcut.DENSE:
        widths, out = ("width", "width") if arch.block is Block.BASIC else ("inner, out", "out")
        block = block_kind(arch).module.__name__
        return [f"for depth, stride, {widths} in STAGES:",
                "    blocks = []",
                "    for i in range(depth):",
                f"        blocks.append({block}(channels, {widths}, stride if i == 0 else 1{prob}))",
                f"        channels = {out}",
                "    stages.append(Stage(blocks))"]
    layers = ["    layers = []",
              "    for _ in range(depth):",
              f"        layers.append(DenseLayer(channels{prob}))",
              "        channels += GROWTH_RATE"]
    if not transitions:
        return ["for depth in STAGES:"] + layers + ["    stages.append(Stage(layers))"]
    return (["for depth, before in STAGES:",
             "    transition = None",
             "    if before is not None:",
             "        width, stride = before",
             f"        transition = Transition(channels, width, stride, pre={arch.order is Order.PRE})",
             "        channels = width"]
            + layers + ["    stages.append(Stage(layers, transition))"])


def _model(arch: Arch, plan: list[_StagePlan], drop_path: bool, linear: bool) -> str:
    """The Model class: stem, stages built from STAGES, head, and resnas's initialisation."""
    kind = block_kind(arch)
    transitions = any(s.transition for s in plan)
    stem = stem_kwargs(arch, 0)
    init = [f"self.stem = Stem(in_channels, STEM_WIDTH, imagenet={stem['imagenet']}, norm={stem['norm']})"]
    if linear:
        depth_rows = arch.shortcut is Shortcut.DENSE and not transitions  # STAGES rows are depths, not tuples
        depths = "STAGES" if depth_rows else "row[0] for row in STAGES"
        init.append(f"probs = iter(survival_probs(sum({depths})))")
    init += ["channels = STEM_WIDTH", "stages = []"]
    prob = ", next(probs)" if linear else ", SURVIVAL_PROB" if drop_path else ""
    init += _stage_loop(arch, transitions, prob)
    init += ["self.stages = nn.Sequential(*stages)",
             f"self.head = Head(channels, num_classes, final_norm={arch.order is Order.PRE})",
             f"init_weights(self, {kind.module.__name__})" if kind.zero_last_bn else "init_weights(self)"]
    stages = f"{len(arch.stages)} stage{'s' * (len(arch.stages) > 1)}"
    return class_source("Model", f"Stem, {stages} of {kind.module.__name__}s, head.",
                        "num_classes: int = NUM_CLASSES, in_channels: int = IN_CHANNELS", init,
                        ["return self.head(self.stages(self.stem(x)))"])


def model_source(arch: Arch, *, num_classes: int, in_channels: int, title: str) -> str:
    """model.py of `arch`: constants, a per-stage table, the classes it uses, `Model`, `load()`."""
    plan, _ = _plan(arch)
    drop_path = any(p < 1.0 for p in arch.survival_probs())
    linear = drop_path and arch.survival is Survival.LINEAR
    # The title comes from outside (a run folder's name): it must neither end the docstring nor escape.
    heading = " ".join(title.split()).replace("\\", "/").replace('"""', "'''")
    consts = _constants(arch, num_classes, in_channels, drop_path, linear) + _stage_table(arch, plan)
    parts = [_HEADER.format(title=heading, description=textwrap.fill(sentence(arch), width=100), ours=_OURS)
             + "\n" + "\n".join(consts) + "\n"]
    parts += [_SURVIVAL_PROBS] * linear + [shared_source(conv)] + [shared_source(DropPath)] * drop_path
    parts += [shared_source(Stem)] + _block_classes(arch, plan, drop_path)
    parts += [shared_source(Stage), shared_source(Head), shared_source(init_weights),
              _model(arch, plan, drop_path, linear), _LOAD]
    return "\n\n".join(p.rstrip("\n") + "\n" for p in parts)


# -- writing and reading an export folder ----------------------------------------------------------


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


def _json(arch: Arch) -> str:
    """arch.json text, as the run folder's best/arch.json is written."""
    return json.dumps(arch.to_dict(), indent=2, sort_keys=True) + "\n"


def _resolution(card: Card, resolution: int | None, num_classes: int, in_channels: int) -> int:
    """The checked resolution to export at (default: the card's training, else deployment input, else 224)."""
    unknown = sorted(set(card) - set(Card.__annotations__))
    if unknown:
        raise ConfigError(f"card: unknown key {unknown[0]!r}; known: {', '.join(Card.__annotations__)}")
    if resolution is None:
        resolution = (card.get("training_input") or card.get("deployment_input") or {}).get("resolution", 224)
    check_resolution(resolution)
    training = card.get("training_input")
    if training is not None and (training["classes"], training["channels"]) != (num_classes, in_channels):
        raise ConfigError(f"card: training_input has {training['classes']} classes and "
                          f"{training['channels']} channels, the network {num_classes} and {in_channels}")
    return resolution


def _network(arch: Arch, state_dict: Mapping[str, torch.Tensor] | None, num_classes: int, in_channels: int
             ) -> nn.Module:
    """`build(arch)` in eval mode, with `state_dict` loaded where given."""
    net = build(arch, num_classes=num_classes, in_channels=in_channels)
    if state_dict is not None:
        try:
            net.load_state_dict(state_dict, strict=True)
        except RuntimeError as e:
            raise ConfigError(f"state_dict does not fit the arch: {' '.join(str(e).split())[:500]}") from None
    return net.eval()


def _write_model(source: str, net: nn.Module, out: Path, example: torch.Tensor) -> nn.Module:
    """Write model.py; its `Model` with `net`'s weights in eval mode, checked to compute `net`'s logits."""
    (out / MODEL_FILE).write_text(source, encoding="utf-8")
    model: nn.Module = _import_model(out / MODEL_FILE).Model()
    model.load_state_dict(net.state_dict(), strict=True)
    model.eval()
    with torch.no_grad():
        want, got = net(example), model(example)
    # equal_nan: an untrained very deep net may overflow; model.py must then overflow the same way.
    if not torch.allclose(got, want, rtol=_MATCH_TOLERANCE, atol=_MATCH_TOLERANCE, equal_nan=True):
        diff = (want - got).abs().max().item()
        raise RuntimeError(f"the generated {MODEL_FILE} computes other logits than resnas (max diff "
                           f"{diff:.3g}); this is a bug in resnas's export, please report it with the arch")
    return model


def _write_rest(arch: Arch, card: Card, net: nn.Module, model: nn.Module, example: torch.Tensor, out: Path,
                trained: bool, pt2: bool) -> None:
    """weights.pt (trained only), arch.json, searched_arch.json (when narrowed), model.pt2 (when `pt2`)."""
    if trained:
        torch.save(net.state_dict(), out / WEIGHTS_FILE)
    (out / ARCH_FILE).write_text(_json(arch), encoding="utf-8")
    searched = card.get("searched_arch")
    if searched is not None and searched != arch:
        (out / SEARCHED_ARCH_FILE).write_text(_json(searched), encoding="utf-8")
    if pt2:
        torch.export.save(_program(model, example), out / PROGRAM_FILE)


def _check_out(out: Path) -> None:
    """Refuse a file, or a folder holding export files that resnas did not write (a user's model.py...)."""
    if out.exists() and not out.is_dir():
        raise StorageError(f"{out} is a file, not a folder; pass a new folder", field="out")
    clash = [name for name in EXPORT_FILES if (out / name).exists()]
    model = out / MODEL_FILE
    ours = model.is_file() and _OURS in model.read_text(encoding="utf-8", errors="replace")[:2000]
    if clash and not ours:
        raise StorageError(f"{out} holds {', '.join(clash)}, which resnas did not write and will not "
                           "overwrite; pass a new or empty folder", field="out")


def _publish(stage: Path, out: Path) -> None:
    """Move a complete export from `stage` into `out`, removing what an earlier export left there."""
    ensure_writable(out, "the export folder")
    for name in EXPORT_FILES:
        if (stage / name).exists():
            os.replace(stage / name, out / name)
        else:  # an earlier export's file that would describe another network
            (out / name).unlink(missing_ok=True)


def export(arch: Arch, state_dict: Mapping[str, torch.Tensor] | None, folder: str | os.PathLike[str], *,
           num_classes: int, in_channels: int = 3, resolution: int | None = None, card: Card | None = None,
           pt2: bool = True) -> Path:
    """Write `arch` (with `state_dict`, or untrained when None) as an export folder; returns the folder.

    `resolution` is the input size model.pt2 is exported for (any batch size) and the card's first cost
    row; default: the card's training input, else its deployment input, else 224. `pt2=False` skips
    model.pt2 (torch.export takes seconds to minutes on deep nets).
    """
    info: Card = card if card is not None else {}
    resolution = _resolution(info, resolution, num_classes, in_channels)
    out = Path(folder)
    _check_out(out)
    net = _network(arch, state_dict, num_classes, in_channels)
    title = scrub(info.get("title", DEFAULT_TITLE))
    source = model_source(arch, num_classes=num_classes, in_channels=in_channels, title=title)
    example = torch.randn(2, in_channels, resolution, resolution, generator=torch.Generator().manual_seed(0))
    trained = state_dict is not None
    io = FolderInfo(num_classes=num_classes, in_channels=in_channels, resolution=resolution, trained=trained,
                    pt2=pt2)
    ensure_writable(out.parent, "the export folder's parent")
    # Written beside `out` first: a failed or killed export leaves `out` as it was.
    sweep_temporaries(out.parent)
    stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.{os.getpid()}.", suffix=".tmp"))
    try:
        model = _write_model(source, net, stage, example)
        _write_rest(arch, info, net, model, example, stage, trained, pt2)
        (stage / CARD_FILE).write_text(render(arch, info, out.name, io), encoding="utf-8")
        _publish(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out
