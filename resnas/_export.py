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
model.py holds resnas._blocks' own source of the classes the network uses and its plan as a table
(`resnas._model_source`); `export` checks it computes resnas's logits.

Given an input contract (a trained network's), model.py also holds resnas._preprocess' source: its `Model`
takes raw images (uint8 or float in [0, 1], any size) and resizes and normalises them as training did, unless
built with normalized_input=True; model.pt2 and model.onnx take uint8 images of any batch, height and width.
`export` checks the raw path against torchvision's resize followed by the network. Without a contract (an
untrained export) every file takes normalised tensors at the export's resolution, as before.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from resnas._arch import Arch
from resnas._build import build, check_resolution
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
)
from resnas._contract import InputContract, Resize
from resnas._errors import ConfigError, StorageError
from resnas._model_source import OURS, model_source
from resnas._preprocess import Preprocess
from resnas._runfolder import ensure_writable, sweep_temporaries

__all__ = ["Card", "describe", "export", "load", "model_source", "onnx_missing"]

# model.py and resnas compute the same operations in the same order, so they agree to rounding.
_MATCH_TOLERANCE = 1e-5
# ONNX Runtime's kernels are not PyTorch's: they agree to float rounding, a little more after a deep net.
_ONNX_TOLERANCE = 1e-4
# The packages torch.onnx.export needs (onnxruntime only checks the file it writes).
_ONNX_PACKAGES = ("onnx", "onnxscript")

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
    ours = model.is_file() and OURS in model.read_text(encoding="utf-8", errors="replace")[:2000]
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
