"""Saving a model as a checkpoint file that other tools open (ComfyUI's CheckpointSave).

A merged model, or one with LoRAs baked in, is worth keeping: the node writes its UNet,
text encoder(s) and VAE as one ``.safetensors`` in the original single-file layout
(impl/ldm_export.py), with the LoRAs merged at their strengths and the workflow in the
file's metadata, into ``checkpoints/`` under the output folder, never over a file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from nodeflow import Choice, Node, NodeError, RunContext, Socket, String, write_numbered

from nodes.diffusion.images import _check_prefix, _output_folder_problem
from nodes.diffusion.types import CLIP, MODEL, VAE, Autoencoder, DiffusionModel, TextEncoders

_DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}
_SAVABLE = ("sd1", "sdxl")  # families whose original layout nodeflow writes


class CheckpointSave(Node):
    type = "CheckpointSave"
    display_name = "Save Checkpoint"
    category = "loaders"
    description = (
        "Saves the model, text encoder and VAE as one checkpoint file (.safetensors, the "
        "original single-file layout A1111 and ComfyUI read) in checkpoints/ under the output "
        "folder, named prefix_00001.safetensors, ...; LoRAs on the model are merged in at "
        "their strengths, and the workflow is stored in the file's metadata. SD 1.x and SDXL."
    )
    output_node = True

    model = Socket(MODEL)
    clip = Socket(CLIP)
    vae = Socket(VAE)
    filename_prefix = String("nodeflow", tooltip="start of the file name; no folders or '..'")
    dtype = Choice(tuple(_DTYPES), default="fp16", tooltip="the weights' precision in the file (fp16: half the size)")
    outputs = ()

    @classmethod
    def check_host(cls, values: dict[str, Any], ctx: RunContext) -> dict[str, str]:
        """Before the run, so a merge is never lost to a bad name or folder."""
        try:
            _check_prefix(values.get("filename_prefix", "nodeflow"))
        except NodeError as error:
            return {"filename_prefix": error.message}
        problem = _output_folder_problem(Path(ctx.output_dir) / "checkpoints")
        return {"": problem} if problem else {}

    def run(self, ctx: RunContext, model: DiffusionModel, clip: TextEncoders, vae: Autoencoder,
            filename_prefix: str, dtype: str) -> None:
        import torch
        from safetensors.torch import save

        from nodes.diffusion.impl import ldm_export
        from nodes.diffusion.impl.lora import active
        from nodes.diffusion.impl.metadata import workflow_text

        _check_prefix(filename_prefix)
        for field, family in (("model", model.family.name), ("clip", clip.family.name), ("vae", vae.family.name)):
            if family not in _SAVABLE:
                raise NodeError(f"nodeflow saves SD 1.x and SDXL checkpoints; this {field} is {family}", field=field)
        if clip.family.name != model.family.name:
            raise NodeError(f"the text encoder is {clip.family.name}, the model {model.family.name}", field="clip")
        with torch.inference_mode():
            try:
                with active([model.unet], model.adapters):
                    state = ldm_export.unet_state(model.unet)
                with active(clip.encoders, clip.adapters):
                    state.update(ldm_export.text_state(clip.encoders, clip.family.name))
            except ValueError as error:
                raise NodeError(str(error), field="model") from None
            state.update(ldm_export.vae_state(vae.vae))
            kind = getattr(torch, _DTYPES[dtype])
            tensors = {key: value.detach().to("cpu", kind if value.is_floating_point() else value.dtype).contiguous()
                       for key, value in state.items()}
        metadata = {"format": "pt"}
        document = ctx.settings.workflow
        if ctx.settings.embed_workflow and isinstance(document, Mapping):
            metadata["workflow"] = workflow_text(document)
        data = save(tensors, metadata)
        del tensors, state
        folder = Path(ctx.output_dir) / "checkpoints"
        problem = _output_folder_problem(folder)
        if problem:
            raise NodeError(problem)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            ctx.report_written(write_numbered(folder, filename_prefix, data, suffix=".safetensors"))
        except OSError as exc:
            raise NodeError(exc.strerror or str(exc)) from None
