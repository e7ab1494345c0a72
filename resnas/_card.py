"""card.md of an export folder: what the network is and costs, how it was trained, what input it takes, and
how to load it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TypedDict

from resnas._arch import MIN_RESOLUTION, Arch, Block, Order, Shortcut, Stem, Survival
from resnas._budget import format_flops
from resnas._build import count
from resnas._contract import InputContract, Resize

# The files of an export folder (see resnas._export).
MODEL_FILE = "model.py"
WEIGHTS_FILE = "weights.pt"
SAFETENSORS_FILE = "weights.safetensors"
ARCH_FILE = "arch.json"
SEARCHED_ARCH_FILE = "searched_arch.json"
PREPROCESS_FILE = "preprocess.json"
PROGRAM_FILE = "model.pt2"
ONNX_FILE = "model.onnx"
ONNX_DATA_FILE = "model.onnx.data"  # the ONNX exporter's file for weights over 2 GB
CARD_FILE = "card.md"
EXPORT_FILES = (MODEL_FILE, WEIGHTS_FILE, SAFETENSORS_FILE, ARCH_FILE, SEARCHED_ARCH_FILE, PREPROCESS_FILE,
                PROGRAM_FILE, ONNX_FILE, ONNX_DATA_FILE, CARD_FILE)
# model.onnx's input and output names.
ONNX_INPUT = "images"
ONNX_NORMALIZED_INPUT = "input"
ONNX_OUTPUT = "logits"
# The command that installs what model.onnx needs.
ONNX_INSTALL = "pip install 'resnas[onnx]'"

DEFAULT_TITLE = "A network exported by resnas"


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
    verified: str  # `resnas verify`'s result for this network, in words


class FolderInfo(TypedDict):
    """The input the folder's network takes, and which optional files the folder holds."""

    num_classes: int
    in_channels: int
    resolution: int
    trained: bool  # weights.pt and weights.safetensors are there
    pt2: bool  # model.pt2 is there
    onnx: bool  # model.onnx is there
    onnx_missing: str  # the package whose absence left model.onnx out, else ""
    contract: InputContract | None  # how raw images become the input; None: no preprocessing


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


def sentence(arch: Arch) -> str:
    """`describe(arch)` starting with a capital."""
    text = describe(arch)
    return text[0].upper() + text[1:]


# An absolute POSIX or Windows path inside a text (not the '/' of "1/p" or of a URL).
_ABSOLUTE_PATH = re.compile(r"(?<![\w./~:-])/[^\s'\"`]+|\b[A-Za-z]:\\[^\s'\"`]+")


def scrub(text: str) -> str:
    """`text` with absolute paths shortened to .../name, so an export folder tells nothing of this machine."""
    return _ABSOLUTE_PATH.sub(lambda m: ".../" + re.split(r"[/\\]", m[0].rstrip("/\\"))[-1], text)


# -- card.md, one function per section -------------------------------------------------------------


def _summary(arch: Arch, card: Card, io: FolderInfo) -> list[str]:
    """Title, the arch in words, its source, and a facts table: accuracy, data, input, weights."""
    lines = [f"# {card.get('title', DEFAULT_TITLE)}", "", sentence(arch) + ".", ""]
    if "source" in card:
        lines += [f"Source: {scrub(card['source'])}.", ""]
    facts = []
    if "val_accuracy" in card:
        trial = f" (trial {card['trial']})" if "trial" in card else ""
        facts.append(("validation accuracy", f"{card['val_accuracy']:.4f}{trial}"))
    elif "trial" in card:
        facts.append(("trial", str(card["trial"])))
    if "verified" in card:
        facts.append(("verified", scrub(card["verified"])))
    if "dataset" in card:
        facts.append(("dataset", card["dataset"] + (f": {scrub(card['data'])}" if "data" in card else "")))
    res, pt2 = io["resolution"], io["pt2"]
    files = [PROGRAM_FILE] * pt2 + [ONNX_FILE] * io["onnx"]
    if io["contract"] is not None:
        facts.append(("input", f"raw images N x {io['in_channels']} x H x W of any size, uint8 (0-255) or "
                      f"float (0-1): resized to {res}x{res} and normalised inside the network; "
                      f"{io['num_classes']} classes (see How to use it on your images)"))
    else:
        sizes = (f"{' and '.join(files)}: any batch size at this size; " if files else "") + \
            f"{MODEL_FILE}: any size >= {MIN_RESOLUTION}"
        facts.append(("input", f"{io['in_channels']}x{res}x{res}, {io['num_classes']} classes, normalised "
                      f"tensors: no preprocessing ({sizes})"))
    untrained = "none: an untrained export (Model() is freshly initialised" + \
        (f"; {' and '.join(files)} hold{'s' * (len(files) == 1)} a random initialisation, for timing only)"
         if files else ")")
    keys = " (resnas's keys, then preprocess.mean and preprocess.std)" if io["contract"] else ""
    facts.append(("weights", f"{WEIGHTS_FILE} and {SAFETENSORS_FILE}: the trained state dict{keys}"
                  if io["trained"] else untrained))
    return lines + ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in facts] + [""]


def _cost_row(network: str, which: str, arch: Arch, resolution: int, channels: int, classes: int) -> str:
    """A cost table row: `resnas.count` of `arch` at one input."""
    cost = count(arch, resolution=resolution, num_classes=classes, in_channels=channels)
    return (f"| {network} | {which}{channels}x{resolution}x{resolution}, {classes} classes | "
            f"{format_flops(cost.flops)} ({cost.flops:,}) | {cost.macs / 1e9:.3f} G | "
            f"{cost.params / 1e6:.3f} M |")


def _costs(arch: Arch, searched: Arch | None, card: Card, io: FolderInfo) -> list[str]:
    """## Cost: this network at its input, and at the deployment input (the searched one's, if narrowed)."""
    channels, classes = io["in_channels"], io["num_classes"]
    which = "training: " if "training_input" in card else ""
    lines = ["## Cost", "", "| network | input | FLOPs (fvcore) | MACs | params |", "|---|---|---|---|---|",
             _cost_row("this network", which, arch, io["resolution"], channels, classes)]
    deploy = card.get("deployment_input")
    if deploy is not None:
        if deploy["resolution"] != io["resolution"]:
            lines.append(_cost_row("this network", "deployment resolution: ", arch, deploy["resolution"],
                                   channels, classes))
        lines.append(_cost_row("this network" if searched is None else "searched network",
                               "deployment, the budget's: ", arch if searched is None else searched,
                               deploy["resolution"], deploy["channels"], deploy["classes"]))
    unpriced = " The preprocessing (resize, normalisation) is not counted." if io["contract"] else ""
    return lines + ["", ("FLOPs follow fvcore's count (one per multiply-add, the unit of resnas budgets); "
                         f"MACs count conv and linear multiply-adds.{unpriced}"), ""]


def _training(card: Card) -> list[str]:
    """## Training proxy: the settings each candidate was trained with; nothing when the card has none."""
    proxy = [(k.replace("_", " "), card[k])  # type: ignore[literal-required]
             for k in ("epochs", "train_samples", "val_samples", "batch_size", "lr") if k in card]
    if not (proxy or "training_input" in card or "proxy_width" in card):
        return []
    lines = ["## Training proxy", ""]
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
        lines.append(f"- search command: `{scrub(card['command'])}`")
    return lines + [""]


def _architecture(searched: Arch | None, card: Card, io: FolderInfo) -> list[str]:
    """## Architecture: arch.json, and the searched arch when the network here is its narrowed proxy."""
    files = ([MODEL_FILE] + [WEIGHTS_FILE, SAFETENSORS_FILE] * io["trained"] + [PROGRAM_FILE] * io["pt2"]
             + [ONNX_FILE] * io["onnx"])
    lines = ["## Architecture", "",
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
    return lines + [""]


# -- the input contract in words ------------------------------------------------------------------


def _resize_words(contract: InputContract) -> str:
    """How the contract resizes an image, in words."""
    r = contract.resolution
    if contract.resize is Resize.STRETCH:
        return f"the whole image stretched to {r}x{r}"
    return f"the shorter side resized to {r} (the longer keeping the aspect), then the centre {r}x{r} cut out"


def _statistics_words(contract: InputContract) -> str:
    """'mean 0.2860 and std 0.3530', or per channel for several."""
    if contract.channels == 1:
        return f"mean {contract.mean[0]:.4f} and std {contract.std[0]:.4f}"
    return (f"per-channel means ({', '.join(f'{m:.4f}' for m in contract.mean)}) and stds "
            f"({', '.join(f'{s:.4f}' for s in contract.std)})")


def _reading(channels: int) -> list[str]:
    """Example lines: one image file as the uint8 tensor x, 1 x C x H x W."""
    if channels == 1:
        return ['image = Image.open("image.png").convert("L")  # grayscale, as trained',
                "x = torch.from_numpy(np.array(image))[None, None]  # uint8, 1 x 1 x H x W"]
    if channels == 3:
        return ['image = Image.open("image.jpg").convert("RGB")  # RGB, as trained',
                "x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None]  # uint8, 1 x 3 x H x W"]
    return [f"x = torch.from_numpy(array)[None]  # array: your uint8 image, {channels} x H x W"]


def _class_words(names: tuple[str, ...]) -> str:
    """'0 T-shirt/top, 1 Trouser, ...': every class up to 30, else the first 10 and a pointer."""
    shown = names if len(names) <= 30 else names[:10]
    more = f", ... ({len(names)} in all)" if len(shown) < len(names) else ""
    return ", ".join(f"{i} {n}" for i, n in enumerate(shown)) + more


def _no_contract(io: FolderInfo) -> list[str]:
    """## Input, for a network without an input contract: no preprocessing, in so many words."""
    why = ("no input contract was given to this export" if io["trained"] else
           "this network is untrained, so no training data says how images become its input")
    names = [MODEL_FILE] + [PROGRAM_FILE] * io["pt2"] + [ONNX_FILE] * io["onnx"]
    files = " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
    r = io["resolution"]
    words = (f"No preprocessing: {why}. {files} take float tensors N x {io['in_channels']} x {r} x {r}, "
             f"resized and normalised already ({MODEL_FILE}: any size >= {MIN_RESOLUTION}), as you train it.")
    return ["## Input", "", words, ""]


def _usage(io: FolderInfo) -> list[str]:
    """## How to use it on your images: the input contract in words, an example, the classes, the switch."""
    contract = io["contract"]
    if contract is None:
        return _no_contract(io)
    r, c = contract.resolution, contract.channels
    kind = {1: "grayscale ", 3: "RGB "}.get(c, "")
    contract_words = (
        f"The network takes {kind}images as they are: uint8 tensors (0-255) or float tensors (0-1), N x {c} "
        f"x H x W of any height and width. Inside, `Preprocess` does to them what training did: "
        f"{_resize_words(contract)} (bilinear, antialiased), pixels scaled to [0, 1], then normalised with "
        f"the training images' {_statistics_words(contract)}. Training stored its resized images rounded to "
        "whole grey levels, so the network's inputs agree with training's to within one grey level. "
        f"{PREPROCESS_FILE} states the same for other tools, with the input each file takes.")
    example = ["```python", "import numpy as np, torch", "from PIL import Image",
               "from model import CLASS_NAMES, load  # in this folder: PyTorch only (numpy, Pillow: images)",
               "", "model = load()", *_reading(c), "with torch.no_grad():",
               "    probs = model(x).softmax(1)[0]",
               "print(CLASS_NAMES[int(probs.argmax())], float(probs.max()))", "```"]
    classes = (f"Outputs, in order: {_class_words(contract.class_names)} (`CLASS_NAMES` in {MODEL_FILE}, "
               f"`class_names` in {PREPROCESS_FILE}).")
    switch = (f"Tensors already resized to {r}x{r} and normalised, as resnas trains on: "
              "`load(normalized_input=True)` or `Model(normalized_input=True)` skips the preprocessing "
              "(`model.normalized_input = True` on a loaded one)." + _program_words(io, c))
    return ["## How to use it on your images", "", contract_words, "", *example, "", classes, "", switch, ""]


def _program_words(io: FolderInfo, channels: int) -> str:
    """What model.pt2 and model.onnx take, in a sentence ("" when neither is there)."""
    files = " and ".join([PROGRAM_FILE] * io["pt2"] + [ONNX_FILE] * io["onnx"])
    if not files:
        return ""
    onnx = f"; {ONNX_FILE}'s input is named `{ONNX_INPUT}`, its output `{ONNX_OUTPUT}`" if io["onnx"] else ""
    return (f" {files} take uint8 images only, N x {channels} x H x W (any batch size, height and width), "
            f"and always preprocess them{onnx}.")


def _loading(name: str, io: FolderInfo) -> list[str]:
    """## Loading: with PyTorch alone, with resnas, from weights.safetensors, model.pt2 and model.onnx."""
    lines = ["## Loading", "", "```python"]
    if io["trained"]:
        lines.append("from model import load; model = load()  # in this folder; needs PyTorch only")
    else:
        lines.append("from model import Model; model = Model()  # untrained; in this folder; PyTorch only")
    lines.append(f'import resnas; model = resnas.load("{name}")  # with resnas installed'
                 + ("" if io["trained"] else f"; once a {WEIGHTS_FILE} is saved here"))
    if io["trained"]:
        lines.append("from model import Model; from safetensors.torch import load_file; "
                     f'model = Model().eval(); model.load_state_dict(load_file("{SAFETENSORS_FILE}"))')
    raw = io["contract"] is not None
    c, r = io["in_channels"], io["resolution"]
    taken = f"uint8 N x {c} x H x W, any batch and size" if raw else \
        f"float N x {c} x {r} x {r}, any batch size"
    if io["pt2"]:
        lines.append(f'import torch; model = torch.export.load("{name}/{PROGRAM_FILE}").module()  # {taken}')
    if io["onnx"]:
        feed = ONNX_INPUT if raw else ONNX_NORMALIZED_INPUT
        lines.append(f'import onnxruntime as ort; session = ort.InferenceSession("{name}/{ONNX_FILE}")')
        lines.append(f'logits = session.run(None, {{"{feed}": x.numpy()}})[0]  # x: {taken}')
    lines += ["```", ""]
    if io["onnx_missing"]:
        lines += [f"No {ONNX_FILE}: {io['onnx_missing']} was not installed where this folder was exported "
                  f"(`{ONNX_INSTALL}`, then export again).", ""]
    return lines


def render(arch: Arch, card: Card, folder_name: str, io: FolderInfo) -> str:
    """card.md of the folder `folder_name`: summary, input, costs, training proxy, architecture, loading."""
    searched = card.get("searched_arch")
    if searched == arch:
        searched = None  # not narrowed: one network
    lines = (_summary(arch, card, io) + _usage(io) + _costs(arch, searched, card, io) + _training(card)
             + _architecture(searched, card, io) + _loading(folder_name, io))
    return "\n".join(lines)
