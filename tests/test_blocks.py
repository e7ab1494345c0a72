"""Block behaviour: stochastic depth (train vs eval), Highway gates, dense concatenation, initial state."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import resnas
from resnas._arch import Order, Shortcut
from resnas._blocks import (
    GATE_BIAS_INIT,
    DenseLayer,
    DropPath,
    Gate,
    HighwayGate,
    IdentityGate,
    PostActBlock,
    PreActBlock,
)
from resnas._build import BLOCKS


def _freeze_norms(module: torch.nn.Module) -> None:
    """Train mode everywhere but batch norm, so only stochastic depth is random."""
    module.train()
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()


def test_drop_path_is_per_sample_and_unbiased() -> None:
    torch.manual_seed(0)
    drop = DropPath(0.25)
    x = torch.randn(1, 3, 2, 2).expand(20000, -1, -1, -1)
    y = drop.train()(x)
    kept = (y != 0).flatten(1).any(1)
    assert kept.float().mean().item() == pytest.approx(0.25, abs=0.02)
    assert torch.allclose(y[kept], x[kept] / 0.25)
    assert torch.allclose(y.mean(0), x[0], atol=0.05 * x.abs().max().item())
    assert torch.equal(drop.eval()(x), x)


@pytest.mark.parametrize("gate", [IdentityGate, HighwayGate])
def test_residual_block_eval_equals_expected_training_output(gate: Gate) -> None:
    torch.manual_seed(0)
    block = PreActBlock(cin=4, inner=4, out=4, stride=1, bottleneck=False, groups=1, gate=gate, dropout=0.0,
                        survival_prob=0.5)
    for p in block.parameters():  # any non-trivial weights
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(1, 4, 5, 5)
    _freeze_norms(block)
    with torch.no_grad():
        samples = block(x.expand(20000, -1, -1, -1))
        expected = block.eval()(x)[0]
    carried = torch.isclose(samples, x.expand_as(samples), atol=1e-6).flatten(1).all(1)
    assert carried.float().mean().item() == pytest.approx(0.5, abs=0.02)  # whole branch dropped per sample
    assert torch.allclose(samples.mean(0), expected, atol=0.05)


def test_dropped_dense_layer_adds_zeros() -> None:
    torch.manual_seed(0)
    layer = DenseLayer(cin=6, growth=4, bottleneck_size=2, bottleneck=True, groups=1, pre=True, dropout=0.0,
                       survival_prob=0.5)
    x = torch.randn(1000, 6, 4, 4)
    _freeze_norms(layer)
    with torch.no_grad():
        y = layer(x)
        full = layer.eval()(x)
    assert y.shape == (1000, 10, 4, 4) and torch.equal(y[:, :6], x)
    dropped = (y[:, 6:] == 0).flatten(1).all(1)
    assert dropped.float().mean().item() == pytest.approx(0.5, abs=0.06)
    assert torch.allclose(y[~dropped][:, 6:], full[~dropped][:, 6:] / 0.5, atol=1e-5)


def test_network_eval_is_deterministic_and_training_is_stochastic() -> None:
    torch.manual_seed(0)
    model = resnas.build(resnas.zoo.get("resnet110_stochastic_depth").replace(
        stages=[dict(depth=3, width=8, stride=1), dict(depth=3, width=16, stride=2)]), num_classes=10)
    for m in model.modules():  # undo the zero-init of the last BN so that branches contribute
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(m.weight)
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        _freeze_norms(model)
        assert not torch.equal(model(x), model(x))


def test_new_highway_block_mostly_carries_its_input() -> None:
    torch.manual_seed(0)
    block = PostActBlock(cin=8, inner=8, out=8, stride=1, bottleneck=False, groups=1, gate=HighwayGate,
                         dropout=0.0, survival_prob=1.0).eval()
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        t = torch.sigmoid(block.gate(x))
        f = block.bn2(block.conv2(F.relu(block.bn1(block.conv1(x)))))
        assert torch.allclose(t, torch.full_like(t, 1 / (1 + math.exp(-GATE_BIAS_INIT))))
        assert torch.allclose(block(x), F.relu(t * f + (1 - t) * x), atol=1e-6)


def test_new_post_identity_block_starts_as_identity() -> None:
    model = resnas.build(resnas.zoo.get("resnet20"), num_classes=10).eval()
    block = model.stages[0].blocks[1]
    x = torch.rand(2, 16, 8, 8)  # non-negative: ReLU(x) = x
    with torch.no_grad():
        assert torch.equal(block(x), x)


@pytest.mark.parametrize("resolution", [32, 33, 47, 64, 97])
def test_any_resolution_from_32(resolution: int) -> None:
    for name in ("resnet18", "densenet121", "densenet_bc_100_12"):
        arch = resnas.zoo.get(name)
        if name != "densenet_bc_100_12":
            arch = arch.replace(stages=[dict(s.to_dict(), depth=1) for s in arch.stages])
        model = resnas.build(arch, num_classes=7, in_channels=2).eval()
        with torch.no_grad():
            assert model(torch.randn(1, 2, resolution, resolution)).shape == (1, 7)


def test_count_rejects_small_resolution_and_bad_io() -> None:
    arch = resnas.zoo.get("resnet20")
    with pytest.raises(ValueError, match="resolution: 31 must be an integer >= 32"):
        resnas.count(arch, resolution=31)
    with pytest.raises(ValueError, match="num_classes"):
        resnas.build(arch, num_classes=0)


def test_every_block_variant_is_registered() -> None:
    assert set(BLOCKS) == {(s, o) for s in Shortcut for o in Order}
    # Only a post-order identity block starts as the identity (its last BN zero).
    assert [key for key, kind in BLOCKS.items() if kind.zero_last_bn] == [(Shortcut.IDENTITY, Order.POST)]
