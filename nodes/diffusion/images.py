"""Images in and out: load from the input folder, save PNGs, preview without saving.

Written files are reported to the host through ``ctx.report_written``; the CLI lists
them, the editor shows them. Save
and preview nodes also pass their images on as an output, so a run's result (and the
editor) can show them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nodeflow import (
    Bool, FileChoice, MemoryNeed, Node, NodeError, Output, PathRefused, RunContext, RunSettings, Socket, String,
    check_memory, open_inside, write_numbered,
)

from nodes.diffusion import estimates
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
    estimate_memory = classmethod(estimates.load_image)

    @classmethod
    def fingerprint(cls, values: dict[str, Any], ctx: RunContext) -> str | None:
        """An image replaced in the input folder under the same name is read again."""
        from nodeflow import stamp

        try:
            return stamp(_inside(Path(ctx.input_dir), values.get("image", ""), ctx.settings))
        except NodeError:  # refused or empty: the run reports it
            return None

    @classmethod
    def check_host(cls, values: dict[str, Any], ctx: RunContext) -> dict[str, str]:
        """Before the run: the image is a regular file inside the input folder (else the
        folder searched and the nearest name there). Reads no pixels."""
        import stat

        from nodes.diffusion.impl.paths import nearest

        name = values.get("image", "")
        folder = Path(ctx.input_dir)
        try:
            path = _inside(folder, name, ctx.settings)
            mode = os.stat(path).st_mode
        except NodeError as error:
            return {"image": error.message}
        except FileNotFoundError:
            names = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
            return {"image": f"{_short(name)} is not in the input folder {folder}{nearest(name, names)}"}
        except OSError as exc:
            return {"image": f"cannot open {_short(name)}: {exc.strerror or exc}"}
        if not stat.S_ISREG(mode):
            return {"image": f"{_short(name)} is not a regular file (a folder, FIFO or device is never read)"}
        return {}

    def run(self, ctx: RunContext, image: str) -> Any:
        return read_image(ctx, image)


def read_image(ctx: RunContext, image: str) -> tuple[Any, Any]:
    """The input-folder image ``image`` as (RGB [1, H, W, 3], mask [1, H, W]): the mask is
    1 - alpha (transparent = masked, as ComfyUI), all 0 for an image without alpha."""
    import numpy as np
    import torch
    from PIL import Image, ImageOps

    folder = Path(ctx.input_dir)
    path = _inside(folder, image, ctx.settings)
    try:
        # Opened once, checked on the descriptor (inside the folder, a regular file) and
        # read from it: a symlink swapped in after the check, or a FIFO, is never read.
        file = os.fdopen(open_inside(path, [folder, *ctx.settings.trusted_paths], "image"), "rb")
    except PathRefused as error:
        raise NodeError(str(error), field="image") from None
    except FileNotFoundError:
        raise NodeError(f'{image!r} is not in the input folder {ctx.input_dir}', field="image") from None
    except OSError as exc:  # e.g. a name too long for the file system, no permission
        raise NodeError(f"cannot open {_short(image)}: {exc.strerror or exc}", field="image") from None
    try:
        with file, Image.open(file) as picture:
            if picture.width * picture.height > (Image.MAX_IMAGE_PIXELS or 0) > 0:  # before decoding
                raise NodeError(
                    f'{_short(image)} is {picture.width}x{picture.height} pixels, more than the '
                    f"limit of {Image.MAX_IMAGE_PIXELS} pixels",
                    field="image",
                )
            # A tiny PNG can decode to gigabytes: decoded bytes, RGB copy and float32 pixels.
            check_memory(MemoryNeed(picture.width * picture.height * 19, "image",
                                    f"decoding {_short(image)} of {picture.width}x{picture.height}"),
                         ctx.settings)
            upright = ImageOps.exif_transpose(picture)
            rgb = upright.convert("RGB")
            has_alpha = "A" in upright.getbands() or "transparency" in upright.info
            alpha = upright.convert("RGBA").getchannel("A") if has_alpha else None
    except FileNotFoundError:
        raise NodeError(f'{image!r} is not in the input folder {ctx.input_dir}', field="image") from None
    except Image.DecompressionBombError as exc:
        raise NodeError(f'{image!r} is too large to open: {exc}', field="image") from None
    except (OSError, ValueError) as exc:  # ValueError: e.g. a text chunk over Pillow's limits
        raise NodeError(f'cannot read {_short(image)} as an image: {exc}', field="image") from None
    pixels = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0)[None]
    if alpha is None:
        mask = torch.zeros(pixels.shape[:3], dtype=torch.float32)
    else:
        mask = 1.0 - torch.from_numpy(np.asarray(alpha, dtype=np.float32) / 255.0)[None]
    return pixels, mask


def _short(name: str) -> str:
    return repr(name) if len(name) <= 80 else repr(name[:77] + "...")


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

    @classmethod
    def check_host(cls, values: dict[str, Any], ctx: RunContext) -> dict[str, str]:
        """Before the run, so a generated image is never lost to a bad name: the prefix is
        a plain file name and the output folder is a folder that exists or can be made."""
        try:
            _check_prefix(values.get("filename_prefix", "nodeflow"))
        except NodeError as error:
            return {"filename_prefix": error.message}
        problem = _output_folder_problem(Path(ctx.output_dir))
        return {"": problem} if problem else {}

    def run(self, ctx: RunContext, images: Any, filename_prefix: str, embed_workflow: bool) -> Any:
        from nodes.diffusion.impl.metadata import image_metadata

        _check_prefix(filename_prefix)
        folder = Path(ctx.output_dir)
        problem = _output_folder_problem(folder)
        if problem:
            raise NodeError(problem)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise NodeError(f"cannot make the output folder {folder}: {exc.strerror or exc}") from None
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


def _output_folder_problem(folder: Path) -> str | None:
    """Why images could not be written into ``folder`` (made if missing), or None."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink() or (existing.parent.exists() and not existing.parent.is_dir()):
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        return f"the output folder {folder} cannot be used: {existing} is a file, not a folder"
    if existing.is_dir() and not os.access(existing, os.W_OK | os.X_OK):
        return f"the output folder {folder} cannot be written (no permission on {existing})"
    return None


_MAX_PREFIX = 200  # leaves room for _00001.png and the temporary name's suffix within 255 bytes


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
    if len(prefix.encode("utf-8", "surrogatepass")) > _MAX_PREFIX:
        raise NodeError(f"the prefix is longer than {_MAX_PREFIX} bytes, too long for a file name",
                        field="filename_prefix")
    if any("\ud800" <= ch <= "\udfff" for ch in prefix):
        raise NodeError("the prefix holds a lone surrogate, which no file name can hold", field="filename_prefix")
    if any(sep in prefix for sep in separators) or ".." in prefix or "\x00" in prefix or ":" in prefix:
        raise NodeError(
            f'{prefix!r} may not contain folder separators, ":" or ".."; '
            "files are always written into the output folder",
            field="filename_prefix",
        )


def _write_new_png(folder: Path, prefix: str, picture: Any, metadata: Any = None) -> Path:
    """Write ``picture`` to the first unused ``prefix_NNNNN.png``, atomically: the PNG is
    encoded in memory and goes through :func:`nodeflow.write_numbered` (a temporary name,
    fsync, then a link that never replaces a file which appeared meanwhile), so a full
    disk or kill -9 never leaves a torn image under the final name, and the numbering
    never skips a number for one."""
    import io

    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", pnginfo=metadata)
    try:
        return write_numbered(folder, prefix, buffer.getvalue())
    except OSError as exc:
        raise NodeError(exc.strerror or str(exc)) from None  # a SaveError: names the file and why


def _to_pil(images: Any) -> list[Any]:
    import numpy as np
    from PIL import Image

    array = images.detach().float().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    if array.ndim == 3:
        array = array[None]
    frames = (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return [Image.fromarray(frame) for frame in frames]
