"""Pixel operations on IMAGE batches: resize, crop, invert, blend, paste, batch, pad for outpainting.

Images are [B, H, W, 3] float tensors in [0, 1] on the CPU; every node returns a new
tensor (inputs are cached and never changed in place). Sizes are checked against the
host's pixel limit before anything large is allocated.
"""

from __future__ import annotations

from typing import Any

from nodeflow import INT, Bool, Choice, Float, Int, Node, NodeError, Output, RunContext, Seed, Socket, check_pixels

from nodes.diffusion.types import IMAGE, MASK

METHODS = ("nearest", "bilinear", "bicubic", "area", "lanczos", "bislerp")


def resize(images: Any, height: int, width: int, method: str) -> Any:
    """``images`` [B, H, W, C] resized to height x width with ``method``."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    if method == "lanczos":  # torch has none: Pillow's, per image
        from PIL import Image

        frames = []
        for frame in images:
            picture = Image.fromarray((frame.clamp(0, 1).numpy() * 255.0 + 0.5).astype(np.uint8))
            resized = picture.resize((width, height), Image.Resampling.LANCZOS)
            frames.append(torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0))
        return torch.stack(frames)
    channels_first = images.movedim(-1, 1).float()
    if method == "bislerp":  # each pixel's colour vector slerped between its neighbours
        from nodes.diffusion.impl.resample import bislerp

        return bislerp(channels_first, height, width).clamp(0.0, 1.0).movedim(1, -1).contiguous()
    mode = "nearest-exact" if method == "nearest" else method
    options = {"align_corners": False} if method in ("bilinear", "bicubic") else {}
    out = F.interpolate(channels_first, size=(height, width), mode=mode, **options)
    return out.clamp(0.0, 1.0).movedim(1, -1).contiguous()


def center_crop(images: Any, height: int, width: int) -> Any:
    """The centre of ``images`` with the aspect ratio of height x width."""
    h, w = images.shape[1:3]
    if w * height > h * width:  # too wide
        new_w = max(1, round(h * width / height))
        left = (w - new_w) // 2
        return images[:, :, left:left + new_w]
    new_h = max(1, round(w * height / width))
    top = (h - new_h) // 2
    return images[:, top:top + new_h]


class ImageScale(Node):
    type = "ImageScale"
    display_name = "Resize Image"
    category = "image"
    description = (
        "Resizes images to a width and height in pixels; 0 for one of them keeps the aspect "
        "ratio. `crop` center first cuts the image to the target's aspect ratio."
    )

    image = Socket(IMAGE)
    method = Choice(METHODS, default="bilinear", tooltip="interpolation")
    width = Int(512, min=0, max=16384, tooltip="target width; 0 = from height and the aspect ratio")
    height = Int(512, min=0, max=16384, tooltip="target height; 0 = from width and the aspect ratio")
    crop = Choice(("disabled", "center"), default="disabled", tooltip="center: keep the target's aspect ratio by cutting")
    outputs = (Output("image", IMAGE),)

    def run(self, ctx: RunContext, image: Any, method: str, width: int, height: int, crop: str) -> Any:
        h, w = image.shape[1:3]
        if width == 0 and height == 0:
            return image
        width = width or max(1, round(w * height / h))
        height = height or max(1, round(h * width / w))
        check_pixels("width", width, height, image.shape[0], ctx.settings)
        source = center_crop(image, height, width) if crop == "center" else image
        return resize(source, height, width, method)


class ImageScaleBy(Node):
    type = "ImageScaleBy"
    display_name = "Scale Image"
    category = "image"
    description = "Resizes images by a factor (both sides)."

    image = Socket(IMAGE)
    method = Choice(METHODS, default="bilinear")
    scale_by = Float(1.0, min=0.01, max=8.0, step=0.01)
    outputs = (Output("image", IMAGE),)

    def run(self, ctx: RunContext, image: Any, method: str, scale_by: float) -> Any:
        h, w = image.shape[1:3]
        height, width = max(1, round(h * scale_by)), max(1, round(w * scale_by))
        check_pixels("scale_by", width, height, image.shape[0], ctx.settings)
        return resize(image, height, width, method)


class ImageScaleToTotalPixels(Node):
    type = "ImageScaleToTotalPixels"
    display_name = "Scale Image to Megapixels"
    category = "image"
    description = "Resizes images, keeping the aspect ratio, to about `megapixels` million pixels."

    image = Socket(IMAGE)
    method = Choice(METHODS, default="bilinear")
    megapixels = Float(1.0, min=0.01, max=16.0, step=0.01)
    outputs = (Output("image", IMAGE),)

    def run(self, ctx: RunContext, image: Any, method: str, megapixels: float) -> Any:
        h, w = image.shape[1:3]
        factor = (megapixels * 1024 * 1024 / (h * w)) ** 0.5
        height, width = max(1, round(h * factor)), max(1, round(w * factor))
        check_pixels("megapixels", width, height, image.shape[0], ctx.settings)
        return resize(image, height, width, method)


class ImageCrop(Node):
    type = "ImageCrop"
    display_name = "Crop Image"
    category = "image"
    description = "The width x height rectangle at (x, y), cut to the image where it reaches past its edge."

    image = Socket(IMAGE)
    width = Int(512, min=1, max=16384)
    height = Int(512, min=1, max=16384)
    x = Int(0, min=0, max=16384, tooltip="left edge in pixels")
    y = Int(0, min=0, max=16384, tooltip="top edge in pixels")
    outputs = (Output("image", IMAGE),)

    def run(self, ctx: RunContext, image: Any, width: int, height: int, x: int, y: int) -> Any:
        h, w = image.shape[1:3]
        x, y = min(x, w - 1), min(y, h - 1)
        return image[:, y:y + height, x:x + width].clone()


class ImageInvert(Node):
    type = "ImageInvert"
    display_name = "Invert Image"
    category = "image"
    description = "1 - each colour value: the negative."

    image = Socket(IMAGE)
    outputs = (Output("image", IMAGE),)

    def run(self, ctx: RunContext, image: Any) -> Any:
        return 1.0 - image


class ImageSharpen(Node):
    type = "ImageSharpen"
    display_name = "Sharpen Image"
    category = "image"
    description = (
        "Unsharp mask: adds 10 x alpha times the difference between the image and its Gaussian blur "
        "(a (2 x radius + 1) square; sigma is measured in radii), clamped to [0, 1]."
    )

    image = Socket(IMAGE)
    sharpen_radius = Int(1, min=1, max=31, tooltip="half the blur square's side, in pixels")
    sigma = Float(1.0, min=0.1, max=10.0, step=0.01, tooltip="the blur's spread; 1 = the radius")
    alpha = Float(1.0, min=0.0, max=5.0, step=0.01, tooltip="strength; 0 leaves the image as it is")
    outputs = (Output("image", IMAGE),)

    def run(self, ctx: RunContext, image: Any, sharpen_radius: int, sigma: float, alpha: float) -> Any:
        blurred = gaussian_blur(image, sharpen_radius, sigma)
        return (image + 10.0 * alpha * (image - blurred)).clamp(0.0, 1.0)


class ImageBlur(Node):
    type = "ImageBlur"
    display_name = "Blur Image"
    category = "image"
    description = (
        "Gaussian blur over a (2 x radius + 1) square, the image's edges mirrored; sigma is "
        "measured in radii (1 = the weight at the square's edge is exp(-1/2))."
    )

    image = Socket(IMAGE)
    blur_radius = Int(1, min=1, max=31, tooltip="half the blur square's side, in pixels")
    sigma = Float(1.0, min=0.1, max=10.0, step=0.1, tooltip="the blur's spread; 1 = the radius")
    outputs = (Output("image", IMAGE),)

    def run(self, ctx: RunContext, image: Any, blur_radius: int, sigma: float) -> Any:
        return gaussian_blur(image, blur_radius, sigma)


DITHERS = ("none", "floyd-steinberg", "bayer-2", "bayer-4", "bayer-8", "bayer-16")


class ImageQuantize(Node):
    type = "ImageQuantize"
    display_name = "Quantize Image"
    category = "image"
    description = (
        "Reduces each image to a palette of at most `colors` colours chosen for it (Pillow's median "
        "cut), mapped with no dithering, Floyd-Steinberg error diffusion, or an ordered (Bayer) "
        "pattern of the given size."
    )

    image = Socket(IMAGE)
    colors = Int(256, min=1, max=256, tooltip="palette size")
    dither = Choice(DITHERS, default="none", tooltip="how colours between palette entries are drawn")
    outputs = (Output("image", IMAGE),)

    def run(self, ctx: RunContext, image: Any, colors: int, dither: str) -> Any:
        import numpy as np
        import torch
        from PIL import Image

        out = []
        for frame in image:
            rgb = Image.fromarray((frame.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy(), mode="RGB")
            palette = rgb.quantize(colors=colors)  # the palette is chosen on the undithered image
            if dither.startswith("bayer"):
                size = int(dither.split("-")[1])
                step = 256.0 / max(1, round(len(palette.getpalette()) / 3) ** (1 / 3))  # one palette step per channel
                pixels = np.asarray(rgb, dtype=np.float32) + step * _tiled(bayer_matrix(size), frame.shape[:2])[..., None]
                rgb = Image.fromarray(pixels.clip(0, 255).round().astype(np.uint8), mode="RGB")
                mapped = rgb.quantize(palette=palette, dither=Image.Dither.NONE)
            else:
                diffuse = Image.Dither.FLOYDSTEINBERG if dither == "floyd-steinberg" else Image.Dither.NONE
                mapped = rgb.quantize(palette=palette, dither=diffuse)
            out.append(torch.from_numpy(np.asarray(mapped.convert("RGB"), dtype=np.float32) / 255.0))
        return torch.stack(out).to(image.dtype)


def bayer_matrix(size: int) -> Any:
    """The ``size`` x ``size`` ordered-dither threshold matrix (size a power of two), as
    offsets in [-0.5, 0.5) with mean 0: each doubling places the four quarter patterns so
    that neighbouring thresholds are as far apart as possible."""
    import numpy as np

    m = np.zeros((1, 1), dtype=np.float32)
    while m.shape[0] < size:
        m = np.block([[4 * m, 4 * m + 2], [4 * m + 3, 4 * m + 1]])
    return (m + 0.5) / m.size - 0.5


def _tiled(pattern: Any, shape: tuple[int, int]) -> Any:
    import numpy as np

    h, w = shape
    reps = (-(-h // pattern.shape[0]), -(-w // pattern.shape[1]))
    return np.tile(pattern, reps)[:h, :w]


def gaussian_blur(image: Any, radius: int, sigma: float) -> Any:
    """[B, H, W, C] blurred by a normalised Gaussian on a (2r+1)-square grid spanning
    [-1, 1], with mirrored (reflect) edges, so the size is kept. A radius the image is too
    small to mirror is cut to fit (reflect padding needs radius < side)."""
    import torch
    import torch.nn.functional as F

    r = max(0, min(radius, image.shape[1] - 1, image.shape[2] - 1))
    if r == 0:
        return image
    axis = torch.linspace(-1.0, 1.0, 2 * r + 1)
    squared = axis[:, None] ** 2 + axis[None, :] ** 2
    weights = torch.exp(-squared / (2.0 * sigma * sigma))
    weights = (weights / weights.sum()).to(image.dtype)
    channels = image.shape[-1]
    padded = F.pad(image.movedim(-1, 1), (r, r, r, r), mode="reflect")
    blurred = F.conv2d(padded, weights.expand(channels, 1, -1, -1), groups=channels)
    return blurred.movedim(1, -1).contiguous()


BLEND_MODES = ("normal", "multiply", "screen", "overlay", "soft_light", "difference")


class ImageBlend(Node):
    type = "ImageBlend"
    display_name = "Blend Images"
    category = "image"
    description = (
        "Mixes image2 into image1 with a blend mode, by `blend_factor` (0 = image1 alone). "
        "image2 is resized to image1's size if they differ."
    )

    image1 = Socket(IMAGE)
    image2 = Socket(IMAGE)
    blend_factor = Float(0.5, min=0.0, max=1.0, step=0.01)
    blend_mode = Choice(BLEND_MODES, default="normal")
    outputs = (Output("image", IMAGE),)

    def run(self, ctx: RunContext, image1: Any, image2: Any, blend_factor: float, blend_mode: str) -> Any:
        import torch

        if image2.shape[1:3] != image1.shape[1:3]:
            image2 = resize(image2, image1.shape[1], image1.shape[2], "bicubic")
        a, b = image1.float(), image2.float()
        if blend_mode == "normal":
            blended = b
        elif blend_mode == "multiply":
            blended = a * b
        elif blend_mode == "screen":
            blended = 1 - (1 - a) * (1 - b)
        elif blend_mode == "overlay":
            blended = torch.where(a <= 0.5, 2 * a * b, 1 - 2 * (1 - a) * (1 - b))
        elif blend_mode == "soft_light":
            g = torch.where(a <= 0.25, ((16 * a - 12) * a + 4) * a, torch.sqrt(a))
            blended = torch.where(b <= 0.5, a - (1 - 2 * b) * a * (1 - a), a + (2 * b - 1) * (g - a))
        else:
            blended = (a - b).abs()
        return (a * (1 - blend_factor) + blended * blend_factor).clamp(0.0, 1.0)


def _to_batch(values: Any, size: int) -> Any:
    """``values`` [N, ...] cycled or cut to ``size`` items (a single image serves a batch)."""
    import torch

    return values if len(values) == size else values[torch.arange(size) % len(values)]


class ImageCompositeMasked(Node):
    type = "ImageCompositeMasked"
    display_name = "Paste Image (masked)"
    category = "image"
    description = (
        "Pastes `source` onto `destination` with its top-left corner at (x, y); with a mask, "
        "only where the mask is 1 (fading where it is between), the destination elsewhere. "
        "After inpainting, pasting the repainted image onto the original through the "
        "inpainting mask keeps every pixel outside the mask exactly as it was."
    )

    destination = Socket(IMAGE, tooltip="the picture pasted onto; the result has its size and batch")
    source = Socket(IMAGE, tooltip="the picture pasted")
    x = Int(0, min=0, max=16384, tooltip="left edge of the source in the destination, in pixels")
    y = Int(0, min=0, max=16384, tooltip="top edge of the source in the destination, in pixels")
    resize_source = Bool(False, tooltip="resize the source (bilinear) to the destination's size first")
    mask = Socket(MASK, optional=True, tooltip="where the source shows (1) and the destination stays (0); "
                  "resized to the source's size; none = the whole source")
    outputs = (Output("image", IMAGE),)

    def run(self, ctx: RunContext, destination: Any, source: Any, x: int, y: int, resize_source: bool,
            mask: Any = None) -> Any:
        return paste(destination, source, x, y, resize_source, mask)


def paste(destination: Any, source: Any, x: int, y: int, resize_source: bool, mask: Any = None) -> Any:
    """``source`` [B, H, W, C] over a copy of ``destination`` with its top-left corner at
    (x, y), through ``mask`` (resized to the source; none: everywhere); the part beyond the
    destination's edges is cut off. Images and (moved-axis) latents alike."""
    import torch
    import torch.nn.functional as F

    out = destination.float().clone()
    batch, height, width = out.shape[:3]
    if resize_source and source.shape[1:3] != out.shape[1:3]:
        source = F.interpolate(source.float().movedim(-1, 1), size=(height, width), mode="bilinear",
                               align_corners=False).movedim(1, -1)
    source = _to_batch(source.float(), batch)
    h, w = min(source.shape[1], height - y), min(source.shape[2], width - x)
    if h <= 0 or w <= 0:
        return out  # pasted wholly beyond the destination's edge
    if mask is None:
        weight = torch.ones(batch, h, w, 1)
    else:
        weight = mask.float().reshape(-1, 1, *mask.shape[-2:])
        if weight.shape[-2:] != source.shape[1:3]:
            weight = F.interpolate(weight, size=source.shape[1:3], mode="bilinear", align_corners=False)
        weight = _to_batch(weight[:, 0, :h, :w, None].clamp(0.0, 1.0), batch)
    region = out[:, y:y + h, x:x + w]
    out[:, y:y + h, x:x + w] = source[:, :h, :w] * weight + region * (1 - weight)
    return out


class EmptyImage(Node):
    type = "EmptyImage"
    display_name = "Empty Image"
    category = "image"
    description = "A batch of images of one colour, given as 0xRRGGBB (0 is black)."

    width = Int(512, min=1, max=16384, tooltip="in pixels")
    height = Int(512, min=1, max=16384, tooltip="in pixels")
    batch_size = Int(1, min=1, max=4096)
    color = Int(0, min=0, max=0xFFFFFF, tooltip="0xRRGGBB as a number: 16777215 is white")
    outputs = (Output("image", IMAGE),)

    def run(self, ctx: RunContext, width: int, height: int, batch_size: int, color: int) -> Any:
        import torch

        check_pixels("batch_size", width, height, batch_size, ctx.settings)
        rgb = torch.tensor([(color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF], dtype=torch.float32) / 255.0
        return rgb.expand(batch_size, height, width, 3).contiguous()


class RepeatImageBatch(Node):
    type = "RepeatImageBatch"
    display_name = "Repeat Images"
    category = "image"
    description = "The batch repeated `amount` times, one after another."

    image = Socket(IMAGE)
    amount = Int(1, min=1, max=4096)
    outputs = (Output("image", IMAGE),)

    def run(self, ctx: RunContext, image: Any, amount: int) -> Any:
        batch, height, width = image.shape[:3]
        check_pixels("amount", width, height, batch * amount, ctx.settings)
        return image.repeat(amount, 1, 1, 1)


class ImageFromBatch(Node):
    type = "ImageFromBatch"
    display_name = "Images from Batch"
    category = "image"
    description = (
        "`length` images of the batch from `batch_index` on (0 = the first); an index past the "
        "end takes the last image, a length past the end stops there."
    )

    image = Socket(IMAGE)
    batch_index = Int(0, min=0, max=4095)
    length = Int(1, min=1, max=4096)
    outputs = (Output("image", IMAGE),)

    def run(self, ctx: RunContext, image: Any, batch_index: int, length: int) -> Any:
        start = min(batch_index, image.shape[0] - 1)
        return image[start:start + length].clone()


FLIPS = ("x-axis: vertically", "y-axis: horizontally")


class ImageFlip(Node):
    type = "ImageFlip"
    display_name = "Flip Image"
    category = "image"
    description = "Mirrors the images: upside down (about the x axis) or left to right (about the y axis)."

    image = Socket(IMAGE)
    flip_method = Choice(FLIPS, default=FLIPS[0])
    outputs = (Output("image", IMAGE),)

    def run(self, ctx: RunContext, image: Any, flip_method: str) -> Any:
        return image.flip(1 if flip_method == FLIPS[0] else 2)


class ImageBatch(Node):
    type = "ImageBatch"
    display_name = "Batch Images"
    category = "image"
    description = "image1's batch followed by image2's (image2 resized to image1's size if they differ)."

    image1 = Socket(IMAGE)
    image2 = Socket(IMAGE)
    outputs = (Output("image", IMAGE),)

    def run(self, ctx: RunContext, image1: Any, image2: Any) -> Any:
        import torch

        if image2.shape[1:3] != image1.shape[1:3]:
            image2 = resize(image2, image1.shape[1], image1.shape[2], "bilinear")
        return torch.cat([image1, image2.to(image1.dtype)])


class ImagePadForOutpaint(Node):
    type = "ImagePadForOutpaint"
    display_name = "Pad Image for Outpainting"
    category = "image"
    description = (
        "Adds borders to the image (grey, 0.5) and gives the mask of what to paint: 1 on the "
        "new borders, fading into the old image over `feathering` pixels."
    )

    image = Socket(IMAGE)
    left = Int(0, min=0, max=8192, step=8)
    top = Int(0, min=0, max=8192, step=8)
    right = Int(0, min=0, max=8192, step=8)
    bottom = Int(0, min=0, max=8192, step=8)
    feathering = Int(40, min=0, max=8192, tooltip="pixels over which the mask fades into the old image")
    outputs = (Output("image", IMAGE), Output("mask", MASK))

    def run(self, ctx: RunContext, image: Any, left: int, top: int, right: int, bottom: int, feathering: int) -> Any:
        import torch

        batch, h, w, channels = image.shape
        height, width = h + top + bottom, w + left + right
        check_pixels("left", width, height, batch, ctx.settings)
        padded = torch.full((batch, height, width, channels), 0.5, dtype=image.dtype)
        padded[:, top:top + h, left:left + w] = image
        mask = torch.ones((batch, height, width), dtype=torch.float32)
        inner = torch.zeros((h, w), dtype=torch.float32)
        if feathering > 0 and feathering * 2 < min(h, w):
            rows = torch.arange(h, dtype=torch.float32)[:, None]
            cols = torch.arange(w, dtype=torch.float32)[None, :]
            distance = torch.full((h, w), float("inf"))
            for side, near in ((top, rows), (bottom, h - 1 - rows), (left, cols), (right, w - 1 - cols)):
                if side:
                    distance = torch.minimum(distance, near.expand(h, w))
            fade = ((feathering - distance) / feathering).clamp(min=0.0)
            inner = fade * fade
        mask[:, top:top + h, left:left + w] = inner
        return padded, mask



class Canny(Node):
    type = "Canny"
    display_name = "Canny Edges"
    category = "image"
    description = (
        "White edges on black, by the Canny detector (Gaussian blur, Sobel gradients, thin "
        "edges, two thresholds with hysteresis), computed with kornia, the library ComfyUI's "
        "Canny uses, so the edges match. The usual input of a Canny ControlNet."
    )

    image = Socket(IMAGE)
    low_threshold = Float(0.4, min=0.01, max=0.99, step=0.01, tooltip="gradients above this are edges if they touch a strong one")
    high_threshold = Float(0.8, min=0.01, max=0.99, step=0.01, tooltip="gradients above this are always edges")
    outputs = (Output("image", IMAGE),)

    @classmethod
    def check_values(cls, values: dict[str, Any]) -> dict[str, str]:
        if values.get("low_threshold", 0.0) > values.get("high_threshold", 1.0):
            return {"low_threshold": f"low_threshold {values['low_threshold']} is above high_threshold {values['high_threshold']}"}
        return {}

    def run(self, ctx: RunContext, image: Any, low_threshold: float, high_threshold: float) -> Any:
        import kornia

        _, edges = kornia.filters.canny(image.movedim(-1, 1).float(), low_threshold, high_threshold)
        return edges.expand(-1, 3, -1, -1).movedim(1, -1).contiguous()


# ---------------------------------------------------------------- sizes, turns, stitching, noise (issue 11)
class ImageScaleToMaxDimension(Node):
    type = "ImageScaleToMaxDimension"
    display_name = "Scale Image to Longest Side"
    category = "image"
    description = "Resizes images so that their longer side is `largest_size` pixels, keeping the aspect ratio."

    image = Socket(IMAGE)
    method = Choice(METHODS, default="area", tooltip="interpolation")
    largest_size = Int(512, min=1, max=16384, tooltip="the longer side after resizing, in pixels (a square: both)")
    outputs = (Output("image", IMAGE),)

    def run(self, ctx: RunContext, image: Any, method: str, largest_size: int) -> Any:
        h, w = image.shape[1:3]
        if h > w:
            height, width = largest_size, max(1, round(w / h * largest_size))
        elif w > h:
            height, width = max(1, round(h / w * largest_size)), largest_size
        else:
            height = width = largest_size
        check_pixels("largest_size", width, height, image.shape[0], ctx.settings)
        return resize(image, height, width, method)


ROTATIONS = ("none", "90 degrees", "180 degrees", "270 degrees")


class ImageRotate(Node):
    type = "ImageRotate"
    display_name = "Rotate Image"
    category = "image"
    description = "Turns the images clockwise by a quarter, a half or three quarters."

    image = Socket(IMAGE)
    rotation = Choice(ROTATIONS, default="none", tooltip="clockwise; 90 and 270 swap width and height")
    outputs = (Output("image", IMAGE),)

    def run(self, ctx: RunContext, image: Any, rotation: str) -> Any:
        return image.rot90(ROTATIONS.index(rotation), dims=(2, 1)).contiguous()


class ResizeAndPadImage(Node):
    type = "ResizeAndPadImage"
    display_name = "Fit Image with Padding"
    category = "image"
    description = (
        "Fits the images inside target_width x target_height, keeping the aspect ratio (the "
        "scale of the tighter side, sizes rounded down), centred on a white or black canvas "
        "of exactly that size."
    )

    image = Socket(IMAGE)
    target_width = Int(512, min=1, max=16384, tooltip="the result's width in pixels")
    target_height = Int(512, min=1, max=16384, tooltip="the result's height in pixels")
    padding_color = Choice(("white", "black"), default="white", tooltip="the colour of the borders")
    method = Choice(METHODS, default="area", tooltip="interpolation")
    outputs = (Output("image", IMAGE),)

    def run(self, ctx: RunContext, image: Any, target_width: int, target_height: int, padding_color: str,
            method: str) -> Any:
        import torch

        batch, h, w, channels = image.shape
        check_pixels("target_width", target_width, target_height, batch, ctx.settings)
        scale = min(target_width / w, target_height / h)
        width, height = max(1, min(target_width, int(w * scale))), max(1, min(target_height, int(h * scale)))
        canvas = torch.full((batch, target_height, target_width, channels), 1.0 if padding_color == "white" else 0.0,
                            dtype=torch.float32)
        top, left = (target_height - height) // 2, (target_width - width) // 2
        canvas[:, top:top + height, left:left + width] = resize(image, height, width, method)
        return canvas


STITCH_DIRECTIONS = ("right", "down", "left", "up")
SPACING_COLORS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "red": (1.0, 0.0, 0.0),
                  "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}


class ImageStitch(Node):
    type = "ImageStitch"
    display_name = "Stitch Images"
    category = "image"
    description = (
        "Puts image2 beside image1 (right, left) or above or below it (up, down), with an optional "
        "band of colour between. `match_image_size` resizes image2 (lanczos, aspect ratio kept) to "
        "image1's height or width; without it the smaller one is centred on a band of the spacing "
        "colour's grey (white or black; 0 for the colours). A shorter batch repeats its last image."
    )

    image1 = Socket(IMAGE)
    direction = Choice(STITCH_DIRECTIONS, default="right", tooltip="where image2 goes")
    match_image_size = Bool(True, tooltip="resize image2 to image1's height (right, left) or width (down, up)")
    spacing_width = Int(0, min=0, max=1024, step=2, tooltip="pixels between the images; an odd number is rounded up")
    spacing_color = Choice(tuple(SPACING_COLORS), default="white")
    image2 = Socket(IMAGE, optional=True, tooltip="none: image1 unchanged")
    outputs = (Output("image", IMAGE),)

    def run(self, ctx: RunContext, image1: Any, direction: str, match_image_size: bool, spacing_width: int,
            spacing_color: str, image2: Any = None) -> Any:
        import torch

        if image2 is None:
            return image1
        batch = max(image1.shape[0], image2.shape[0])
        first, second = _padded_batch(image1.float(), batch), _padded_batch(image2.float(), batch)
        across = direction in ("right", "left")  # side by side: heights must agree
        h1, w1 = first.shape[1:3]
        h2, w2 = second.shape[1:3]
        if match_image_size:
            height, width = (h1, max(1, int(h1 * w2 / h2))) if across else (max(1, int(w1 / (w2 / h2))), w1)
            check_pixels("match_image_size", width, height, batch, ctx.settings)
            second = resize(second, height, width, "lanczos")
        else:
            grey = SPACING_COLORS[spacing_color][0] if spacing_color in ("white", "black") else 0.0
            side = 1 if across else 2  # the axis to even out
            size = max(first.shape[side], second.shape[side])
            first, second = (_centred(image, side, size, grey) for image in (first, second))
        parts = [second, first] if direction in ("left", "up") else [first, second]
        axis = 2 if across else 1
        if spacing_width > 0:
            spacing_width += spacing_width % 2
            shape = list(parts[0].shape)
            shape[axis] = spacing_width
            band = torch.tensor(SPACING_COLORS[spacing_color], dtype=torch.float32).expand(*shape[:3], 3)
            parts.insert(1, band)
        total = sum(part.shape[axis] for part in parts)
        check_pixels("spacing_width", total if across else parts[0].shape[2], parts[0].shape[1] if across else total,
                     batch, ctx.settings)
        return torch.cat(parts, dim=axis).contiguous()


def _padded_batch(images: Any, batch: int) -> Any:
    """``images`` with its last image repeated up to ``batch`` images."""
    import torch

    if images.shape[0] >= batch:
        return images
    return torch.cat([images, images[-1:].expand(batch - images.shape[0], -1, -1, -1)])


def _centred(images: Any, axis: int, size: int, value: float) -> Any:
    """``images`` padded on both sides of ``axis`` (1 rows, 2 columns) to ``size`` (the extra
    pixel, if odd, after), with ``value``."""
    import torch.nn.functional as F

    extra = size - images.shape[axis]
    if extra <= 0:
        return images
    before, after = extra // 2, extra - extra // 2
    pad = (0, 0, before, after) if axis == 2 else (0, 0, 0, 0, before, after)
    return F.pad(images, pad, mode="constant", value=value)


class ImageAddNoise(Node):
    type = "ImageAddNoise"
    display_name = "Add Noise to Image"
    category = "image"
    description = (
        "Adds Gaussian noise times `strength` to each pixel value, clamped to [0, 1], drawn "
        "from a CPU generator seeded with `seed` (the same seed gives the same grain)."
    )

    image = Socket(IMAGE)
    seed = Seed(0, tooltip="0 .. 2^64-1")
    strength = Float(0.5, min=0.0, max=1.0, step=0.01, tooltip="the noise's standard deviation")
    outputs = (Output("image", IMAGE),)

    def run(self, ctx: RunContext, image: Any, seed: int, strength: float) -> Any:
        import torch

        noise = torch.randn(tuple(image.shape), generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32)
        return (image + strength * noise.to(image)).clamp(0.0, 1.0)


class GetImageSize(Node):
    type = "GetImageSize"
    display_name = "Image Size"
    category = "image"
    description = "The images' width, height and batch size, as numbers to wire into another node's fields."

    image = Socket(IMAGE)
    outputs = (Output("width", INT), Output("height", INT), Output("batch_size", INT))

    def run(self, ctx: RunContext, image: Any) -> tuple[int, int, int]:
        return int(image.shape[2]), int(image.shape[1]), int(image.shape[0])


MORPHOLOGY = ("erode", "dilate", "open", "close", "gradient", "top_hat", "bottom_hat")


class Morphology(Node):
    type = "Morphology"
    display_name = "Image Morphology"
    category = "image"
    description = (
        "Grey-scale morphology with a kernel_size square, per channel, as ComfyUI's (kornia's, "
        "pixel for pixel): erode (each pixel the darkest around it), dilate (the brightest), open "
        "(erode then dilate: removes small bright specks), close (dilate then erode: fills small "
        "dark holes), gradient (dilate - erode: the outlines), top_hat (image - open: the small "
        "bright details), bottom_hat (close - image: the small dark details). Pixels beyond the "
        "edge are left out."
    )

    image = Socket(IMAGE)
    operation = Choice(MORPHOLOGY, default="erode")
    kernel_size = Int(3, min=3, max=999, tooltip="the square's side in pixels")
    outputs = (Output("image", IMAGE),)

    def run(self, ctx: RunContext, image: Any, operation: str, kernel_size: int) -> Any:
        # Past the image's size a larger square reaches no further pixel (the edge is left out),
        # so the result is the same with the side cut to twice the image's, parity kept.
        longest = max(image.shape[1:3])
        side = min(kernel_size, 2 * longest - 1 if kernel_size % 2 else 2 * longest)
        planes = image.float().movedim(-1, 1)

        def dilate(x: Any) -> Any:
            return _window_max(x, side - 1 - side // 2, side // 2)

        def erode(x: Any) -> Any:
            return -_window_max(-x, side // 2, side - 1 - side // 2)

        if operation == "erode":
            out = erode(planes)
        elif operation == "dilate":
            out = dilate(planes)
        elif operation == "open":
            out = dilate(erode(planes))
        elif operation == "close":
            out = erode(dilate(planes))
        elif operation == "gradient":
            out = dilate(planes) - erode(planes)
        elif operation == "top_hat":
            out = planes - dilate(erode(planes))
        else:
            out = erode(dilate(planes)) - planes
        return out.movedim(1, -1).contiguous()


def _window_max(planes: Any, before: int, after: int) -> Any:
    """[N, C, H, W]: each pixel the largest value of the square from ``before`` pixels before
    it to ``after`` after it on both axes, pixels outside the image left out. A flat square
    is separable, so two passes of one axis each (O(side) per pixel, where a 2-D window
    costs side squared: kernel_size 999 is ComfyUI's maximum)."""
    import torch.nn.functional as F

    side = before + after + 1
    padded = F.pad(planes, (before, after, before, after), value=float("-inf"))
    rows = F.max_pool2d(padded, (1, side), stride=1)
    return F.max_pool2d(rows, (side, 1), stride=1)


class ImageRGBToYUV(Node):
    type = "ImageRGBToYUV"
    display_name = "Split Image into Y, U, V"
    category = "image"
    description = (
        "The images' brightness (Y) and two colour-difference planes (U = Cb, V = Cr, 0.5 = no "
        "colour), each as a grey image, by kornia's YCbCr conversion (as ComfyUI): e.g. to sharpen "
        "or blur the brightness alone, then join them again with Join Y, U, V."
    )

    image = Socket(IMAGE)
    outputs = (Output("y", IMAGE), Output("u", IMAGE), Output("v", IMAGE))

    def run(self, ctx: RunContext, image: Any) -> tuple[Any, Any, Any]:
        from kornia.color import rgb_to_ycbcr

        planes = rgb_to_ycbcr(image.float().movedim(-1, 1)).movedim(1, -1)
        return tuple(planes[..., i:i + 1].expand(*planes.shape[:-1], 3).contiguous() for i in range(3))


class ImageYUVToRGB(Node):
    type = "ImageYUVToRGB"
    display_name = "Join Y, U, V into Image"
    category = "image"
    description = (
        "RGB images from a brightness (Y) and two colour-difference (U = Cb, V = Cr) images, each "
        "read as the mean of its channels (grey images, as Split Image into Y, U, V gives), by "
        "kornia's YCbCr conversion (as ComfyUI), clamped to [0, 1]."
    )

    y = Socket(IMAGE, tooltip="brightness")
    u = Socket(IMAGE, tooltip="blue difference (Cb)")
    v = Socket(IMAGE, tooltip="red difference (Cr)")
    outputs = (Output("image", IMAGE),)

    def run(self, ctx: RunContext, y: Any, u: Any, v: Any) -> Any:
        import torch
        from kornia.color import ycbcr_to_rgb

        for name, plane in (("u", u), ("v", v)):
            if plane.shape[:3] != y.shape[:3]:
                raise NodeError(f"{name} is {tuple(plane.shape[:3])} (batch, height, width), y {tuple(y.shape[:3])}: "
                                "the three must be images of one size and batch", field=name)
        planes = torch.cat([plane.float().mean(dim=-1, keepdim=True) for plane in (y, u, v)], dim=-1)
        return ycbcr_to_rgb(planes.movedim(-1, 1)).movedim(1, -1).clamp(0.0, 1.0).contiguous()
