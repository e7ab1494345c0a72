"""Steps through a search space: a one-dimension `Move`, and the uniform `Scale`s of widths or depths."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from resnas._arch import Arch


class Scale(str, enum.Enum):
    """What `SearchSpace.scaled` scales uniformly: the dimensions `_SPECS` marks with it (widths, depths)."""

    WIDTH = "width"
    DEPTH = "depth"


@dataclass(frozen=True)
class Move:
    """One step in the space: `dimension` from `old` to `new` (Optuna values), and the Arch it leads to."""

    dimension: str
    old: Any
    new: Any
    arch: Arch
    params: dict[str, Any]  # the Optuna parameters that rebuild `arch`

    @property
    def label(self) -> str:
        return f"{self.dimension} {self.old} -> {self.new}"

