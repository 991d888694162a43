"""Images in and out: load from the input folder, save PNGs, preview without saving.

Written files are reported to the host through ``ctx.report_written``; the CLI lists
them, the editor shows them. Save
and preview nodes also pass their images on as an output, so a run's result (and the
editor) can show them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from nodeflow import Bool, FileChoice, Node, NodeError, Output, RunContext, RunSettings, Socket, String

from nodes.diffusion.types import IMAGE, MASK

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class LoadImage(Node):
    type = "LoadImage"
    display_name = "Load Image"
    category = "image"
    description = (
        "Reads an image from the input folder as RGB, and its alpha channel as a mask "
        "(transparent = masked; no alpha = an empty mask)."
    )

    image = FileChoice(folder="input", extensions=IMAGE_EXTENSIONS, tooltip="a file in the input folder")
    outputs = (Output("image", IMAGE), Output("mask", MASK, "1 - alpha: the transparent part"))

    @classmethod
    def fingerprint(cls, values: dict[str, Any], ctx: RunContext) -> str | None:
        """An image replaced in the input folder under the same name is read again."""
        from nodeflow import stamp

        try:
            return stamp(_inside(Path(ctx.input_dir), values.get("image", ""), ctx.settings))
        except NodeError:  # refused or empty: the run reports it
            return None

    def run(self, ctx: RunContext, image: str) -> Any:
        return read_image(ctx, image)


def read_image(ctx: RunContext, image: str) -> tuple[Any, Any]:
    """The input-folder image ``image`` as (RGB [1, H, W, 3], mask [1, H, W]): the mask is
    1 - alpha (transparent = masked, as ComfyUI), all 0 for an image without alpha."""
    import numpy as np
    import torch
    from PIL import Image, ImageOps

    path = _inside(Path(ctx.input_dir), image, ctx.settings)
    try:
        with Image.open(path) as picture:
            if picture.width * picture.height > (Image.MAX_IMAGE_PIXELS or 0) > 0:  # before decoding
                raise NodeError(
                    f'{image!r} is {picture.width}x{picture.height} pixels, more than the '
                    f"limit of {Image.MAX_IMAGE_PIXELS} pixels",
                    field="image",
                )
            upright = ImageOps.exif_transpose(picture)
            rgb = upright.convert("RGB")
            has_alpha = "A" in upright.getbands() or "transparency" in upright.info
            alpha = upright.convert("RGBA").getchannel("A") if has_alpha else None
    except FileNotFoundError:
        raise NodeError(f'{image!r} is not in the input folder {ctx.input_dir}', field="image") from None
    except Image.DecompressionBombError as exc:
        raise NodeError(f'{image!r} is too large to open: {exc}', field="image") from None
    except (OSError, ValueError) as exc:  # ValueError: e.g. a text chunk over Pillow's limits
        raise NodeError(f'cannot read {image!r} as an image: {exc}', field="image") from None
    pixels = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0)[None]
    if alpha is None:
        mask = torch.zeros(pixels.shape[:3], dtype=torch.float32)
    else:
        mask = 1.0 - torch.from_numpy(np.asarray(alpha, dtype=np.float32) / 255.0)[None]
    return pixels, mask


def _inside(folder: Path, name: str, settings: RunSettings) -> Path:
    """``folder / name``, refusing names that lead out of ``folder`` unless the user
    allowed the path (see :mod:`nodeflow.host.paths`)."""
    from nodeflow import PathRefused, resolve_inside

    if not name:
        raise NodeError('choose an image', field="image")
    try:
        found = resolve_inside(name, [folder], settings.trusted_paths, what="image")
    except PathRefused as error:
        raise NodeError(str(error), field="image") from None
    return found if found is not None else folder / name


class SaveImage(Node):
    type = "SaveImage"
    display_name = "Save Image"
    category = "image"
    description = (
        "Saves each image as a PNG in the output folder, named prefix_00001.png, "
        "prefix_00002.png, ...; an existing file is never overwritten."
    )
    output_node = True

    images = Socket(IMAGE)
    filename_prefix = String("nodeflow", tooltip="start of the file names; no folders or '..'")
    embed_workflow = Bool(
        True, tooltip="store the workflow in the PNG (open the image to get it back) and a readable summary"
    )
    outputs = (Output("images", IMAGE, tooltip="the saved images, passed on"),)

    def run(self, ctx: RunContext, images: Any, filename_prefix: str, embed_workflow: bool) -> Any:
        from nodes.diffusion.impl.metadata import image_metadata

        _check_prefix(filename_prefix)
        folder = Path(ctx.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        metadata = image_metadata(ctx, embed_workflow)
        for picture in _to_pil(images):
            ctx.report_written(_write_new_png(folder, filename_prefix, picture, metadata))
        return images


class PreviewImage(Node):
    type = "PreviewImage"
    display_name = "Preview Image"
    category = "image"
    description = "Shows the images in the editor and in the run's result without saving them."
    output_node = True

    images = Socket(IMAGE)
    outputs = (Output("images", IMAGE, tooltip="the previewed images, passed on"),)

    def run(self, ctx: RunContext, images: Any) -> Any:
        return images


class PreviewMask(Node):
    type = "PreviewMask"
    display_name = "Preview Mask"
    category = "mask"
    description = "Shows masks as grey images (white = masked) in the editor and in the run's result."
    output_node = True

    mask = Socket(MASK)
    outputs = (Output("images", IMAGE, tooltip="the masks as grey images"),)

    def run(self, ctx: RunContext, mask: Any) -> Any:
        return mask.float()[..., None].expand(*mask.shape, 3).contiguous()


def _check_prefix(prefix: str) -> None:
    separators = {"/", "\\", os.sep, os.altsep or "/"}
    if not prefix.strip():
        raise NodeError('give a file name prefix', field="filename_prefix")
    if any(sep in prefix for sep in separators) or ".." in prefix or "\x00" in prefix or ":" in prefix:
        raise NodeError(
            f'{prefix!r} may not contain folder separators, ":" or ".."; '
            "files are always written into the output folder",
            field="filename_prefix",
        )


def _write_new_png(folder: Path, prefix: str, picture: Any, metadata: Any = None) -> Path:
    """Write ``picture`` to the first unused ``prefix_NNNNN.png``; exclusive creation
    means a file that appears meanwhile (another run) is skipped, never replaced."""
    import glob

    numbered = re.compile(re.escape(prefix) + r"_(\d{5,})\.png")
    taken = [int(m[1]) for p in folder.glob(glob.escape(prefix) + "_*.png") if (m := numbered.fullmatch(p.name))]
    counter = max(taken, default=0) + 1
    while True:
        path = folder / f"{prefix}_{counter:05d}.png"
        try:
            with open(path, "xb") as handle:
                picture.save(handle, format="PNG", pnginfo=metadata)
            return path
        except FileExistsError:
            counter += 1


def _to_pil(images: Any) -> list[Any]:
    import numpy as np
    from PIL import Image

    array = images.detach().float().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    if array.ndim == 3:
        array = array[None]
    frames = (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return [Image.fromarray(frame) for frame in frames]
