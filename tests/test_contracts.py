"""Contracts every network must honour: every zoo member and random architectures from both spaces."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

import resnas
from resnas import Arch, SearchSpace, zoo
from tests._reference import fvcore_flops, numel

SPACES = Path(__file__).resolve().parent.parent / "search_spaces"
SPACE_FILES = ("resnet_family.yaml", "cifar_family.yaml")


def _sample(space_file: str, n: int, seed: int, max_params: int, max_flops: int, max_blocks: int) -> list[Arch]:
    """n seeded samples of the space, drawn again while over the size caps (fvcore runs a real forward)."""
    space = SearchSpace.from_yaml(SPACES / space_file)
    rng = random.Random(seed)
    archs: list[Arch] = []
    while len(archs) < n:
        arch = space.sample(rng)
        cost = resnas.count(arch, resolution=32)
        if cost.params <= max_params and cost.flops <= max_flops and arch.num_blocks <= max_blocks:
            archs.append(arch)
    return archs


# Cost exactness: many architectures, built on the meta device (no weight init), up to mid-size.
SWEEP = [(f, i, a) for f in SPACE_FILES
         for i, a in enumerate(_sample(f, 110, seed=1234, max_params=40_000_000, max_flops=400_000_000,
                                       max_blocks=60))]
# Training contracts need real weights and a backward pass: fewer and smaller.
TRAINABLE = [(f, i, a) for f in SPACE_FILES
             for i, a in enumerate(_sample(f, 12, seed=99, max_params=10_000_000, max_flops=150_000_000,
                                           max_blocks=40))]


def _build_uninitialised(arch: Arch, num_classes: int, in_channels: int) -> torch.nn.Module:
    with torch.device("meta"):
        model = resnas.build(arch, num_classes=num_classes, in_channels=in_channels)
    return model.to_empty(device="cpu")


def _check_trains(arch: Arch, resolution: int, num_classes: int, in_channels: int) -> None:
    torch.manual_seed(0)
    model = resnas.build(arch, num_classes=num_classes, in_channels=in_channels).train()
    x = torch.randn(2, in_channels, resolution, resolution)
    y = model(x)
    assert y.shape == (2, num_classes) and torch.isfinite(y).all()
    torch.nn.functional.cross_entropy(y, torch.tensor([0, 1])).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no finite gradient for {missing[:5]}"
    model.eval()
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, num_classes) and torch.isfinite(y).all()


@pytest.mark.parametrize("name", zoo.names())
def test_zoo_member_contract(name: str) -> None:
    entry = zoo.entry(name)
    cost = resnas.count(entry.arch, resolution=32, num_classes=entry.num_classes)
    model = _build_uninitialised(entry.arch, entry.num_classes, 3)
    assert cost.params == numel(model)
    assert cost.flops == fvcore_flops(model, 32)
    assert Arch.from_dict(entry.arch.to_dict()) == entry.arch
    _check_trains(entry.arch, 32, entry.num_classes, 3)


@pytest.mark.parametrize("space_file, index, arch", SWEEP, ids=[f"{f.split('_')[0]}-{i}" for f, i, _ in SWEEP])
def test_random_arch_cost_is_exact(space_file: str, index: int, arch: Arch) -> None:
    # Odd sizes and other class/channel counts exercise the size arithmetic, not just the 32x32x3 case.
    resolution, classes, channels = (32, 10, 3) if index % 2 else (37 + index % 5, 5, 1)
    cost = resnas.count(arch, resolution=resolution, num_classes=classes, in_channels=channels)
    model = _build_uninitialised(arch, classes, channels)
    assert cost.params == numel(model)
    assert cost.flops == fvcore_flops(model, resolution, channels)
    assert Arch.from_json(arch.to_json()) == arch


@pytest.mark.parametrize("space_file, index, arch", TRAINABLE,
                         ids=[f"{f.split('_')[0]}-{i}" for f, i, _ in TRAINABLE])
def test_random_arch_trains(space_file: str, index: int, arch: Arch) -> None:
    assert SearchSpace.from_yaml(SPACES / space_file).contains(arch)
    _check_trains(arch, 32, 10, 3)


def test_sweep_covers_every_family() -> None:
    """The random sweep really mixes the families it is meant to cover."""
    archs = [a for _, _, a in SWEEP]
    assert {a.shortcut.value for a in archs} == {"identity", "gated", "dense"}
    assert {a.order.value for a in archs} == {"post", "pre"}
    assert {a.block.value for a in archs} == {"basic", "bottleneck"}
    assert {a.survival.value for a in archs} == {"none", "uniform", "linear"}
    assert any(a.cardinality > 1 and a.shortcut.value == "dense" for a in archs)
    assert any(a.cardinality > 1 and a.shortcut.value != "dense" for a in archs)
    assert any(a.width_multiplier > 1 for a in archs) and any(a.dropout > 0 for a in archs)
