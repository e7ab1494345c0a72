"""resnas: architecture search over the ResNet family under a FLOP budget."""

from __future__ import annotations

from typing import Any

from resnas import zoo
from resnas._arch import Arch, Block, Order, Shortcut, StageSpec, Stem, Survival
from resnas._blocks import Cost
from resnas._build import Network, build, count
from resnas._errors import ConfigError, DataError, ResnasError, StorageError

__all__ = [
    "Arch",
    "Block",
    "ConfigError",
    "Cost",
    "DataError",
    "Move",
    "Network",
    "Order",
    "ResnasError",
    "SearchSpace",
    "Shortcut",
    "StageSpec",
    "Stem",
    "StorageError",
    "Survival",
    "build",
    "count",
    "export",
    "load",
    "parse_budget",
    "zoo",
]

# Loaded on first use so that `import resnas` stays light (no optuna, ray or fvcore).
_LAZY = {
    "SearchSpace": ("resnas._space", "SearchSpace"),
    "Move": ("resnas._space", "Move"),
    "parse_budget": ("resnas._budget", "parse_budget"),
    "export": ("resnas._export", "export"),
    "load": ("resnas._export", "load"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'resnas' has no attribute {name!r}")
