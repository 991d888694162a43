"""Where one part of a regional conditioning applies on the latent grid, and how much.

A part (see ``Conditioning``) may name a rectangle in pixels (ConditioningSetArea), a
rectangle as fractions of the image (ConditioningSetAreaPercentage) or a mask
(ConditioningSetMask), optionally predicting only the mask's bounding box. The guider
crops the latent to :attr:`Region.box`, predicts it with the part's prompt and adds the
prediction in with :attr:`Region.weight` per cell. The rules are ComfyUI's, measured on
its sampler: fractions are rounded to whole latent cells (at least one), a mask is
resized bilinearly to the latent's size, and a mask's bounding box is at least 8 cells
on each side (an empty mask gives an 8x8 box at the corner, where it weighs nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from nodes.diffusion.types import Conditioning

if TYPE_CHECKING:
    import torch

_MIN_BOUNDS = 8  # latent cells: the smallest box a mask's bounds give


class RegionError(ValueError):
    """A mask that does not fit the latent batch; the message is for the user."""


@dataclass(frozen=True)
class Region:
    box: tuple[int, int, int, int]  # (top, bottom, left, right) in latent cells
    weight: "torch.Tensor | None"  # [B, 1, bottom - top, right - left], mask x mask strength; None: 1 everywhere


def region(part: Conditioning, batch: int, size: tuple[int, int], factor: int) -> Region:
    """The region of ``part`` on a latent of ``batch`` x ``size`` (height, width) cells,
    ``factor`` pixels per cell."""
    height, width = size
    mask = _resized(part.mask, size) if part.mask is not None else None
    if mask is not None and part.mask_bounds:
        box = _bounds(mask, size)
    elif part.area_fraction is not None:
        w, h, x, y = part.area_fraction
        box = _clipped(round(y * height), round(x * width), max(1, round(h * height)), max(1, round(w * width)), size)
    elif part.area is not None:
        w, h, x, y = part.area
        box = _clipped(y // factor, x // factor, max(1, h // factor), max(1, w // factor), size)
    else:
        box = (0, height, 0, width)
    if mask is None:
        return Region(box, None)
    top, bottom, left, right = box
    weight = (mask[:batch, top:bottom, left:right] * part.mask_strength).unsqueeze(1)
    if batch % weight.shape[0]:
        raise RegionError(f"the conditioning's mask has a batch of {weight.shape[0]}, which does not divide "
                          f"the latent batch of {batch}")
    return Region(box, weight.repeat(batch // weight.shape[0], 1, 1, 1))


def _clipped(top: int, left: int, rows: int, columns: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    height, width = size
    top, left = min(top, height - 1), min(left, width - 1)
    return (top, min(height, top + rows), left, min(width, left + columns))


def _resized(mask: "torch.Tensor", size: tuple[int, int]) -> "torch.Tensor":
    import torch.nn.functional as F

    mask = mask.float()
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if tuple(mask.shape[-2:]) != tuple(size):
        mask = F.interpolate(mask.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)
    return mask


def _bounds(mask: "torch.Tensor", size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The bounding box of where any image's mask is not 0, at least 8 cells a side."""
    import torch

    rows, columns = torch.where(mask.abs().amax(dim=0) != 0)
    if len(rows) == 0:
        return _clipped(0, 0, _MIN_BOUNDS, _MIN_BOUNDS, size)
    top, left = int(rows.min()), int(columns.min())
    return _clipped(top, left, max(_MIN_BOUNDS, int(rows.max()) - top + 1),
                    max(_MIN_BOUNDS, int(columns.max()) - left + 1), size)
