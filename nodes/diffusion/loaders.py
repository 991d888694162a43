"""Nodes that load models from disk: a whole checkpoint, or only its UNet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nodeflow import Choice, FileChoice, Node, NodeError, Output, RunContext

from nodes.diffusion import estimates
from nodes.diffusion.types import CLIP, MODEL, VAE

from nodes.diffusion.impl.paths import MODEL_EXTENSIONS

def dtype_field() -> Choice:
    return Choice(
        ("auto", "fp32", "fp16", "bf16"),
        default="auto",
        tooltip="Precision of the weights. auto: fp16 on a CUDA GPU, fp32 on the CPU and Apple GPUs.",
    )


def vae_dtype_field() -> Choice:
    return Choice(
        ("auto", "fp32", "fp16", "bf16"),
        default="auto",
        tooltip="Precision of the VAE. auto: fp32 when the weights are fp16 and the VAE would overflow "
        "to black or NaN images in fp16 (SD 1.x and SDXL VAEs; a VAE whose config says "
        "force_upcast: false stays fp16), otherwise the weights' precision.",
    )


def prediction_field() -> Choice:
    return Choice(
        ("auto", "epsilon", "v_prediction"),
        default="auto",
        tooltip="What the UNet predicts. auto reads it from the model; set it when an SD 2.x file is "
        "guessed wrong (768-v models predict v, 512-base models epsilon).",
    )


def _model_fingerprint(cls: type[Node], values: dict[str, Any], ctx: RunContext) -> str | None:
    """Size and time of the model file (or folder), so a file replaced under the same name reloads."""
    from nodeflow import stamp

    from nodes.diffusion.impl.paths import resolve_model_path

    (name,) = (n for n, f in cls.inputs.items() if isinstance(f, FileChoice))
    if name not in values:
        return None
    try:
        return stamp(resolve_model_path(values[name], cls.inputs[name].folder, ctx.settings))
    except Exception:  # unresolvable: the run reports it
        return None


def _model_file_problems(cls: type[Node], values: dict[str, Any], ctx: RunContext) -> dict[str, str]:
    """Before anything runs: the model file named exists in the folders searched (or a
    nearest name is offered) and lies inside them. Cheap: no file is read."""
    from nodes.diffusion.impl.paths import resolve_model_path

    found = {}
    for name, declared in cls.inputs.items():
        if isinstance(declared, FileChoice) and name in values:
            try:
                resolve_model_path(values[name], declared.folder, ctx.settings)
            except NodeError as error:
                found[name] = error.message
    return found


def _field_options(cls: type[Node], field_name: str, settings: dict[str, Any]) -> list[str]:
    """The models the editor offers for a file field: what the configured folders hold."""
    from nodes.diffusion.impl.paths import list_models

    return list_models(cls.inputs[field_name].folder, settings)


def _model_facts(cls: type[Node], values: dict[str, Any], settings: Any) -> dict[str, Any]:
    """What a checkpoint's configs tell before it loads: the image side it was trained at
    (``native_size``: the UNet's sample size times the VAE's scale factor) and its noise
    schedule (``scheduler_config``, with the node's prediction override). A diffusers folder
    has both; a single file only says so (``model_configs: "single file"``), since its
    family is known only once its weights are read."""
    import json

    from nodes.diffusion.impl.paths import resolve_model_path

    name = next((n for n, f in cls.inputs.items() if isinstance(f, FileChoice)), None)
    try:
        path = resolve_model_path(values[name], cls.inputs[name].folder, settings)
    except (NodeError, OSError, KeyError, TypeError):
        return {}
    if path.is_file():
        return {"model_configs": "single file"}
    facts: dict[str, Any] = {}
    try:
        unet = json.loads((path / "unet" / "config.json").read_text())
        vae = json.loads((path / "vae" / "config.json").read_text())
        facts["native_size"] = int(unet["sample_size"]) * 2 ** (len(vae["block_out_channels"]) - 1)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        scheduler = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
        if isinstance(scheduler, dict):
            if values.get("prediction", "auto") != "auto":
                scheduler["prediction_type"] = values["prediction"]
            facts["scheduler_config"] = scheduler
    except (OSError, ValueError):
        pass
    return facts


class Checkpoint(Node):
    type = "Checkpoint"
    display_name = "Load Checkpoint"
    category = "loaders"
    description = (
        "Loads a Stable Diffusion model (SD 1.x, SD 2.x, SDXL, or the bundled model) from a "
        "single .safetensors file or a diffusers folder: its UNet, text encoder(s) and VAE."
    )

    checkpoint = FileChoice(
        folder="checkpoints",
        extensions=MODEL_EXTENSIONS["checkpoints"],
        default="shapes",
        tooltip="A checkpoint file or diffusers folder in a checkpoints folder; 'shapes' is the bundled model.",
    )
    dtype = dtype_field()
    prediction = prediction_field()
    vae_dtype = vae_dtype_field()
    field_options = classmethod(_field_options)
    fingerprint = classmethod(_model_fingerprint)
    check_host = classmethod(_model_file_problems)
    output_facts = classmethod(_model_facts)
    estimate_memory = classmethod(estimates.checkpoint)
    outputs = (
        Output("model", MODEL, "The denoising UNet and its noise schedule"),
        Output("clip", CLIP, "Tokenizer(s) and text encoder(s)"),
        Output("vae", VAE, "The autoencoder between pixels and latents"),
    )

    def run(self, ctx: RunContext, checkpoint: str, dtype: str, prediction: str, vae_dtype: str = "auto") -> dict[str, Any]:
        from nodes.diffusion.impl.loading import load_checkpoint, resolve_dtype
        from nodes.diffusion.types import Autoencoder, DiffusionModel, TextEncoders

        path = _resolve(checkpoint, "checkpoints", ctx)
        loaded = _load(load_checkpoint, path, "checkpoints", resolve_dtype(dtype, ctx.device), ctx.device, prediction, ctx)
        if vae_dtype != "auto":  # the user's choice over the loader's upcast rule
            loaded.vae.to(resolve_dtype(vae_dtype, ctx.device))
        source = str(path)
        vae_config = loaded.vae.config
        latent_rgb = _latent_rgb(loaded)
        return {
            "model": DiffusionModel(
                loaded.unet, loaded.family, loaded.scheduler_config, loaded.dtype, source, latent_rgb=latent_rgb,
                image_stats=loaded.image_stats,
            ),
            "clip": TextEncoders(
                loaded.tokenizers, loaded.text_encoders, loaded.family, loaded.pad_token_ids, loaded.vision, source
            ),
            "vae": Autoencoder(
                loaded.vae,
                loaded.family,
                scaling_factor=float(vae_config.get("scaling_factor") or 0.18215),
                shift_factor=float(vae_config.get("shift_factor") or 0.0),
                latent_rgb=latent_rgb,
                source=source,
            ),
        }


class UNet(Node):
    type = "UNet"
    display_name = "Load UNet"
    category = "loaders"
    description = (
        "Loads only the denoising UNet of SD 1.x, 2.x or SDXL (a single file: a full checkpoint, or a "
        "UNet alone in the original or diffusers naming; or a diffusers folder), to pair with text "
        "encoders and a VAE from their own files or another checkpoint."
    )

    unet = FileChoice(
        folder="unet",
        extensions=MODEL_EXTENSIONS["unet"],
        default="",
        tooltip="A UNet file or diffusers (unet) folder in a unet (or diffusion_models) folder.",
    )
    dtype = dtype_field()
    prediction = prediction_field()
    field_options = classmethod(_field_options)
    fingerprint = classmethod(_model_fingerprint)
    check_host = classmethod(_model_file_problems)
    estimate_memory = classmethod(estimates.unet_file)
    outputs = (Output("model", MODEL, "The denoising UNet and its noise schedule"),)

    def run(self, ctx: RunContext, unet: str, dtype: str, prediction: str) -> Any:
        from nodes.diffusion.impl.loading import load_unet, resolve_dtype
        from nodes.diffusion.types import DiffusionModel

        path = _resolve(unet, "unet", ctx)
        torch_dtype = resolve_dtype(dtype, ctx.device)
        loaded = _load(load_unet, path, "unet", torch_dtype, ctx.device, prediction, ctx)
        return DiffusionModel(loaded.unet, loaded.family, loaded.scheduler_config, torch_dtype, str(path))


def _resolve(value: str, kind: str, ctx: RunContext) -> Path:
    from nodes.diffusion.impl.paths import resolve_model_path

    try:
        return resolve_model_path(value, kind, ctx.settings)
    except NodeError as error:
        raise NodeError(error.message, field=_FIELD[kind]) from None


_FIELD = {"checkpoints": "checkpoint", "unet": "unet"}


def _load(loader: Any, path: Path, kind: str, dtype: Any, device: str, prediction: str, ctx: RunContext) -> Any:
    """Run ``loader`` with every file it opens confined to the model folders of ``kind``."""
    from nodes.diffusion.impl.ldm import CheckpointError
    from nodes.diffusion.impl.paths import ModelFileError, model_files

    try:
        return loader(path, dtype, device, prediction, model_files(path, kind, ctx.settings))
    except (CheckpointError, ModelFileError) as error:
        raise NodeError(f'{path.name}: {error}', field=_FIELD[kind]) from None


def _latent_rgb(loaded: Any) -> Any:
    """The preview map: the model's own fit when its folder ships one, else the family's."""
    import json
    import os

    import torch

    from nodes.diffusion.impl.preview import latent_rgb_map

    channels = loaded.family.latent_channels
    own = loaded.folder / "vae" / "latent_rgb.json" if loaded.folder is not None else None
    if own is not None and own.is_file():
        from nodes.diffusion.impl.paths import ModelFileError, ModelFiles

        try:
            fd = ModelFiles.around(loaded.folder).open(own)
            with os.fdopen(fd, "rb") as file:
                rows = json.loads(file.read(1 << 20))
            table = torch.tensor(rows, dtype=torch.float32)
        except (ModelFileError, ValueError, TypeError, RuntimeError, OverflowError):
            table = None  # only a preview: a malformed map falls back to the family's
        if table is not None and table.shape == (channels + 1, 3):
            # The file maps to RGB in [0, 1]; previews use [-1, 1] like the family maps.
            table = table * 2.0
            table[-1] -= 1.0
            return table
    return latent_rgb_map(loaded.family, channels)
