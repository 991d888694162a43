"""unCLIP: image variations with SD 2.1 unCLIP models (stable-diffusion-2-1-unclip, -h and -l).

An unCLIP UNet is steered by a CLIP image embedding besides the prompt. The checkpoint
loader gives the model and the image encoder it was trained with; CLIPVisionEncode
embeds the picture; UnCLIPConditioning attaches the embedding to a conditioning, and the
guider hands it to the UNet, noise-augmented, at every step (impl/unclip.py). The plain
Checkpoint loader reads unCLIP files too (without their image encoder).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from nodeflow import FileChoice, Float, Node, NodeError, Output, RunContext, Socket

from nodes.diffusion.impl.paths import MODEL_EXTENSIONS
from nodes.diffusion.loaders import Checkpoint
from nodes.diffusion.types import CLIP, CLIP_VISION, CLIP_VISION_OUTPUT, CONDITIONING, MODEL, VAE, Conditioning, VisionOutput

EMBEDDED_VISION = "embedder.model.visual."  # where SD 2.1 unCLIP files keep their image encoder


class UnCLIPCheckpoint(Checkpoint):
    """Checkpoint's fields and loading, plus the image encoder the file carries."""

    type = "UnCLIPCheckpoint"
    display_name = "Load unCLIP Checkpoint"
    description = (
        "Loads an SD 2.1 unCLIP checkpoint (a single file in the original layout, or a diffusers folder): its "
        "UNet, which also takes an image embedding, text encoder and VAE, and the CLIP image encoder stored beside them."
    )

    checkpoint = FileChoice(
        folder="checkpoints", extensions=MODEL_EXTENSIONS["checkpoints"], default="",
        tooltip="An unCLIP checkpoint file (e.g. sd21-unclip-h.ckpt) or diffusers folder in a checkpoints folder.",
    )
    outputs = (
        Output("model", MODEL, "The denoising UNet (it takes image embeddings) and its noise schedule"),
        Output("clip", CLIP, "Tokenizer and text encoder"),
        Output("vae", VAE, "The autoencoder between pixels and latents"),
        Output("clip_vision", CLIP_VISION, "The image encoder the model was trained with"),
    )

    def run(self, ctx: RunContext, checkpoint: str, dtype: str, prediction: str, vae_dtype: str = "auto") -> dict[str, Any]:
        from nodes.diffusion.clip_vision import vision_model
        from nodes.diffusion.impl import unclip
        from nodes.diffusion.impl.clip_vision import load_clip_vision
        from nodes.diffusion.impl.ldm import CheckpointError
        from nodes.diffusion.impl.loading import resolve_dtype
        from nodes.diffusion.impl.paths import model_files, resolve_model_path

        loaded = super().run(ctx, checkpoint, dtype, prediction, vae_dtype)
        path = resolve_model_path(checkpoint, "checkpoints", ctx.settings)
        if not unclip.takes_images(loaded["model"]):
            raise NodeError(f"{path.name} is not an unCLIP checkpoint: its UNet takes no image embedding "
                            "(load it with Load Checkpoint)", field="checkpoint")
        vision = loaded["clip"].vision
        if vision is None or type(vision).__name__ != "CLIPVisionModelWithProjection":
            if path.is_dir():
                raise NodeError(f"{path.name} has no image_encoder (a CLIPVisionModelWithProjection)", field="checkpoint")
            try:
                vision = load_clip_vision(path, resolve_dtype(dtype, ctx.device), ctx.device,
                                          model_files(path, "checkpoints", ctx.settings), prefixes=(EMBEDDED_VISION,))
            except CheckpointError as error:
                raise NodeError(f"{path.name}: the unCLIP image encoder ({EMBEDDED_VISION}*) does not load: {error}",
                                field="checkpoint") from None
        if unclip.embedding_width(loaded["model"]) != int(vision.config.projection_dim):
            raise NodeError(f"{path.name}: its image encoder gives {vision.config.projection_dim}-wide embeddings, its "
                            f"UNet takes {unclip.embedding_width(loaded['model'])}", field="checkpoint")
        return {**loaded, "clip_vision": vision_model(vision, str(path))}


class UnCLIPConditioning(Node):
    type = "UnCLIPConditioning"
    display_name = "unCLIP Conditioning"
    category = "conditioning"
    description = (
        "Attaches image embeddings to a conditioning, for unCLIP models: the image steers the result besides "
        "the prompt. Chain several to mix images, each with its strength. Noise augmentation blurs what the "
        "embedding says, for looser variations. With SDXL the embedding (of a CLIP-G vision model) takes the "
        "place of the pooled prompt embedding (\"Revision\"); other models ignore it."
    )

    conditioning = Socket(CONDITIONING)
    clip_vision_output = Socket(CLIP_VISION_OUTPUT, tooltip="the embedding of the image (CLIP Vision Encode)")
    strength = Float(1.0, min=-10.0, max=10.0, step=0.01, tooltip="how strongly the image steers; 0 leaves it out")
    noise_augmentation = Float(0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="how much noise is added to the embedding; 0 keeps it exact")
    outputs = (Output("conditioning", CONDITIONING),)

    def run(self, ctx: RunContext, conditioning: Conditioning, clip_vision_output: VisionOutput, strength: float,
            noise_augmentation: float) -> Conditioning:
        from nodes.diffusion.impl.unclip import UnclipImage

        if strength == 0:
            return conditioning
        image = UnclipImage(clip_vision_output.image_embeds, strength, noise_augmentation)
        extras = {**conditioning.extras, "unclip": (*conditioning.extras.get("unclip", ()), image)}
        return dataclasses.replace(conditioning, extras=extras)
