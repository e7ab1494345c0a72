"""card.md of an export folder: what the network is, what it costs, how it was trained, how to load it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TypedDict

from resnas._arch import MIN_RESOLUTION, Arch, Block, Order, Shortcut, Stem, Survival
from resnas._budget import format_flops
from resnas._build import count

# The files of an export folder (see resnas._export).
MODEL_FILE = "model.py"
WEIGHTS_FILE = "weights.pt"
ARCH_FILE = "arch.json"
SEARCHED_ARCH_FILE = "searched_arch.json"
PROGRAM_FILE = "model.pt2"
CARD_FILE = "card.md"
EXPORT_FILES = (MODEL_FILE, WEIGHTS_FILE, ARCH_FILE, SEARCHED_ARCH_FILE, PROGRAM_FILE, CARD_FILE)

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
    trained: bool  # weights.pt is there
    pt2: bool  # model.pt2 is there


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
    facts.append(("input", f"{io['in_channels']}x{res}x{res}, {io['num_classes']} classes ("
                  + (f"{PROGRAM_FILE}: any batch size at this size; " if pt2 else "")
                  + f"{MODEL_FILE}: any size >= {MIN_RESOLUTION})"))
    facts.append(("weights", f"{WEIGHTS_FILE}: the trained state dict" if io["trained"] else
                  "none: an untrained export (Model() is freshly initialised"
                  + (f"; {PROGRAM_FILE} holds a random initialisation, for timing only)" if pt2 else ")")))
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
    return lines + ["", ("FLOPs follow fvcore's count (one per multiply-add, the unit of resnas budgets); "
                         "MACs count conv and linear multiply-adds."), ""]


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
    files = [MODEL_FILE] + [WEIGHTS_FILE] * io["trained"] + [PROGRAM_FILE] * io["pt2"]
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


def _loading(name: str, io: FolderInfo) -> list[str]:
    """## Loading: with PyTorch alone, with resnas, and from model.pt2."""
    lines = ["## Loading", "", "```python"]
    if io["trained"]:
        lines.append("from model import load; model = load()  # in this folder; needs PyTorch only")
    else:
        lines.append("from model import Model; model = Model()  # untrained; in this folder; PyTorch only")
    lines.append(f'import resnas; model = resnas.load("{name}")  # with resnas installed'
                 + ("" if io["trained"] else f"; once a {WEIGHTS_FILE} is saved here"))
    if io["pt2"]:
        lines.append(f'import torch; model = torch.export.load("{name}/{PROGRAM_FILE}").module()  '
                     "# any batch size")
    return lines + ["```", ""]


def render(arch: Arch, card: Card, folder_name: str, io: FolderInfo) -> str:
    """card.md of the folder `folder_name`: summary, costs, training proxy, architecture, loading."""
    searched = card.get("searched_arch")
    if searched == arch:
        searched = None  # not narrowed: one network
    lines = (_summary(arch, card, io) + _costs(arch, searched, card, io) + _training(card)
             + _architecture(searched, card, io) + _loading(folder_name, io))
    return "\n".join(lines)
