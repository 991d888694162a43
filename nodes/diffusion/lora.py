"""LoRA: low-rank weight changes for the UNet and text encoders, from kohya/A1111 or diffusers files.

The output is a new model (and CLIP) record sharing the input's weights, with the LoRA
listed at its strength; the cached base model is not changed (see impl/lora.py). Stack
several by chaining the nodes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from nodeflow import FileChoice, Float, Node, NodeError, Output, RunContext, Socket, stamp

from nodes.diffusion import estimates
from nodes.diffusion.impl.paths import MODEL_EXTENSIONS
from nodes.diffusion.loaders import _field_options, _model_file_problems, _model_fingerprint
from nodes.diffusion.types import CLIP, MODEL, DiffusionModel, TextEncoders


def lora_field() -> FileChoice:
    return FileChoice(
        folder="loras", extensions=MODEL_EXTENSIONS["loras"], default="",
        tooltip="A LoRA file in a loras folder: kohya/A1111 (lora_unet_*, lora_te_*) or diffusers/PEFT naming.",
    )


def strength_field(what: str) -> Float:
    return Float(1.0, min=-100.0, max=100.0, step=0.01, tooltip=f"how strongly the LoRA changes the {what}; 0 is off, negative inverts it")


class LoRA(Node):
    type = "LoRA"
    display_name = "Load LoRA"
    category = "loaders"
    description = (
        "Applies a LoRA to the model and the text encoder, each with its own strength. "
        "Chain several to stack them. The input model stays as it was."
    )

    model = Socket(MODEL)
    clip = Socket(CLIP)
    lora_name = lora_field()
    strength_model = strength_field("UNet")
    strength_clip = strength_field("text encoder")
    field_options = classmethod(_field_options)
    fingerprint = classmethod(_model_fingerprint)
    check_host = classmethod(_model_file_problems)
    outputs = (Output("model", MODEL), Output("clip", CLIP))
    estimate_memory = classmethod(estimates.lora)

    def run(
        self, ctx: RunContext, model: DiffusionModel, clip: TextEncoders, lora_name: str,
        strength_model: float, strength_clip: float,
    ) -> dict[str, Any]:
        name, in_unet, in_text = _load(ctx, lora_name, model, clip.encoders)
        return {
            "model": dataclasses.replace(model, adapters=model.adapters + ((name, strength_model),)) if in_unet else model,
            "clip": dataclasses.replace(clip, adapters=clip.adapters + ((name, strength_clip),)) if in_text else clip,
        }


class LoRAModelOnly(Node):
    type = "LoRAModelOnly"
    display_name = "Load LoRA (model only)"
    category = "loaders"
    description = "Applies the UNet part of a LoRA to the model; its text-encoder part, if any, is not used."

    model = Socket(MODEL)
    lora_name = lora_field()
    strength_model = strength_field("UNet")
    field_options = classmethod(_field_options)
    fingerprint = classmethod(_model_fingerprint)
    check_host = classmethod(_model_file_problems)
    outputs = (Output("model", MODEL),)
    estimate_memory = classmethod(estimates.lora)

    def run(self, ctx: RunContext, model: DiffusionModel, lora_name: str, strength_model: float) -> DiffusionModel:
        name, in_unet, _ = _load(ctx, lora_name, model, ())
        if not in_unet:
            raise NodeError("the LoRA has no weights for the UNet", field="lora_name")
        return dataclasses.replace(model, adapters=model.adapters + ((name, strength_model),))


def _load(ctx: RunContext, value: str, model: DiffusionModel, encoders: Any) -> tuple[str, bool, bool]:
    from nodes.diffusion.impl.ldm import CheckpointError
    from nodes.diffusion.impl.lora import adapter_name, loaded_in, load_into, read_lora
    from nodes.diffusion.impl.paths import resolve_model_path

    try:
        path: Path = resolve_model_path(value, "loras", ctx.settings)
    except NodeError as error:
        raise NodeError(error.message, field="lora_name") from None
    name = adapter_name(path, stamp(path))
    already = loaded_in(name, model.unet, list(encoders))
    if already is not None:  # a strength changed: the adapter is in the models, nothing to read
        return name, *already
    try:
        weights, alphas = read_lora(path, model.family.name, model.unet.config)
        in_unet, in_text = load_into(name, weights, alphas, model.unet, list(encoders))
    except CheckpointError as error:
        raise NodeError(f"{path.name}: {error}", field="lora_name") from None
    except (ValueError, KeyError, RuntimeError) as error:  # peft: shapes or modules that do not fit
        raise NodeError(f"{path.name} does not fit this model: {error}", field="lora_name") from None
    if not in_unet and not in_text:
        raise NodeError(f"{path.name}: no LoRA weights in it fit this model", field="lora_name")
    return name, in_unet, in_text
