"""The zoo against outside references: torchvision's own modules and the papers' parameter counts."""

from __future__ import annotations

import pytest
import torch
import torchvision

import resnas
from resnas import zoo
from tests._reference import fvcore_flops, numel


@pytest.mark.parametrize("name", zoo.torchvision_names())
def test_torchvision_equivalence(name: str) -> None:
    torch.manual_seed(0)
    theirs = getattr(torchvision.models, name)().eval()
    ours = resnas.build(zoo.get(name)).eval()
    assert numel(ours) == numel(theirs)
    # fvcore on torchvision's own module, at the input its published numbers refer to.
    cost = resnas.count(zoo.get(name), resolution=224)
    assert cost.flops == fvcore_flops(theirs, 224)
    assert cost.params == numel(theirs)
    ours.load_state_dict(zoo.convert_torchvision_state_dict(name, theirs.state_dict()), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (ours(x) - theirs(x)).abs().max().item() < 1e-4


def test_published_resnet50_numbers() -> None:
    cost = resnas.count(zoo.get("resnet50"))
    assert cost.flops == 4_111_512_576  # fvcore's ResNet-50 at 224, from the task statement
    assert round(cost.macs / 1e9, 2) == 4.09  # torchvision's published GFLOPS


def test_legacy_densenet_keys_convert() -> None:
    sd = torchvision.models.densenet121().state_dict()
    legacy = {k.replace("norm1.", "norm.1.").replace("conv2.", "conv.2."): v for k, v in sd.items()}
    assert zoo.convert_torchvision_state_dict("densenet121", legacy).keys() == \
        zoo.convert_torchvision_state_dict("densenet121", sd).keys()


def test_conversion_errors() -> None:
    with pytest.raises(ValueError, match="no torchvision counterpart"):
        zoo.convert_torchvision_state_dict("resnet110", {})
    with pytest.raises(ValueError, match="unexpected torchvision key 'bogus.weight'"):
        zoo.convert_torchvision_state_dict("resnet18", {"bogus.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="unknown zoo network 'resnet9000'"):
        zoo.get("resnet9000")


# The papers' parameter counts (millions). DenseNet-BC's 0.8M is its CIFAR-100 model (342 * 100-way classifier).
PAPER_PARAMS = {
    "resnet20": (0.27, 10),
    "resnet32": (0.46, 10),
    "resnet44": (0.66, 10),
    "resnet56": (0.85, 10),
    "resnet110": (1.7, 10),
    "resnet110_stochastic_depth": (1.7, 10),
    "preact_resnet164": (1.7, 10),
    "preact_resnet1001": (10.2, 10),
    "wrn_28_10": (36.5, 10),
    "densenet_bc_100_12": (0.8, 100),
}


@pytest.mark.parametrize("name", PAPER_PARAMS)
def test_paper_parameter_counts(name: str) -> None:
    millions, classes = PAPER_PARAMS[name]
    params = resnas.count(zoo.get(name), resolution=32, num_classes=classes).params
    assert params == pytest.approx(millions * 1e6, rel=0.03)


def test_every_zoo_name_is_listed() -> None:
    expected = {
        "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d",
        "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2", "densenet121", "densenet161",
        "densenet169", "densenet201", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
        "preact_resnet164", "preact_resnet1001", "wrn_28_10", "densenet_bc_100_12",
        "resnet110_stochastic_depth", "highway_resnet32",
    }
    assert set(zoo.names()) == expected
    assert set(zoo.torchvision_names()) == {n for n in expected if hasattr(torchvision.models, n)}
