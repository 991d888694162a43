"""CLIP vision: loading an image encoder and embedding images with it.

The embeddings (CLIP_VISION_OUTPUT) feed unCLIP conditioning (unclip.py); the encoder
comes from a ``clip_vision`` file or from an unCLIP checkpoint, which carries its own.
"""

from __future__ import annotations

from typing import Any

from nodeflow import Choice, FileChoice, Node, NodeError, Output, RunContext, Socket

from nodes.diffusion.impl.paths import MODEL_EXTENSIONS
from nodes.diffusion.loaders import _field_options, _model_file_problems, _model_fingerprint, dtype_field
from nodes.diffusion.types import CLIP_VISION, CLIP_VISION_OUTPUT, IMAGE, VisionModel, VisionOutput


def vision_model(model: Any, source: str) -> VisionModel:
    """The CLIP_VISION value of a loaded encoder, with CLIP's own pixel statistics."""
    from nodes.diffusion.clip_similarity import CLIP_MEAN, CLIP_STD

    return VisionModel(model, int(model.config.image_size), CLIP_MEAN, CLIP_STD, source)


class CLIPVisionLoader(Node):
    type = "CLIPVisionLoader"
    display_name = "Load CLIP Vision"
    category = "loaders"
    description = (
        "Loads a CLIP image encoder from a clip_vision file (.safetensors in the transformers layout "
        "most published files use, a whole CLIP model, or OpenCLIP's layout); its size is read from the weights."
    )

    clip_name = FileChoice(
        folder="clip_vision", extensions=MODEL_EXTENSIONS["clip_vision"], default="",
        tooltip="A CLIP vision weights file in a clip_vision folder (e.g. CLIP-ViT-H-14).",
    )
    dtype = dtype_field()
    field_options = classmethod(_field_options)
    fingerprint = classmethod(_model_fingerprint)
    check_host = classmethod(_model_file_problems)
    outputs = (Output("clip_vision", CLIP_VISION, "The image encoder"),)

    def run(self, ctx: RunContext, clip_name: str, dtype: str) -> VisionModel:
        from nodes.diffusion.impl.clip_vision import load_clip_vision
        from nodes.diffusion.impl.ldm import CheckpointError
        from nodes.diffusion.impl.loading import resolve_dtype
        from nodes.diffusion.impl.paths import model_files, resolve_model_path

        try:
            path = resolve_model_path(clip_name, "clip_vision", ctx.settings)
        except NodeError as error:
            raise NodeError(error.message, field="clip_name") from None
        if path.is_dir():
            raise NodeError(f"{path.name} is a folder; pick the weights file inside it", field="clip_name")
        try:
            model = load_clip_vision(path, resolve_dtype(dtype, ctx.device), ctx.device,
                                     model_files(path, "clip_vision", ctx.settings))
        except CheckpointError as error:
            message = str(error)
            raise NodeError(message if message.startswith(path.name) else f"{path.name}: {message}",
                            field="clip_name") from None
        return vision_model(model, str(path))


class CLIPVisionEncode(Node):
    type = "CLIPVisionEncode"
    display_name = "CLIP Vision Encode"
    category = "conditioning"
    description = (
        "Embeds images with a CLIP image encoder: each is resized to the encoder's size (center: the "
        "short side, then the middle is cut out; none: squeezed whole) and normalised as CLIP was trained."
    )

    clip_vision = Socket(CLIP_VISION)
    image = Socket(IMAGE)
    crop = Choice(("center", "none"), default="center",
                  tooltip="center: keep the aspect ratio and cut the middle square; none: squeeze the whole image")
    outputs = (Output("clip_vision_output", CLIP_VISION_OUTPUT, "The image embeddings and hidden states"),)

    def run(self, ctx: RunContext, clip_vision: VisionModel, image: Any, crop: str) -> VisionOutput:
        from nodes.diffusion.impl.clip_vision import encode, pixels_for

        pixels = pixels_for(image, clip_vision.image_size, clip_vision.mean, clip_vision.std, crop == "center")
        return VisionOutput(**encode(clip_vision.model, pixels))
