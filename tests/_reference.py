"""Outside references the tests compare resnas against."""

from __future__ import annotations

import torch
from fvcore.nn import FlopCountAnalysis
from torch import nn


def fvcore_flops(model: nn.Module, resolution: int, in_channels: int = 3) -> int:
    """fvcore's total for one eval-mode forward of a 1 x C x R x R input: the unit of every budget."""
    analysis = FlopCountAnalysis(model.eval(), torch.randn(1, in_channels, resolution, resolution))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return int(analysis.total())


def numel(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
