"""What a trained network expects of its input: how raw images became the tensors it was trained on.

Training reads uint8 images, resizes them (once, when the data is loaded) and normalises them with the
training split's per-channel statistics (in `resnas._train`). An exported network carries this contract so
that it takes the images a user has; preprocess.json and the card state it.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from resnas._errors import ConfigError


class Resize(str, enum.Enum):
    """How an image of any size became resolution x resolution."""

    # The whole image, squeezed to a square: bilinear, antialiased (Fashion-MNIST, CIFAR, synthetic).
    STRETCH = "stretch"
    # Shorter side to the resolution (bilinear, antialiased), then the centre square: torchvision's
    # Resize(resolution) + CenterCrop(resolution), as image folders are decoded.
    SHORTER_SIDE_CENTER_CROP = "shorter_side_center_crop"


@dataclass(frozen=True)
class InputContract:
    """Raw image -> network input: resize to `resolution` (`resize`, bilinear, antialiased), scale to [0, 1],
    subtract `mean` and divide by `std` per channel. `class_names[i]` is output i."""

    resolution: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]
    resize: Resize = Resize.STRETCH

    def __post_init__(self) -> None:
        object.__setattr__(self, "resize", Resize(self.resize))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        object.__setattr__(self, "class_names", tuple(str(v) for v in self.class_names))
        if self.resolution < 1 or self.channels < 1:
            raise ConfigError(f"input contract: resolution {self.resolution} and channels {self.channels} "
                              "must be positive")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ConfigError(f"input contract: {self.channels} channels need as many means and stds, got "
                              f"{len(self.mean)} and {len(self.std)}")
        if not all(math.isfinite(m) for m in self.mean) or not all(s > 0 and math.isfinite(s) for s in self.std):
            raise ConfigError("input contract: means must be finite and stds positive")
        if len(set(self.class_names)) != len(self.class_names) or not self.class_names:
            raise ConfigError("input contract: class names must be distinct, at least one")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        """preprocess.json's fields (timm's pretrained_cfg names where they exist)."""
        return {"input_size": [self.channels, self.resolution, self.resolution], "resize": self.resize.value,
                "interpolation": "bilinear", "antialias": True, "scale": "pixel / 255",
                "mean": list(self.mean), "std": list(self.std), "num_classes": self.num_classes,
                "class_names": list(self.class_names)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InputContract:
        """`to_dict` read back; a KeyError or ValueError for a damaged one (callers name the file)."""
        channels, height, width = (int(v) for v in d["input_size"])
        if height != width:
            raise ValueError(f"input_size {d['input_size']} is not square")
        return cls(resolution=height, channels=channels, mean=tuple(d["mean"]), std=tuple(d["std"]),
                   class_names=tuple(d["class_names"]), resize=Resize(d["resize"]))
