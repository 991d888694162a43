"""GLIGEN: placing phrases in boxes of the image (SD 1.x).

The loader reads a GLIGEN file from a ``gligen`` folder (the published
``gligen_sd14_textbox_pruned.safetensors`` and its kind); the text-box node adds one
phrase and its box to a conditioning. Chain text-box nodes to place several (up to 30).
The sampler then runs the model with GLIGEN's fusers added (impl/gligen.py); the loaded
model itself stays as it was.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from nodeflow import Choice, FileChoice, Float, Int, Node, NodeError, Output, RunContext, Socket, String

from nodes.diffusion.impl.paths import MODEL_EXTENSIONS
from nodes.diffusion.loaders import _field_options, _model_file_problems, _model_fingerprint
from nodes.diffusion.types import CLIP, CONDITIONING, GLIGEN, Conditioning, GroundingModel, TextEncoders

if TYPE_CHECKING:
    import torch

MAX_SIDE = 16384


class GLIGENLoader(Node):
    type = "GLIGENLoader"
    display_name = "Load GLIGEN"
    category = "loaders"
    description = (
        "Loads GLIGEN grounding weights (a text-box model for SD 1.x, e.g. "
        "gligen_sd14_textbox_pruned.safetensors), for GLIGEN Text Box to place phrases in boxes."
    )

    gligen_name = FileChoice(
        folder="gligen", extensions=MODEL_EXTENSIONS["gligen"], default="",
        tooltip="A GLIGEN text-box file in a gligen folder (fusers + position net, the published layout).",
    )
    field_options = classmethod(_field_options)
    fingerprint = classmethod(_model_fingerprint)
    check_host = classmethod(_model_file_problems)
    outputs = (Output("gligen", GLIGEN),)

    def run(self, ctx: RunContext, gligen_name: str) -> GroundingModel:
        from nodes.diffusion.impl.gligen import read_grounding
        from nodes.diffusion.impl.ldm import CheckpointError
        from nodes.diffusion.impl.loading import read_state_dict
        from nodes.diffusion.impl.paths import resolve_model_path

        try:
            path = resolve_model_path(gligen_name, "gligen", ctx.settings)
        except NodeError as error:
            raise NodeError(error.message, field="gligen_name") from None
        if path.is_dir():
            raise NodeError(f"{path.name} is a folder; GLIGEN models are single files", field="gligen_name")
        try:
            return read_grounding(read_state_dict(path, wrappers=("state_dict", "model")), source=path.name)
        except CheckpointError as error:
            raise NodeError(f"{path.name}: {error}", field="gligen_name") from None


class GLIGENTextBoxApply(Node):
    type = "GLIGENTextBoxApply"
    display_name = "GLIGEN Text Box"
    category = "conditioning"
    description = (
        "Grounds a phrase to a box of the image: the model draws what the phrase says there "
        "(GLIGEN). Chain several for several boxes; the last node's steps and negative "
        "settings apply to all of them."
    )

    conditioning_to = Socket(CONDITIONING, tooltip="the prompt's conditioning the box is added to")
    clip = Socket(CLIP, tooltip="the text encoder that encodes the phrase (the prompt's)")
    gligen_textbox_model = Socket(GLIGEN)
    text = String("", multiline=True, tooltip="the phrase to place in the box, e.g. 'a red car'")
    width = Int(64, min=8, max=MAX_SIDE, step=8, tooltip="box width in pixels")
    height = Int(64, min=8, max=MAX_SIDE, step=8, tooltip="box height in pixels")
    x = Int(0, min=0, max=MAX_SIDE, step=8, tooltip="left edge of the box in pixels")
    y = Int(0, min=0, max=MAX_SIDE, step=8, tooltip="top edge of the box in pixels")
    grounded_steps = Float(0.3, min=0.0, max=1.0, step=0.01,
                           tooltip="share of the steps, from the first, that are grounded (diffusers' "
                           "gligen_scheduled_sampling_beta; 1 = every step, as ComfyUI)")
    negative = Choice(("null boxes", "same boxes"), default="null boxes",
                      tooltip="what the negative pass gets if it has no boxes of its own: null boxes (as "
                      "diffusers' pipeline) or these boxes (as ComfyUI)")
    outputs = (Output("conditioning", CONDITIONING),)

    def run(self, ctx: RunContext, conditioning_to: Conditioning, clip: TextEncoders, gligen_textbox_model: GroundingModel,
            text: str, width: int, height: int, x: int, y: int, grounded_steps: float, negative: str) -> Conditioning:
        from nodes.diffusion.impl.gligen import MAX_BOXES, GroundedPhrase, Grounding

        before = conditioning_to.extras.get("gligen")
        phrases = () if before is None else before.phrases
        if before is not None and before.model is not gligen_textbox_model:
            raise NodeError("the conditioning is grounded by another GLIGEN model already", field="gligen_textbox_model")
        if len(phrases) >= MAX_BOXES:
            raise NodeError(f"GLIGEN places at most {MAX_BOXES} boxes; this would be box {len(phrases) + 1}",
                            field="conditioning_to")
        embedding = phrase_embedding(clip, text)
        if embedding.shape[-1] != gligen_textbox_model.phrase_dim:
            raise NodeError(f"the text encoder makes {embedding.shape[-1]}-wide embeddings; the GLIGEN model takes "
                            f"{gligen_textbox_model.phrase_dim}-wide ones (SD 1.x's)", field="clip")
        grounding = Grounding(gligen_textbox_model, (*phrases, GroundedPhrase(embedding, (width, height, x, y))),
                              grounded_steps, negative)
        return dataclasses.replace(conditioning_to, extras={**conditioning_to.extras, "gligen": grounding})


def phrase_embedding(clip: TextEncoders, text: str) -> "torch.Tensor":
    """The phrase's pooled embedding [dim] from the first text encoder: the final layer's
    state at the end token, without a projection, as diffusers' GLIGEN pipeline and
    ComfyUI use (with the CLIP record's LoRA adapters on)."""
    import torch

    from nodes.diffusion.impl.lora import active

    tokenizer, encoder = clip.tokenizers[0], clip.encoders[0]
    ids = tokenizer(text, truncation=True, max_length=77, return_tensors="pt").input_ids
    with torch.no_grad(), active(clip.encoders, clip.adapters):
        pooled = encoder(input_ids=ids.to(encoder.device)).pooler_output
    return pooled[0].detach().to("cpu", torch.float32)
