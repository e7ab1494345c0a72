"""`Preprocess`: raw images -> the tensors a network was trained on, inside the exported network.

An export's model.py holds this module's source as written (`resnas._export.shared_source`), so it uses
nothing but torch. Its steps are the input contract's (`resnas._contract.InputContract`), written so that
`torch.export` and the ONNX exporter keep the batch, height and width dynamic: the crop's offsets are
arithmetic on the (symbolic) sizes and the crop itself an `index_select`, because a view's strides made
torch.export guard on the resized height and specialise the program to one aspect.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Preprocess(nn.Module):
    """uint8 (0-255) or float (0-1) images N x C x H x W, any H and W -> resized, scaled, normalised.

    resize "stretch": the whole image to resolution x resolution; "shorter_side_center_crop": the shorter
    side to resolution (the longer as torchvision's Resize(resolution) computes it), then the centre square
    as torchvision's CenterCrop. Both bilinear and antialiased, on float pixels: training resized its uint8
    images so and stored them rounded (image folders through PIL), so inputs agree to within a grey level.
    """

    def __init__(self, resolution: int, mean: tuple[float, ...], std: tuple[float, ...], resize: str) -> None:
        super().__init__()
        self.resolution = resolution
        self.resize = resize
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Integer images are pixel values; float ones are taken as already scaled to [0, 1].
        x = x.float() / 255 if not x.is_floating_point() else x.float()
        r = self.resolution
        if self.resize == "stretch":
            return (resize_bilinear(x, r, r) - self.mean) / self.std
        h, w = x.shape[-2], x.shape[-1]
        short = torch.sym_min(h, w)
        # torchvision: the longer side becomes int(r * long / short), which is floor division for sizes.
        x = resize_bilinear(x, r * h // short, r * w // short)
        rows = torch.arange(r, device=x.device) + centre_offset(x.shape[-2] - r)
        cols = torch.arange(r, device=x.device) + centre_offset(x.shape[-1] - r)
        return (x.index_select(-2, rows).index_select(-1, cols) - self.mean) / self.std


def resize_bilinear(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """`x` resized to height x width: bilinear, antialiased when shrinking (as torchvision and PIL resize)."""
    return F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)


def centre_offset(extra: int) -> int:
    """torchvision's CenterCrop offset int(round(extra / 2)) (halves to even), in integer arithmetic."""
    return (extra + (extra // 2) % 2) // 2
