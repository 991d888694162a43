"""Masks (the MASK type): made from images or by hand, softened, combined, shown.

A mask is a tensor [B, H, W] in [0, 1] where 1 marks the masked area, the part
inpainting repaints, as in ComfyUI. Masks and images convert both ways; a mask shown in
a preview is its grey image.
"""

from __future__ import annotations

from typing import Any

from nodeflow import Bool, Choice, FileChoice, Float, Int, Node, NodeError, Output, RunContext, Socket

from nodes.diffusion.types import IMAGE, MASK

CHANNELS = ("red", "green", "blue", "alpha")


class ImageToMask(Node):
    type = "ImageToMask"
    display_name = "Image to Mask"
    category = "mask"
    description = "One channel of the image as a mask (an image without alpha has alpha 1 everywhere)."

    image = Socket(IMAGE)
    channel = Choice(CHANNELS, default="red", tooltip="the channel whose values become the mask")
    outputs = (Output("mask", MASK),)

    def run(self, ctx: RunContext, image: Any, channel: str) -> Any:
        import torch

        index = CHANNELS.index(channel)
        if index >= image.shape[-1]:
            return torch.ones(image.shape[:-1], dtype=torch.float32)
        return image[..., index].float().contiguous()


class MaskToImage(Node):
    type = "MaskToImage"
    display_name = "Mask to Image"
    category = "mask"
    description = "The mask as a grey image (white where masked), e.g. to preview or save it."

    mask = Socket(MASK)
    outputs = (Output("image", IMAGE),)

    def run(self, ctx: RunContext, mask: Any) -> Any:
        return mask.float()[..., None].expand(*mask.shape, 3).contiguous()


class SolidMask(Node):
    type = "SolidMask"
    display_name = "Solid Mask"
    category = "mask"
    description = "A mask of one value everywhere."

    value = Float(1.0, min=0.0, max=1.0, step=0.01, tooltip="1 = masked everywhere, 0 = nowhere")
    width = Int(512, min=1, max=16384, tooltip="in pixels")
    height = Int(512, min=1, max=16384, tooltip="in pixels")
    outputs = (Output("mask", MASK),)

    def run(self, ctx: RunContext, value: float, width: int, height: int) -> Any:
        import torch
        from nodeflow import check_pixels

        check_pixels("width", width, height, 1, ctx.settings)
        return torch.full((1, height, width), float(value), dtype=torch.float32)


class InvertMask(Node):
    type = "InvertMask"
    display_name = "Invert Mask"
    category = "mask"
    description = "1 - mask: what was masked is not, and the other way round."

    mask = Socket(MASK)
    outputs = (Output("mask", MASK),)

    def run(self, ctx: RunContext, mask: Any) -> Any:
        return 1.0 - mask


class FeatherMask(Node):
    type = "FeatherMask"
    display_name = "Feather Mask"
    category = "mask"
    description = (
        "Fades the mask out towards its edges: within the given distance of an edge it is "
        "multiplied by a ramp from 0 at the edge to 1 inside."
    )

    mask = Socket(MASK)
    left = Int(0, min=0, max=16384, tooltip="pixels of ramp from the left edge")
    top = Int(0, min=0, max=16384, tooltip="pixels of ramp from the top edge")
    right = Int(0, min=0, max=16384, tooltip="pixels of ramp from the right edge")
    bottom = Int(0, min=0, max=16384, tooltip="pixels of ramp from the bottom edge")
    outputs = (Output("mask", MASK),)

    def run(self, ctx: RunContext, mask: Any, left: int, top: int, right: int, bottom: int) -> Any:
        import torch

        height, width = mask.shape[-2:]

        def ramp(size: int, start: int, end: int) -> torch.Tensor:
            position = torch.arange(size, dtype=torch.float32)
            factor = torch.ones(size)
            if start:
                factor = torch.minimum(factor, (position + 1) / start)
            if end:
                factor = torch.minimum(factor, (size - position) / end)
            return factor.clamp(0.0, 1.0)

        return mask.float() * ramp(height, top, bottom)[:, None] * ramp(width, left, right)[None, :]


class GrowMask(Node):
    type = "GrowMask"
    display_name = "Grow Mask"
    category = "mask"
    description = (
        "Grows the mask by `expand` pixels (shrinks it when negative), each pixel taking the "
        "largest (smallest) value around it: with tapered corners the reach is a diamond "
        "(steps along the axes), without it a square."
    )

    mask = Socket(MASK)
    expand = Int(0, min=-16384, max=16384, tooltip="pixels to grow by; negative shrinks")
    tapered_corners = Bool(True, tooltip="on: grow by steps along the axes (rounded corners); off: square corners")
    outputs = (Output("mask", MASK),)

    def run(self, ctx: RunContext, mask: Any, expand: int, tapered_corners: bool) -> Any:
        import torch.nn.functional as F

        planes = mask.float().reshape(-1, 1, *mask.shape[-2:])
        if expand < 0:
            planes = -planes  # shrinking is growing the complement
        # past the image's size nothing more changes; bounds the loop for any `expand`
        steps = min(abs(expand), planes.shape[-2] + planes.shape[-1])
        if not tapered_corners:
            planes = F.max_pool2d(planes, 2 * steps + 1, stride=1, padding=steps) if steps else planes
        else:
            for _ in range(steps):  # one step of a plus-shaped reach
                across = F.max_pool2d(planes, (1, 3), stride=1, padding=(0, 1))
                planes = across.maximum(F.max_pool2d(planes, (3, 1), stride=1, padding=(1, 0)))
        if expand < 0:
            planes = -planes
        return planes[:, 0]


class ThresholdMask(Node):
    type = "ThresholdMask"
    display_name = "Threshold Mask"
    category = "mask"
    description = "1 where the mask is above `value`, else 0: a hard-edged mask from a soft one."

    mask = Socket(MASK)
    value = Float(0.5, min=0.0, max=1.0, step=0.01, tooltip="values above this become 1")
    outputs = (Output("mask", MASK),)

    def run(self, ctx: RunContext, mask: Any, value: float) -> Any:
        return (mask > value).float()


COMPOSITE_OPERATIONS = ("multiply", "add", "subtract", "and", "or", "xor")


class MaskComposite(Node):
    type = "MaskComposite"
    display_name = "Combine Masks"
    category = "mask"
    description = (
        "Combines `source` into `destination` at (x, y): multiply, add, subtract, or the "
        "logical and/or/xor of masks rounded to 0 and 1. The result is clipped to [0, 1]; "
        "outside the source's rectangle the destination is kept."
    )

    destination = Socket(MASK)
    source = Socket(MASK)
    x = Int(0, min=0, max=16384, tooltip="left edge of the source in the destination, in pixels")
    y = Int(0, min=0, max=16384, tooltip="top edge of the source in the destination, in pixels")
    operation = Choice(COMPOSITE_OPERATIONS, default="multiply")
    outputs = (Output("mask", MASK),)

    def run(self, ctx: RunContext, destination: Any, source: Any, x: int, y: int, operation: str) -> Any:
        import torch

        out = destination.float().clone()
        height, width = out.shape[-2:]
        if x >= width or y >= height:
            return out
        h, w = min(source.shape[-2], height - y), min(source.shape[-1], width - x)
        region, src = out[:, y:y + h, x:x + w], source.float()[:, :h, :w]
        if operation == "multiply":
            combined = region * src
        elif operation == "add":
            combined = region + src
        elif operation == "subtract":
            combined = region - src
        else:
            a, b = region.round().bool(), src.round().bool()
            combined = {"and": a & b, "or": a | b, "xor": a ^ b}[operation].float()
        out[:, y:y + h, x:x + w] = combined.clamp(0.0, 1.0)
        return out


class LoadImageMask(Node):
    type = "LoadImageMask"
    display_name = "Load Image as Mask"
    category = "mask"
    description = (
        "Reads one channel of an image in the input folder as a mask. For the alpha channel "
        "the mask is 1 - alpha (transparent = masked), as ComfyUI does; an image without "
        "alpha gives an empty mask."
    )

    image = FileChoice(folder="input", extensions=(".png", ".jpg", ".jpeg", ".webp", ".bmp"),
                       tooltip="a file in the input folder")
    channel = Choice(CHANNELS, default="alpha")
    outputs = (Output("mask", MASK),)

    @classmethod
    def fingerprint(cls, values: dict[str, Any], ctx: RunContext) -> str | None:
        from nodes.diffusion.images import LoadImage

        return LoadImage.fingerprint(values, ctx)

    @classmethod
    def check_host(cls, values: dict[str, Any], ctx: RunContext) -> dict[str, str]:
        """Before the run: the file is in the input folder (as for Load Image)."""
        from nodes.diffusion.images import LoadImage

        return LoadImage.check_host(values, ctx)

    def run(self, ctx: RunContext, image: str, channel: str) -> Any:
        from nodes.diffusion.images import read_image

        rgb, alpha = read_image(ctx, image)
        if channel == "alpha":
            return alpha
        return rgb[..., CHANNELS.index(channel)].contiguous()


def mask_like(mask: Any, height: int, width: int) -> Any:
    """``mask`` [B, H, W] resized (bilinear) to height x width."""
    import torch.nn.functional as F

    if tuple(mask.shape[-2:]) == (height, width):
        return mask.float()
    if mask.ndim != 3:
        raise NodeError(f"a mask must be [batch, height, width]; got shape {tuple(mask.shape)}")
    return F.interpolate(mask.float()[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0]


class CropMask(Node):
    type = "CropMask"
    display_name = "Crop Mask"
    category = "mask"
    description = "The width x height rectangle of the mask at (x, y), cut to the mask where it reaches past its edge."

    mask = Socket(MASK)
    x = Int(0, min=0, max=16384, tooltip="left edge in pixels")
    y = Int(0, min=0, max=16384, tooltip="top edge in pixels")
    width = Int(512, min=1, max=16384)
    height = Int(512, min=1, max=16384)
    outputs = (Output("mask", MASK),)

    def run(self, ctx: RunContext, mask: Any, x: int, y: int, width: int, height: int) -> Any:
        planes = mask.reshape(-1, *mask.shape[-2:])
        h, w = planes.shape[-2:]
        x, y = min(x, w - 1), min(y, h - 1)  # at least one pixel, as Crop Image
        return planes[:, y:y + height, x:x + width].clone()


class ImageColorToMask(Node):
    type = "ImageColorToMask"
    display_name = "Colour to Mask"
    category = "mask"
    description = (
        "1 where the pixel is exactly the colour 0xRRGGBB (each channel rounded to 8 bits), 0 "
        "elsewhere: e.g. one flat colour of a segmentation map."
    )

    image = Socket(IMAGE)
    color = Int(0, min=0, max=0xFFFFFF, tooltip="0xRRGGBB as a number: 16777215 is white")
    outputs = (Output("mask", MASK),)

    def run(self, ctx: RunContext, image: Any, color: int) -> Any:
        import torch

        levels = (image[..., :3].clamp(0.0, 1.0) * 255.0).round().to(torch.int64)
        packed = (levels[..., 0] << 16) + (levels[..., 1] << 8) + levels[..., 2]
        return (packed == color).float()
