"""Conditioning that applies to part of the image: given as fractions of it, or as a mask.

Beside ConditioningSetArea (a rectangle in pixels, conditioning.py), these say where a
prompt applies in ways that do not depend on the image size: a rectangle as fractions
of the image, or a mask that weighs the prompt per pixel. The guider resolves both on
the latent grid when it samples (impl/regions.py). Stack such a conditioning with one
for the whole image; where parts overlap, their predictions are averaged by weight.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from nodeflow import Choice, Float, Node, Output, RunContext, Socket

from nodes.diffusion.types import CONDITIONING, MASK, Conditioning

MASK_AREAS = ("default", "mask bounds")


class ConditioningSetAreaPercentage(Node):
    type = "ConditioningSetAreaPercentage"
    display_name = "Conditioning Area (fractions)"
    category = "conditioning"
    description = (
        "Applies the conditioning only to a rectangle given as fractions of the image "
        "(0.5 wide = the left half at x 0), so the same workflow works at any size; rounded "
        "to whole latent cells. Where areas overlap, predictions are averaged by strength."
    )

    conditioning = Socket(CONDITIONING)
    width = Float(1.0, min=0.0, max=1.0, step=0.01, tooltip="share of the image's width")
    height = Float(1.0, min=0.0, max=1.0, step=0.01, tooltip="share of the image's height")
    x = Float(0.0, min=0.0, max=1.0, step=0.01, tooltip="left edge, as a share of the width")
    y = Float(0.0, min=0.0, max=1.0, step=0.01, tooltip="top edge, as a share of the height")
    strength = Float(1.0, min=0.0, max=10.0, step=0.01, tooltip="its weight where areas overlap")
    outputs = (Output("conditioning", CONDITIONING),)

    def run(self, ctx: RunContext, conditioning: Conditioning, width: float, height: float, x: float, y: float,
            strength: float) -> Conditioning:
        return replace(conditioning, area=None, area_fraction=(width, height, x, y), strength=strength,
                       mask_bounds=False)


class ConditioningSetMask(Node):
    type = "ConditioningSetMask"
    display_name = "Conditioning Mask"
    category = "conditioning"
    description = (
        "Applies the conditioning where the mask is set, weighted by the mask's value (soft "
        "edges blend with the other prompts). `area` default predicts the conditioning's "
        "own area (the whole image unless one was set) and weighs it by the mask; mask "
        "bounds predicts only the rectangle around the mask, which is faster and gives "
        "the region the model's full attention, as if it were the whole picture."
    )

    conditioning = Socket(CONDITIONING)
    mask = Socket(MASK, tooltip="where the conditioning applies (1), any size: resized to the image")
    strength = Float(1.0, min=0.0, max=10.0, step=0.01, tooltip="multiplies the mask")
    area = Choice(MASK_AREAS, default="default",
                  tooltip="default: the conditioning's own area; mask bounds: the box around the mask")
    outputs = (Output("conditioning", CONDITIONING),)

    def run(self, ctx: RunContext, conditioning: Conditioning, mask: Any, strength: float, area: str) -> Conditioning:
        mask = mask if mask.ndim == 3 else mask.reshape(1, *mask.shape[-2:])
        return replace(conditioning, mask=mask.float(), mask_strength=strength, mask_bounds=area == "mask bounds")
