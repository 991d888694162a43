"""Upscale models (ESRGAN, Real-ESRGAN, SwinIR, DAT, HAT, ...): load one, enlarge images with it.

The loader reads one weights file from an ``upscale_models`` folder and lets spandrel tell
the architecture from the weights (impl/upscale.py). Enlarging runs each image whole when
that fits the memory budget, else in overlapping tiles, reporting progress per tile.
"""

from __future__ import annotations

from typing import Any, Mapping

from nodeflow import Choice, FileChoice, Int, MemoryNeed, Node, NodeError, Output, RunContext, Socket, check_pixels

from nodes.diffusion import estimates
from nodes.diffusion.impl.paths import MODEL_EXTENSIONS
from nodes.diffusion.loaders import _field_options, _model_file_problems, _model_fingerprint, dtype_field
from nodes.diffusion.types import IMAGE, UPSCALE_MODEL, UpscaleModel


class UpscaleModelLoader(Node):
    type = "UpscaleModelLoader"
    display_name = "Load Upscale Model"
    category = "loaders"
    description = (
        "Loads an image upscaling network (ESRGAN, Real-ESRGAN, SwinIR, DAT, HAT and the other "
        "architectures spandrel knows) from one .safetensors or .pth file; the architecture and "
        "scale are read from the weights."
    )

    model_name = FileChoice(
        folder="upscale_models", extensions=MODEL_EXTENSIONS["upscale_models"], default="",
        tooltip="A weights file in an upscale_models folder (.safetensors preferred; .pth is read weights-only).",
    )
    dtype = dtype_field()
    field_options = classmethod(_field_options)
    fingerprint = classmethod(_model_fingerprint)
    check_host = classmethod(_model_file_problems)
    outputs = (Output("upscale_model", UPSCALE_MODEL, "The network, its scale and architecture"),)
    estimate_memory = classmethod(estimates.weights_loader("upscale_models", "model_name"))

    def run(self, ctx: RunContext, model_name: str, dtype: str) -> UpscaleModel:
        from nodes.diffusion.impl.ldm import CheckpointError
        from nodes.diffusion.impl.loading import resolve_dtype
        from nodes.diffusion.impl.paths import model_files, resolve_model_path
        from nodes.diffusion.impl.upscale import load_upscale_model

        try:
            path = resolve_model_path(model_name, "upscale_models", ctx.settings)
        except NodeError as error:
            raise NodeError(error.message, field="model_name") from None
        try:
            files = model_files(path, "upscale_models", ctx.settings)
            return load_upscale_model(path, files, ctx.device, resolve_dtype(dtype, ctx.device))
        except CheckpointError as error:
            message = str(error)
            shown = message if message.startswith(path.name) else f"{path.name} {message}"
            raise NodeError(shown, field="model_name") from None


class ImageUpscaleWithModel(Node):
    type = "ImageUpscaleWithModel"
    display_name = "Upscale Image (using Model)"
    category = "image"
    description = (
        "Enlarges images with an upscale model by its scale (e.g. 4x). Each image runs whole when "
        "it fits the memory budget, else in overlapping tiles blended at their seams."
    )

    upscale_model = Socket(UPSCALE_MODEL)
    image = Socket(IMAGE)
    tiling = Choice(("auto", "on", "off"), default="auto",
                    tooltip="auto: in tiles only when the whole image would not fit the memory budget "
                    "(never for models that tile themselves)")
    tile_size = Int(512, min=64, max=4096, step=32, tooltip="tile side in input pixels when tiling")
    overlap = Int(32, min=0, max=1024, step=8, tooltip="how far neighbouring tiles overlap, in input pixels")
    outputs = (Output("image", IMAGE),)
    estimate_memory = classmethod(estimates.image_upscale)

    @classmethod
    def check_values(cls, values: Mapping[str, Any]) -> dict[str, str]:
        if "overlap" in values and "tile_size" in values and values["overlap"] * 2 > values["tile_size"]:
            return {"overlap": f"overlap {values['overlap']} is more than half of tile_size {values['tile_size']}"}
        return {}

    @classmethod
    def working_memory(cls, inputs: Mapping[str, Any], settings: Any) -> MemoryNeed | None:
        from nodes.diffusion.impl.memory import upscale_need

        model, shape = inputs.get("upscale_model"), getattr(inputs.get("image"), "shape", None)
        if not isinstance(model, UpscaleModel) or shape is None or len(shape) != 4:
            return None
        batch, height, width = (int(side) for side in shape[:3])
        tile = _tile(model, batch, height, width, inputs["tiling"], inputs["tile_size"], settings)
        return upscale_need(model, batch, height, width, tile)

    def run(self, ctx: RunContext, upscale_model: UpscaleModel, image: Any, tiling: str, tile_size: int,
            overlap: int) -> Any:
        from nodes.diffusion.impl.upscale import upscale

        if image.ndim != 4 or image.shape[-1] != 3:
            raise NodeError(f"expects RGB images [batch, height, width, 3], got shape {tuple(image.shape)}", field="image")
        batch, height, width = (int(side) for side in image.shape[:3])
        scale = upscale_model.scale
        check_pixels("image", width * scale, height * scale, batch, ctx.settings)
        tile = _tile(upscale_model, batch, height, width, tiling, tile_size, ctx.settings)
        return upscale(upscale_model, image, tile, overlap, ctx.device, ctx.progress)


def _tile(model: UpscaleModel, batch: int, height: int, width: int, tiling: str, tile_size: int,
          settings: Any) -> int | None:
    """The tile side to run with, or None for whole images."""
    from nodeflow import memory_budget

    from nodes.diffusion.impl.memory import upscale_need

    if tiling == "off" or max(height, width) <= tile_size:
        return None
    if tiling == "on":
        return tile_size
    budget = memory_budget(settings)
    whole = upscale_need(model, batch, height, width, None).bytes
    if model.tiling == "internal" or budget is None or whole <= budget:
        return None
    return tile_size
