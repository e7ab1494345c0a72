"""Classic ResNet-family networks as `Arch` points, and torchvision weight conversion."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

import torch

from resnas._arch import Arch, StageSpec
from resnas._errors import ConfigError

__all__ = ["ZooEntry", "names", "get", "entry", "name_of", "torchvision_names", "convert_torchvision_state_dict"]


@dataclass(frozen=True)
class ZooEntry:
    """A named network with the input it was designed for."""

    arch: Arch
    resolution: int
    num_classes: int
    source: str


def _stages(depths: tuple[int, ...], widths: tuple[int | None, ...], strides: tuple[int, ...]) -> tuple[StageSpec, ...]:
    return tuple(StageSpec(d, s, w) for d, w, s in zip(depths, widths, strides))


_IMAGENET_WIDTHS = (64, 128, 256, 512)
_IMAGENET_STRIDES = (1, 2, 2, 2)
_CIFAR_WIDTHS = (16, 32, 64)
_CIFAR_STRIDES = (1, 2, 2)


def _torchvision_resnet(depths: tuple[int, ...], block: str, **kw: object) -> ZooEntry:
    arch = Arch(stages=_stages(depths, _IMAGENET_WIDTHS, _IMAGENET_STRIDES), block=block, **kw)  # type: ignore[arg-type]
    return ZooEntry(arch, 224, 1000, "torchvision")


def _torchvision_densenet(depths: tuple[int, ...], growth: int, stem_width: int) -> ZooEntry:
    arch = Arch(stages=_stages(depths, (None,) * 4, _IMAGENET_STRIDES), block="bottleneck", shortcut="dense",
                order="pre", stem_width=stem_width, growth_rate=growth, bottleneck_size=4, compression=0.5)
    return ZooEntry(arch, 224, 1000, "torchvision")


def _cifar_resnet(n: int, source: str, **kw: object) -> ZooEntry:
    base: dict[str, object] = dict(block="basic", stem="cifar", stem_width=16)
    base.update(kw)
    arch = Arch(stages=_stages((n,) * 3, _CIFAR_WIDTHS, _CIFAR_STRIDES), **base)  # type: ignore[arg-type]
    return ZooEntry(arch, 32, 10, source)


_HE2015 = "He et al. 2015, Deep Residual Learning (CIFAR-10, option B shortcuts)"
_HE2016 = "He et al. 2016, Identity Mappings in Deep Residual Networks"

_ZOO: dict[str, ZooEntry] = {
    "resnet18": _torchvision_resnet((2, 2, 2, 2), "basic"),
    "resnet34": _torchvision_resnet((3, 4, 6, 3), "basic"),
    "resnet50": _torchvision_resnet((3, 4, 6, 3), "bottleneck"),
    "resnet101": _torchvision_resnet((3, 4, 23, 3), "bottleneck"),
    "resnet152": _torchvision_resnet((3, 8, 36, 3), "bottleneck"),
    "resnext50_32x4d": _torchvision_resnet((3, 4, 6, 3), "bottleneck", cardinality=32, base_width=4),
    "resnext101_32x8d": _torchvision_resnet((3, 4, 23, 3), "bottleneck", cardinality=32, base_width=8),
    "resnext101_64x4d": _torchvision_resnet((3, 4, 23, 3), "bottleneck", cardinality=64, base_width=4),
    "wide_resnet50_2": _torchvision_resnet((3, 4, 6, 3), "bottleneck", width_multiplier=2.0),
    "wide_resnet101_2": _torchvision_resnet((3, 4, 23, 3), "bottleneck", width_multiplier=2.0),
    "densenet121": _torchvision_densenet((6, 12, 24, 16), 32, 64),
    "densenet161": _torchvision_densenet((6, 12, 36, 24), 48, 96),
    "densenet169": _torchvision_densenet((6, 12, 32, 32), 32, 64),
    "densenet201": _torchvision_densenet((6, 12, 48, 32), 32, 64),
    "resnet20": _cifar_resnet(3, _HE2015),
    "resnet32": _cifar_resnet(5, _HE2015),
    "resnet44": _cifar_resnet(7, _HE2015),
    "resnet56": _cifar_resnet(9, _HE2015),
    "resnet110": _cifar_resnet(18, _HE2015),
    "resnet110_stochastic_depth": _cifar_resnet(
        18, "Huang et al. 2016, Deep Networks with Stochastic Depth (linear decay, p_L = 0.5)",
        survival="linear", survival_prob=0.5),
    "preact_resnet164": _cifar_resnet(18, _HE2016, block="bottleneck", order="pre"),
    "preact_resnet1001": _cifar_resnet(111, _HE2016, block="bottleneck", order="pre"),
    "wrn_28_10": _cifar_resnet(
        4, "Zagoruyko & Komodakis 2016, Wide Residual Networks (dropout 0.3)",
        order="pre", width_multiplier=10.0, dropout=0.3),
    "densenet_bc_100_12": ZooEntry(
        Arch(stages=_stages((16, 16, 16), (None,) * 3, _CIFAR_STRIDES), block="bottleneck", shortcut="dense",
             order="pre", stem="cifar", stem_width=24, growth_rate=12, bottleneck_size=4, compression=0.5),
        32, 10, "Huang et al. 2017, Densely Connected Convolutional Networks (DenseNet-BC, k = 12)"),
    "highway_resnet32": _cifar_resnet(
        5, "ResNet-32 with Highway gates (Srivastava et al. 2015): y = T(x) F(x) + (1 - T(x)) x",
        shortcut="gated"),
}


_NAMES = {e.arch: name for name, e in reversed(_ZOO.items())}  # the first name wins where archs coincide


def name_of(arch: Arch) -> str:
    """The zoo name of `arch` ("resnet18"), or "" when it is no zoo network."""
    return _NAMES.get(arch, "")


def names() -> list[str]:
    """All zoo names, torchvision's first."""
    return list(_ZOO)


def torchvision_names() -> list[str]:
    """Names that torchvision.models also defines (same architecture, convertible weights)."""
    return [n for n, e in _ZOO.items() if e.source == "torchvision"]


def entry(name: str) -> ZooEntry:
    """The zoo entry `name` (arch plus the input it was designed for)."""
    try:
        return _ZOO[name]
    except KeyError:
        raise ConfigError(f"unknown zoo network {name!r}; known: {', '.join(_ZOO)}") from None


def get(name: str) -> Arch:
    """The `Arch` of zoo network `name`."""
    return entry(name).arch


# torchvision key -> resnas key, first match wins. Old DenseNet checkpoints spell `norm.1` for `norm1`.
_RESNET_RULES = [
    (r"^conv1\.", "stem.conv."),
    (r"^bn1\.", "stem.bn."),
    (r"^layer(\d+)\.(\d+)\.downsample\.0\.", lambda m: f"stages.{int(m[1]) - 1}.blocks.{m[2]}.shortcut.conv."),
    (r"^layer(\d+)\.(\d+)\.downsample\.1\.", lambda m: f"stages.{int(m[1]) - 1}.blocks.{m[2]}.shortcut.bn."),
    (r"^layer(\d+)\.(\d+)\.", lambda m: f"stages.{int(m[1]) - 1}.blocks.{m[2]}."),
    (r"^fc\.", "head.fc."),
]
_DENSENET_RULES = [
    (r"^features\.conv0\.", "stem.conv."),
    (r"^features\.norm0\.", "stem.bn."),
    (r"^features\.denseblock(\d+)\.denselayer(\d+)\.(norm|conv)\.?(\d)\.",
     lambda m: f"stages.{int(m[1]) - 1}.blocks.{int(m[2]) - 1}.{'bn' if m[3] == 'norm' else 'conv'}{m[4]}."),
    (r"^features\.transition(\d+)\.norm\.", lambda m: f"stages.{m[1]}.transition.bn."),
    (r"^features\.transition(\d+)\.conv\.", lambda m: f"stages.{m[1]}.transition.conv."),
    (r"^features\.norm5\.", "head.norm."),
    (r"^classifier\.", "head.fc."),
]


def convert_torchvision_state_dict(name: str, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename torchvision's `name` weights to resnas keys; the result loads into `build(get(name))` strictly."""
    if name not in torchvision_names():
        raise ConfigError(f"{name!r} has no torchvision counterpart; convertible: {', '.join(torchvision_names())}")
    rules = _DENSENET_RULES if name.startswith("densenet") else _RESNET_RULES
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        for pattern, repl in rules:
            new, n = re.subn(pattern, repl, key)
            if n:
                out[new] = value
                break
        else:
            raise ConfigError(f"{name}: unexpected torchvision key {key!r}")
    return out
