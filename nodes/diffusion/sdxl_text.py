"""SDXL text encoding with its size and crop conditioning (and the refiner's aesthetic score).

SDXL was trained with the original image size, the crop's top-left corner and the
target size as extra inputs ("time ids"); giving other values than the output size
steers framing and detail, e.g. a large original size for sharper images.
"""

from __future__ import annotations

from typing import Any

from nodeflow import Float, Int, Node, NodeError, Output, RunContext, Socket, String

from nodes.diffusion.types import CLIP, CONDITIONING, Conditioning, TextEncoders

MAX_SIZE = 16384


def _size(default: int, what: str) -> Int:
    return Int(default, min=0, max=MAX_SIZE, step=8, tooltip=what)


def _with_time_ids(cond: Conditioning, values: list[float]) -> Conditioning:
    import torch

    return Conditioning(cond.embeds, cond.pooled, {**cond.extras, "time_ids": torch.tensor([values], dtype=torch.float32)})


class TextEncoderSDXL(Node):
    type = "TextEncoderSDXL"
    display_name = "Text Encoder (SDXL)"
    category = "conditioning"
    description = (
        "Encodes a prompt for SDXL, with one text per encoder (text_g for OpenCLIP-G, text_l for "
        "CLIP-L) and the size and crop conditioning SDXL was trained with."
    )

    clip = Socket(CLIP, tooltip="An SDXL model's two text encoders")
    text_g = String("", multiline=True, tooltip="The prompt for the large (OpenCLIP-G) encoder")
    text_l = String("", multiline=True, tooltip="The prompt for the CLIP-L encoder (usually the same)")
    width = _size(1024, "the original image width SDXL is told")
    height = _size(1024, "the original image height SDXL is told")
    crop_w = _size(0, "left edge of the crop, in original pixels")
    crop_h = _size(0, "top edge of the crop, in original pixels")
    target_width = _size(1024, "the target width SDXL is told")
    target_height = _size(1024, "the target height SDXL is told")
    outputs = (Output("conditioning", CONDITIONING),)

    def run(
        self, ctx: RunContext, clip: TextEncoders, text_g: str, text_l: str, width: int, height: int,
        crop_w: int, crop_h: int, target_width: int, target_height: int,
    ) -> Conditioning:
        from nodes.diffusion.text import encode_text

        if clip.family.name != "sdxl" or len(clip.encoders) != 2:
            raise NodeError(f"needs an SDXL model's two text encoders; this CLIP is {clip.family.name}", field="clip")
        cond = encode_text(clip, text_g, 1, texts=[text_l, text_g])
        return _with_time_ids(cond, [height, width, crop_h, crop_w, target_height, target_width])


class TextEncoderSDXLRefiner(Node):
    type = "TextEncoderSDXLRefiner"
    display_name = "Text Encoder (SDXL refiner)"
    category = "conditioning"
    description = (
        "Encodes a prompt for the SDXL refiner (its one OpenCLIP-G encoder), with the original "
        "size and the aesthetic score it was trained with (6 for the positive, 2.5 for the negative prompt)."
    )

    clip = Socket(CLIP, tooltip="The SDXL refiner's text encoder")
    text = String("", multiline=True)
    ascore = Float(6.0, min=0.0, max=1000.0, step=0.01, tooltip="aesthetic score: high for the prompt, low for the negative")
    width = _size(1024, "the original image width the refiner is told")
    height = _size(1024, "the original image height the refiner is told")
    outputs = (Output("conditioning", CONDITIONING),)

    def run(self, ctx: RunContext, clip: TextEncoders, text: str, ascore: float, width: int, height: int) -> Any:
        from nodes.diffusion.text import encode_text

        if clip.family.name != "sdxl_refiner":
            raise NodeError(f"needs the SDXL refiner's text encoder; this CLIP is {clip.family.name}", field="clip")
        cond = encode_text(clip, text, 1)
        return _with_time_ids(cond, [height, width, 0, 0, ascore])
