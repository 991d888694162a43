"""Merging two UNets with a ratio per block (ComfyUI's ModelMergeBlocks, ModelMergeSD1 and ModelMergeSDXL).

A blend as Merge Models does (ratio x model1 + (1 - ratio) x model2), but with its own
ratio for each part of the UNet, named as the original SD UNet names its blocks
(impl/unet_blocks.py): e.g. the input (down) blocks from one model, the output (up)
blocks, which shape detail and style, from the other. A ratio of 1 keeps model1's
weights exactly, 0 takes model2's exactly.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

from nodeflow import Float, Node, Output, RunContext, Socket

from nodes.diffusion.model_ops import _check_same, _merged
from nodes.diffusion.types import MODEL, DiffusionModel

# ModelMergeSDXL's blocks, in ComfyUI's widget order: ours (field names) -> ComfyUI's names.
SDXL_BLOCKS: dict[str, str] = {
    "time_embed": "time_embed.", "label_emb": "label_emb.",
    **{f"input_blocks_{i}": f"input_blocks.{i}" for i in range(9)},
    **{f"middle_block_{i}": f"middle_block.{i}" for i in range(3)},
    **{f"output_blocks_{i}": f"output_blocks.{i}" for i in range(9)},
    "out": "out.",
}

# ModelMergeSD1's (and ModelMergeSD2's) blocks, in ComfyUI's widget order. SD 1.x/2.x have
# 12 input and 12 output blocks, so ComfyUI ends these names with "." ("input_blocks.1."
# must not cover input_blocks.10).
SD1_BLOCKS: dict[str, str] = {
    "time_embed": "time_embed.", "label_emb": "label_emb.",
    **{f"input_blocks_{i}": f"input_blocks.{i}." for i in range(12)},
    **{f"middle_block_{i}": f"middle_block.{i}." for i in range(3)},
    **{f"output_blocks_{i}": f"output_blocks.{i}." for i in range(12)},
    "out": "out.",
}


def _named(ratios: Mapping[str, float], blocks: Mapping[str, str]) -> dict[str, float]:
    """The ratios (by field) by ComfyUI's block names; every block's field must be given."""
    return {block: ratios[field] for field, block in blocks.items()}


def _ratio(tooltip: str) -> Float:
    return Float(1.0, min=0.0, max=1.0, step=0.01, tooltip=tooltip)


def merge_by_block(model1: DiffusionModel, model2: DiffusionModel, ratios: Mapping[str, float],
                   default: float) -> DiffusionModel:
    """model1 with each weight blended by the ratio of its block (ComfyUI's names)."""
    from nodes.diffusion.impl.unet_blocks import ldm_block, ratio_for

    _check_same(model1, model2, "model", "model2")
    config = model1.unet.config

    def blend(name: str) -> Any:
        r = ratio_for(ldm_block(name, config), ratios, default)
        return lambda a, b: a * r + b * (1.0 - r)

    unet = _merged(model1.unet, model2.unet, None, by_name=blend)  # type: ignore[arg-type]
    return replace(model1, unet=unet, source=f"{model1.source} merged by block with {model2.source}")


class ModelMergeBlocks(Node):
    type = "ModelMergeBlocks"
    display_name = "Merge Models by Block"
    category = "loaders"
    description = (
        "Blends two models' UNets with one ratio (model1's share) for the input (down) "
        "blocks, one for the middle and one for the output (up) blocks and the final layer; "
        "the time embedding follows the input ratio."
    )

    model1 = Socket(MODEL)
    model2 = Socket(MODEL)
    input = _ratio("model1's share of the input (down) blocks and the time embedding")
    middle = _ratio("model1's share of the middle block")
    out = _ratio("model1's share of the output (up) blocks and the final layer")
    outputs = (Output("model", MODEL),)

    def run(self, ctx: RunContext, model1: DiffusionModel, model2: DiffusionModel, input: float, middle: float,
            out: float) -> DiffusionModel:
        return merge_by_block(model1, model2, {"input": input, "middle": middle, "out": out}, input)


class ModelMergeSDXL(Node):
    type = "ModelMergeSDXL"
    display_name = "Merge SDXL Models by Block"
    category = "loaders"
    description = (
        "Blends two SDXL UNets with a ratio (model1's share) for each block of the original "
        "layout: the time and size embeddings, input blocks 0-8, middle 0-2, output 0-8 and "
        "the final layer."
    )

    model1 = Socket(MODEL)
    model2 = Socket(MODEL)
    for _field, _block in SDXL_BLOCKS.items():  # one ratio per block, declared as fields
        vars()[_field] = _ratio(f"model1's share of {_block.rstrip('.')}")
    del _field, _block
    outputs = (Output("model", MODEL),)

    def run(self, ctx: RunContext, model1: DiffusionModel, model2: DiffusionModel, **ratios: float) -> DiffusionModel:
        return merge_by_block(model1, model2, _named(ratios, SDXL_BLOCKS), ratios["time_embed"])


class ModelMergeSD1(Node):
    type = "ModelMergeSD1"
    display_name = "Merge SD1/SD2 Models by Block"
    category = "loaders"
    description = (
        "Blends two SD 1.x or 2.x UNets with a ratio (model1's share) for each block of the "
        "original layout: the time embedding, input blocks 0-11, middle 0-2, output 0-11 and "
        "the final layer (label_emb only exists in class-conditioned models such as unCLIP)."
    )

    model1 = Socket(MODEL)
    model2 = Socket(MODEL)
    for _field, _block in SD1_BLOCKS.items():  # one ratio per block, declared as fields
        vars()[_field] = _ratio(f"model1's share of {_block.rstrip('.')}")
    del _field, _block
    outputs = (Output("model", MODEL),)

    def run(self, ctx: RunContext, model1: DiffusionModel, model2: DiffusionModel, **ratios: float) -> DiffusionModel:
        return merge_by_block(model1, model2, _named(ratios, SD1_BLOCKS), ratios["time_embed"])
