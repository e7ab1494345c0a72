"""`export` and `load`: a network as a folder that needs nothing but PyTorch.

Layout of an export folder:
    model.py             standalone source of exactly this network (imports torch only): `Model`, `load()`
    weights.pt           its state dict: resnas's keys, then preprocess.mean/std (absent when untrained)
    weights.safetensors  the same state dict as safetensors
    arch.json            the `Arch` of this network
    searched_arch.json   the searched `Arch`, when the network here is its narrowed training proxy
    preprocess.json      the input contract (how raw images become the input) and the input each file takes
    model.pt2            `torch.export` program of the eval-mode network
    model.onnx           the same program as ONNX (when the `onnx` extra is installed)
    card.md              what the network is and costs, how it was trained, what it takes, how to load it

model.py, the weights, model.pt2, model.onnx and arch.json always describe the same network: the one trained.
model.py holds resnas._blocks' own source of the classes that need no specialising (`shared_source`) and,
for the block, the class its `BLOCKS` entry writes for the arch; `export` checks it computes resnas's logits.

Given an input contract (a trained network's), model.py also holds resnas._preprocess' source: its `Model`
takes raw images (uint8 or float in [0, 1], any size) and resizes and normalises them as training did, unless
built with normalized_input=True; model.pt2 and model.onnx take uint8 images of any batch, height and width.
`export` checks the raw path against torchvision's resize followed by the network. Without a contract (an
untrained export) every file takes normalised tensors at the export's resolution, as before.
"""

from __future__ import annotations

import ast
import importlib
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
    ONNX_FILE,
    ONNX_INPUT,
    ONNX_NORMALIZED_INPUT,
    ONNX_OUTPUT,
    PREPROCESS_FILE,
    PROGRAM_FILE,
    SAFETENSORS_FILE,
    SEARCHED_ARCH_FILE,
    WEIGHTS_FILE,
    Card,
    FolderInfo,
    describe,
    render,
    scrub,
    sentence,
)
from resnas._contract import InputContract, Resize
from resnas._errors import ConfigError, StorageError
from resnas._preprocess import Preprocess, centre_offset, resize_bilinear
from resnas._runfolder import ensure_writable, sweep_temporaries

__all__ = ["Card", "describe", "export", "load", "model_source", "onnx_missing"]

# model.py and resnas compute the same operations in the same order, so they agree to rounding.
_MATCH_TOLERANCE = 1e-5
# ONNX Runtime's kernels are not PyTorch's: they agree to float rounding, a little more after a deep net.
_ONNX_TOLERANCE = 1e-4
# The packages torch.onnx.export needs (onnxruntime only checks the file it writes).
_ONNX_PACKAGES = ("onnx", "onnxscript")

# -- model.py --------------------------------------------------------------------------------------

# model.py's docstring says this: an export folder holding a model.py without it is not resnas's.
_OURS = "Standalone: needs PyTorch only."
_HEADER = '''\
"""{title}

{description}.

{ours} `load()` builds the network and loads the weights.pt beside this
file; `Model()` builds it freshly initialised. State-dict keys are resnas's own.{usage}
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
def load(folder: str | Path | None = None{param}) -> Model:
    """The trained network in eval mode, with the weights.pt in `folder` (default: beside this file).{doc}"""
    path = Path(folder if folder is not None else Path(__file__).parent) / "weights.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{{path}}: no weights here (an untrained export?); "
                                "Model() builds the network freshly initialised")
    model = Model({arg})
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()
'''

# model.py's docstring, and load()'s, on the input when the network preprocesses raw images.
_RAW_USAGE = """

It takes raw images: uint8 (0-255) or float (0-1) tensors N x C x H x W of any size, which `Preprocess`
resizes, scales and normalises as training did (the constants below; preprocess.json says the same).
`Model(normalized_input=True)` or `load(normalized_input=True)` skips that, for tensors already resized
to RESOLUTION and normalised. Output i is CLASS_NAMES[i]."""
_RAW_LOAD = """

    normalized_input: it takes tensors already resized and normalised instead of raw images.
    """


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


def _contract_constants(contract: InputContract) -> list[str]:
    """model.py's input contract: what `Preprocess` does to a raw image, and the outputs' names."""
    resize = ("the whole image stretched to a square" if contract.resize is Resize.STRETCH
              else "shorter side to RESOLUTION, then the centre crop")
    names = _tuple_lines("CLASS_NAMES", contract.class_names, "output i is CLASS_NAMES[i]")
    return ["# The input contract (preprocess.json): how raw images became the network's training input.",
            f"RESOLUTION = {contract.resolution}",
            f"RESIZE = {contract.resize.value!r}  # {resize}; bilinear, antialiased",
            f"MEAN = {contract.mean!r}  # per channel, of the training images scaled to [0, 1]",
            f"STD = {contract.std!r}"] + names


def _tuple_lines(name: str, values: tuple[str, ...], comment: str) -> list[str]:
    """`name = (...)`: the values' literals packed into lines of at most 100 columns."""
    rows, row = [], ""
    for item in (repr(v) + "," for v in values):
        if row and len(row) + len(item) + 5 > 100:
            rows.append(row)
            row = ""
        row = f"{row} {item}" if row else item
    return [f"{name} = (  # {comment}"] + [f"    {r}" for r in rows + [row]] + [")"]


def _model(arch: Arch, plan: list[_StagePlan], drop_path: bool, linear: bool, raw: bool) -> str:
    """The Model class: (Preprocess where `raw`,) stem, stages from STAGES, head, resnas's initialisation."""
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
             f"self.head = Head(channels, num_classes, final_norm={arch.order is Order.PRE})"]
    # After the network's own modules: its state-dict keys keep resnas's order, preprocess.* come last.
    init += ["self.normalized_input = normalized_input",
             "self.preprocess = Preprocess(RESOLUTION, MEAN, STD, RESIZE)"] * raw
    init.append(f"init_weights(self, {kind.module.__name__})" if kind.zero_last_bn else "init_weights(self)")
    stages = f"{len(arch.stages)} stage{'s' * (len(arch.stages) > 1)}"
    params = "num_classes: int = NUM_CLASSES, in_channels: int = IN_CHANNELS"
    forward = ["return self.head(self.stages(self.stem(x)))"]
    parts = f"{stages} of {kind.module.__name__}s, head."
    if not raw:
        return class_source("Model", f"Stem, {parts}", params, init, forward)
    doc = (f"Preprocess, stem, {parts}\n\nIt takes raw images, uint8 (0-255) or float (0-1), N x C x H x W "
           "of any size; with normalized_input=True, tensors already resized to RESOLUTION and normalised "
           "(the preprocessing skipped).")
    forward = ["if not self.normalized_input:", "    x = self.preprocess(x)"] + forward
    params += ",\n                 normalized_input: bool = False"  # model.py keeps to 110 columns
    return class_source("Model", doc, params, init, forward)


def model_source(arch: Arch, *, num_classes: int, in_channels: int, title: str,
                 contract: InputContract | None = None) -> str:
    """model.py of `arch`: constants (the input contract's too, when given), a per-stage table, the classes it
    uses (`Preprocess` when given a contract), `Model`, `load()`."""
    plan, _ = _plan(arch)
    drop_path = any(p < 1.0 for p in arch.survival_probs())
    linear = drop_path and arch.survival is Survival.LINEAR
    raw = contract is not None
    # The title comes from outside (a run folder's name): it must neither end the docstring nor escape.
    heading = " ".join(title.split()).replace("\\", "/").replace('"""', "'''")
    consts = _constants(arch, num_classes, in_channels, drop_path, linear) + _stage_table(arch, plan)
    if contract is not None:
        consts += [""] + _contract_constants(contract)
    parts = [_HEADER.format(title=heading, description=textwrap.fill(sentence(arch), width=100), ours=_OURS,
                            usage=_RAW_USAGE * raw) + "\n" + "\n".join(consts) + "\n"]
    parts += [_SURVIVAL_PROBS] * linear + [shared_source(conv)] + [shared_source(DropPath)] * drop_path
    parts += [shared_source(Stem)] + _block_classes(arch, plan, drop_path)
    parts += [shared_source(Stage), shared_source(Head), shared_source(init_weights)]
    parts += [shared_source(resize_bilinear), shared_source(centre_offset), shared_source(Preprocess)] * raw
    parts += [_model(arch, plan, drop_path, linear, raw),
              _LOAD.format(param=", normalized_input: bool = False" * raw, doc=_RAW_LOAD * raw,
                           arg="normalized_input=normalized_input" * raw)]
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


def load(folder: str | os.PathLike[str], *, normalized_input: bool = False) -> nn.Module:
    """The network of an export folder, built by its own model.py, with weights.pt loaded, in eval mode.

    It takes raw images where the folder has an input contract; `normalized_input=True`: tensors already
    resized and normalised (a folder without a contract takes those anyway).
    """
    path = Path(folder) / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a resnas export folder (no {MODEL_FILE})")
    module = _import_model(path)
    raw = "normalized_input" in inspect.signature(module.load).parameters
    model: nn.Module = module.load(folder, normalized_input=normalized_input) if raw else module.load(folder)
    return model


def _program(model: nn.Module, example: torch.Tensor, raw: bool) -> torch.export.ExportedProgram:
    """`torch.export` of the eval-mode `model` for any batch size (and any image size where `raw`), without
    this machine's source paths."""
    sizes: dict[int, Any] = {0: torch.export.Dim("batch", min=1)}
    if raw:
        sizes.update({2: torch.export.Dim("height", min=1), 3: torch.export.Dim("width", min=1)})
    program = torch.export.export(model, (example,), dynamic_shapes=(sizes,))
    for node in program.graph.nodes:
        # Stack traces name the files that defined the modules: absolute paths of this machine.
        node.meta.pop("stack_trace", None)
    return program


def onnx_missing() -> str | None:
    """The first package that model.onnx needs and this Python cannot import, or None."""
    for name in _ONNX_PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError:
            return name
    return None


def _write_onnx(program: torch.export.ExportedProgram, example: torch.Tensor, want: torch.Tensor, path: Path,
                raw: bool) -> None:
    """model.onnx of `program`, checked with ONNX Runtime (when installed) to compute `want` on `example`."""
    names = ([ONNX_INPUT] if raw else [ONNX_NORMALIZED_INPUT], [ONNX_OUTPUT])
    onnx_program = torch.onnx.export(program, (example,), dynamo=True, input_names=names[0],
                                     output_names=names[1], verbose=False)
    assert onnx_program is not None  # the dynamo exporter always returns its program
    onnx_program.save(path)
    try:
        import onnxruntime
    except ImportError:
        return
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {names[0][0]: example.numpy()})[0])
    # An untrained deep net may overflow, and runtimes differ in where: nothing finite to compare then.
    close = torch.allclose(got, want, rtol=_ONNX_TOLERANCE, atol=_ONNX_TOLERANCE)
    if torch.isfinite(want).all() and not close:
        diff = (want - got).abs().max().item()
        raise RuntimeError(f"ONNX Runtime computes other logits from the written {ONNX_FILE} than "
                           f"{MODEL_FILE} (max diff {diff:.3g}); this is a bug in resnas's export, please "
                           "report it with the arch")


def _json(arch: Arch) -> str:
    """arch.json text, as the run folder's best/arch.json is written."""
    return json.dumps(arch.to_dict(), indent=2, sort_keys=True) + "\n"


def _resolution(card: Card, resolution: int | None, num_classes: int, in_channels: int,
                contract: InputContract | None) -> int:
    """The checked resolution to export at (default: the contract's, else the card's training input, else its
    deployment input, else 224)."""
    unknown = sorted(set(card) - set(Card.__annotations__))
    if unknown:
        raise ConfigError(f"card: unknown key {unknown[0]!r}; known: {', '.join(Card.__annotations__)}")
    if resolution is None:
        resolution = contract.resolution if contract is not None else \
            (card.get("training_input") or card.get("deployment_input") or {}).get("resolution", 224)
    check_resolution(resolution)
    training = card.get("training_input")
    if training is not None and (training["classes"], training["channels"]) != (num_classes, in_channels):
        raise ConfigError(f"card: training_input has {training['classes']} classes and "
                          f"{training['channels']} channels, the network {num_classes} and {in_channels}")
    given = (resolution, in_channels, num_classes)
    if contract is not None and (contract.resolution, contract.channels, contract.num_classes) != given:
        r = contract.resolution
        raise ConfigError(f"contract: {contract.channels}x{r}x{r} images and {contract.num_classes} classes, "
                          f"the export {in_channels}x{resolution}x{resolution} and {num_classes}; a network "
                          "takes the input it was trained on")
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


def _state(net: nn.Module, preprocess: Preprocess | None) -> dict[str, torch.Tensor]:
    """The exported state dict: the network's, resnas's keys, then the preprocessing's buffers."""
    state = dict(net.state_dict())
    if preprocess is not None:
        state.update({f"preprocess.{k}": v for k, v in preprocess.state_dict().items()})
    return state


def _reference_input(contract: InputContract, images: torch.Tensor) -> torch.Tensor:
    """uint8 `images` made the network's input by torchvision's resize (and centre crop), then normalised:
    what model.py's raw path is checked against, by other code than its own."""
    from torchvision.transforms.v2 import functional as tvf

    r, pixels = contract.resolution, images.float() / 255
    if contract.resize is Resize.STRETCH:
        x = tvf.resize(pixels, [r, r], antialias=True)
    else:
        x = tvf.center_crop(tvf.resize(pixels, r, antialias=True), [r, r])
    shape = (1, contract.channels, 1, 1)
    return (x - torch.tensor(contract.mean).view(shape)) / torch.tensor(contract.std).view(shape)


def _check(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    """A RuntimeError (a bug of resnas's) unless model.py's logits `got` are resnas's `want`."""
    # equal_nan: an untrained very deep net may overflow; model.py must then overflow the same way.
    if not torch.allclose(got, want, rtol=_MATCH_TOLERANCE, atol=_MATCH_TOLERANCE, equal_nan=True):
        diff = (want - got).abs().max().item()
        raise RuntimeError(f"the generated {MODEL_FILE} computes other logits than {what} (max diff "
                           f"{diff:.3g}); this is a bug in resnas's export, please report it with the arch")


def _write_model(source: str, net: nn.Module, state: Mapping[str, torch.Tensor], out: Path,
                 example: torch.Tensor, contract: InputContract | None, images: torch.Tensor | None
                 ) -> nn.Module:
    """Write model.py; its `Model` with `state` in eval mode, checked to compute `net`'s logits on the
    normalised `example`, and on raw `images` (with a contract) `net`'s after torchvision's preprocessing."""
    (out / MODEL_FILE).write_text(source, encoding="utf-8")
    # model.py's own class (given a contract, it has `normalized_input`).
    model = _import_model(out / MODEL_FILE).Model()
    model.load_state_dict(state, strict=True)
    model.eval()
    with torch.no_grad():
        if contract is None:
            _check(model(example), net(example), "resnas")
            return model
        model.normalized_input = True
        _check(model(example), net(example), "resnas on normalised input")
        model.normalized_input = False
        assert images is not None
        reference = net(_reference_input(contract, images))
        _check(model(images), reference, "resnas after torchvision's preprocessing")
    return model


def _preprocess_json(contract: InputContract, io: FolderInfo) -> str:
    """preprocess.json: the contract's fields, and the input each file of the folder takes."""
    channels = io["in_channels"]
    raw = {"layout": "NCHW", "shape": ["batch", channels, "height", "width"]}
    inputs: dict[str, Any] = {MODEL_FILE: {**raw, "dtype": ["uint8", "float32"], "range": {"uint8": [0, 255],
                                                                                          "float32": [0, 1]}}}
    if io["pt2"]:
        inputs[PROGRAM_FILE] = {**raw, "dtype": "uint8", "range": [0, 255]}
    if io["onnx"]:
        inputs[ONNX_FILE] = {**raw, "dtype": "uint8", "range": [0, 255], "input_name": ONNX_INPUT,
                             "output_name": ONNX_OUTPUT}
    r = contract.resolution
    normalized = {"how": f"{MODEL_FILE}: Model(normalized_input=True) or load(normalized_input=True)",
                  "layout": "NCHW", "shape": ["batch", channels, r, r], "dtype": "float32",
                  "takes": "tensors already resized, scaled to [0, 1] and normalised with mean and std"}
    record = {**contract.to_dict(), "inputs": inputs, "normalized_input": normalized}
    return json.dumps(record, indent=2) + "\n"


def _write_weights(state: Mapping[str, torch.Tensor], out: Path) -> None:
    """weights.pt and weights.safetensors: one state dict, same keys."""
    from safetensors.torch import save_file

    torch.save(dict(state), out / WEIGHTS_FILE)
    # safetensors stores each tensor's own bytes: contiguous, none sharing memory with another.
    save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, str(out / SAFETENSORS_FILE),
              metadata={"format": "pt"})


def _write_rest(arch: Arch, card: Card, state: Mapping[str, torch.Tensor] | None, model: nn.Module,
                example: torch.Tensor, out: Path, io: FolderInfo) -> None:
    """The weights (trained only), arch.json, searched_arch.json (when narrowed), preprocess.json (with a
    contract), model.pt2 and model.onnx (as `io` says; `example` is what they take)."""
    if state is not None:
        _write_weights(state, out)
    (out / ARCH_FILE).write_text(_json(arch), encoding="utf-8")
    searched = card.get("searched_arch")
    if searched is not None and searched != arch:
        (out / SEARCHED_ARCH_FILE).write_text(_json(searched), encoding="utf-8")
    contract = io["contract"]
    if contract is not None:
        (out / PREPROCESS_FILE).write_text(_preprocess_json(contract, io), encoding="utf-8")
    if not (io["pt2"] or io["onnx"]):
        return
    program = _program(model, example, raw=contract is not None)
    with torch.no_grad():
        want = model(example)
        _check(program.module()(example), want, f"its {PROGRAM_FILE}")
    if io["pt2"]:
        torch.export.save(program, out / PROGRAM_FILE)
    if io["onnx"]:
        _write_onnx(program, example, want, out / ONNX_FILE, raw=contract is not None)


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
           contract: InputContract | None = None, pt2: bool = True, onnx: bool = True) -> Path:
    """Write `arch` (with `state_dict`, or untrained when None) as an export folder; returns the folder.

    `contract`: how raw images became the network's training input; the exported network then takes raw
    images and preprocesses them itself (preprocess.json, the card). Without one it takes normalised tensors,
    as an untrained network must (no data says how). `resolution` is the input size of the card's first cost
    row and, without a contract, of model.pt2 and model.onnx (any batch size); default: the contract's, else
    the card's training input, else its deployment input, else 224. `pt2=False` and `onnx=False` skip
    model.pt2 and model.onnx (torch.export takes seconds to minutes on deep nets); model.onnx is also skipped,
    and the card says so, where `onnx_missing()` names a package not installed.
    """
    info: Card = card if card is not None else {}
    resolution = _resolution(info, resolution, num_classes, in_channels, contract)
    out = Path(folder)
    _check_out(out)
    net = _network(arch, state_dict, num_classes, in_channels)
    preprocess = None if contract is None else \
        Preprocess(contract.resolution, contract.mean, contract.std, contract.resize.value)
    state = _state(net, preprocess)
    title = scrub(info.get("title", DEFAULT_TITLE))
    source = model_source(arch, num_classes=num_classes, in_channels=in_channels, title=title,
                          contract=contract)
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(2, in_channels, resolution, resolution, generator=generator)
    # Raw images of another size and aspect than the training input's: the resize and crop do something.
    images = None if contract is None else \
        torch.randint(0, 256, (2, in_channels, resolution + 11, resolution + 4), dtype=torch.uint8,
                      generator=generator)
    missing = onnx_missing() if onnx else None
    io = FolderInfo(num_classes=num_classes, in_channels=in_channels, resolution=resolution,
                    trained=state_dict is not None, pt2=pt2, onnx=onnx and missing is None,
                    onnx_missing=missing or "", contract=contract)
    ensure_writable(out.parent, "the export folder's parent")
    # Written beside `out` first: a failed or killed export leaves `out` as it was.
    sweep_temporaries(out.parent)
    stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.{os.getpid()}.", suffix=".tmp"))
    try:
        model = _write_model(source, net, state, stage, example, contract, images)
        _write_rest(arch, info, state if state_dict is not None else None, model,
                    example if images is None else images, stage, io)
        (stage / CARD_FILE).write_text(render(arch, info, out.name, io), encoding="utf-8")
        _publish(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out
