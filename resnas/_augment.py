"""Training-time augmentation of a batch of normalised float images on the device, drawn from a generator.

`Augment.PAD_CROP_FLIP`, CIFAR's recipe: zero-pad (the mean colour, once normalised) by resolution // 8,
crop back at a random offset, mirror half the images. `Augment.RESIZED_CROP_FLIP`, ImageNet's
(Inception-style): a random box of 8-100% of the area with aspect ratio in 3/4-4/3 (log-uniform), drawn as
torchvision's `RandomResizedCrop.get_params` draws it, resized back to the batch's resolution (bilinear,
by `affine_grid` + `grid_sample`), mirrored for half the images. Every image gets its own draws from the
run's generator, so a run is reproducible by its seed; a batch is transformed at once, never image by image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from resnas._datasets import Augment

__all__ = ["RATIO", "SCALE", "augment", "crop_flip", "resized_crop", "resized_crop_boxes"]

# The random-resized crop's range of the box's share of the image area, and of its width / height.
SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)
# Boxes drawn per image until one fits in the image, as torchvision; after that, a central crop.
_TRIES = 10


def augment(x: torch.Tensor, kind: Augment, generator: torch.Generator) -> torch.Tensor:
    """The B x C x H x W float batch `x` augmented as `kind` says, at its own size."""
    if kind is Augment.PAD_CROP_FLIP:
        return crop_flip(x, max(1, x.shape[-1] // 8), generator)
    if kind is Augment.RESIZED_CROP_FLIP:
        b, _, h, w = x.shape
        boxes = resized_crop_boxes(b, h, w, generator, device=x.device)
        flip = torch.rand(b, device=x.device, generator=generator) < 0.5
        return resized_crop(x, boxes, (h, w), flip)
    return x


def crop_flip(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Per-image random crop of a zero-padded (i.e. mean-coloured) batch plus random horizontal flip."""
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    offsets = torch.randint(0, 2 * pad + 1, (2, b, 1), device=x.device, generator=generator)
    rows = (offsets[0] + torch.arange(h, device=x.device))[:, :, None]
    cols = (offsets[1] + torch.arange(w, device=x.device))[:, None, :]
    # Advanced indices around a slice put the batch, row and column dims first: b x h x w x c.
    crops = padded[torch.arange(b, device=x.device)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
    flip = torch.rand(b, device=x.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], crops.flip(3), crops)


def resized_crop_boxes(n: int, height: int, width: int, generator: torch.Generator, *,
                       device: torch.device | str = "cpu") -> torch.Tensor:
    """`n` random boxes (top, left, height, width: n x 4 int64) in a height x width image, drawn as
    torchvision's `RandomResizedCrop.get_params` (SCALE, RATIO) draws one: the first of _TRIES rounded
    boxes that fits, else the central crop of the image clamped to RATIO."""
    scale = torch.empty(n, _TRIES, device=device).uniform_(*SCALE, generator=generator)
    log_ratio = torch.empty(n, _TRIES, device=device).uniform_(*map(math.log, RATIO), generator=generator)
    area = scale * (height * width)
    w = (area * log_ratio.exp()).sqrt().round()
    h = (area / log_ratio.exp()).sqrt().round()
    fits = (w >= 1) & (w <= width) & (h >= 1) & (h <= height)
    first = fits.int().argmax(dim=1, keepdim=True)  # the first maximum: the first try that fits
    found = fits.any(dim=1)
    central_h, central_w = _central_box(height, width)
    h = torch.where(found, h.gather(1, first)[:, 0], central_h).long()
    w = torch.where(found, w.gather(1, first)[:, 0], central_w).long()
    # Offsets uniform over the positions where the box fits: floor(u * count), u in [0, 1) (clamped
    # against float32 rounding u * count up to count).
    u = torch.rand(2, n, device=device, generator=generator)
    top = torch.minimum((u[0] * (height - h + 1)).long(), height - h)
    left = torch.minimum((u[1] * (width - w + 1)).long(), width - w)
    # torchvision centres the fallback crop; a fallback box is drawn only when no try fits.
    top = torch.where(found, top, (height - h) // 2)
    left = torch.where(found, left, (width - w) // 2)
    return torch.stack([top, left, h, w], dim=1)


def _central_box(height: int, width: int) -> tuple[int, int]:
    """The height and width of torchvision's fallback crop: the whole image, narrowed to RATIO."""
    if width / height < RATIO[0]:
        return round(width / RATIO[0]), width
    if width / height > RATIO[1]:
        return height, round(height * RATIO[1])
    return height, width


def resized_crop(x: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int],
                 flip: torch.Tensor | None = None) -> torch.Tensor:
    """Box i (top, left, height, width in pixels) of image i of `x`, resized to `size` (bilinear, no
    antialiasing: what cropping and then `interpolate(..., align_corners=False)` give) and mirrored where
    `flip` (a bool per image) is set."""
    b, c, height, width = x.shape
    top, left, h, w = boxes.to(device=x.device, dtype=x.dtype).unbind(1)
    # affine_grid (align_corners=False) maps the output's pixel centres into (-1, 1) and those through
    # theta onto the input, whose edges are -1 and 1: the box's edges are 2 * left / width - 1 and
    # 2 * (left + w) / width - 1, so output pixel k samples the input at left + w * (k + 0.5) / size - 0.5.
    sx, sy = w / width, h / height
    if flip is not None:
        sx = torch.where(flip.to(x.device), -sx, sx)
    zero = torch.zeros_like(sx)
    theta = torch.stack([torch.stack([sx, zero, (2 * left + w) / width - 1], dim=1),
                         torch.stack([zero, sy, (2 * top + h) / height - 1], dim=1)], dim=1)
    grid = F.affine_grid(theta, [b, c, *size], align_corners=False)
    # Samples within half a pixel of the box's edge would blend in pixels outside the box: clamped to the
    # box's outermost pixel centres, where the crop-then-resize reads them.
    gx = _clamp(grid[..., 0], (2 * left + 1) / width - 1, (2 * (left + w) - 1) / width - 1)
    gy = _clamp(grid[..., 1], (2 * top + 1) / height - 1, (2 * (top + h) - 1) / height - 1)
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _clamp(v: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """`v` (B x H x W) clamped per image to [low[i], high[i]]."""
    return torch.minimum(torch.maximum(v, low[:, None, None]), high[:, None, None])
