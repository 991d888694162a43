"""Loading a model's text encoders from their own files (ComfyUI's CLIPLoader and
DualCLIPLoader), to pair with a UNet file (the UNet node) and a VAE file (VAELoader).

A text encoder file holds one CLIP text model, in the transformers layout
(``text_model.*``, as ComfyUI's ``clip_l.safetensors`` / ``clip_g.safetensors``) or
OpenCLIP's (``transformer.resblocks.*``), bare or under its checkpoint prefix. Which
encoder it is comes from the published sizes (``impl/loading.py``'s ``detect_encoder``);
the node's ``encoder`` choice says it for a file of another size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nodeflow import Choice, FileChoice, Node, NodeError, Output, RunContext

from nodes.diffusion import estimates
from nodes.diffusion.impl.paths import MODEL_EXTENSIONS
from nodes.diffusion.loaders import _field_options, _model_file_problems, dtype_field
from nodes.diffusion.types import CLIP


def _files_fingerprint(cls: type[Node], values: dict[str, Any], ctx: RunContext) -> str | None:
    """Size and time of every file named, so a file replaced under the same name reloads."""
    from nodeflow import stamp

    from nodes.diffusion.impl.paths import resolve_model_path

    stamps = []
    for name, declared in cls.inputs.items():
        if isinstance(declared, FileChoice) and name in values:
            try:
                stamps.append(str(stamp(resolve_model_path(values[name], declared.folder, ctx.settings))))
            except Exception:  # unresolvable: the run reports it
                return None
    return "|".join(stamps)


def _load(ctx: RunContext, names: dict[str, str], encoder: str, dtype: str) -> Any:
    """The text encoders of the files named by ``names`` (field -> value), each read only
    inside the text encoder folders; an unreadable file fails naming its field."""
    from nodes.diffusion.impl.ldm import CheckpointError
    from nodes.diffusion.impl.loading import load_text_encoders, resolve_dtype
    from nodes.diffusion.impl.paths import ModelFileError, model_files, resolve_model_path
    from nodes.diffusion.types import TextEncoders

    paths: list[Path] = []
    refused: dict[str, str] = {}
    for field, value in names.items():
        try:
            paths.append(resolve_model_path(value, "clip", ctx.settings))
        except NodeError as error:
            refused[field] = error.message
            continue
        if paths[-1].is_dir():
            refused[field] = f"{paths[-1].name} is a folder; choose a text encoder file (.safetensors)"
    if refused:  # a file named and refused says more than a field left empty
        field = next((f for f in refused if str(names[f]).strip()), next(iter(refused)))
        raise NodeError(refused[field], field=field)
    torch_dtype = resolve_dtype(dtype, ctx.device)
    try:
        loaded = load_text_encoders(paths, encoder, torch_dtype, ctx.device, model_files(paths[0], "clip", ctx.settings))
    except (CheckpointError, ModelFileError) as error:
        message = str(error)
        # the field of the file the message names, else the first
        field = next((f for f, p in zip(names, paths) if p.name in message), next(iter(names)))
        raise NodeError(message if any(p.name in message for p in paths) else f"{paths[0].name}: {message}",
                        field=field) from None
    return TextEncoders(loaded.tokenizers, loaded.encoders, loaded.family, loaded.pad_token_ids, None,
                        " + ".join(str(p) for p in paths))


class TextEncoderLoader(Node):
    type = "TextEncoderLoader"
    display_name = "Load Text Encoder"
    category = "loaders"
    description = (
        "Loads one text encoder file: SD 1.x's CLIP-L, SD 2.x's OpenCLIP-H, or OpenCLIP-G alone "
        "(the SDXL refiner's), to pair with a UNet file."
    )

    clip_name = FileChoice(
        folder="clip", extensions=MODEL_EXTENSIONS["clip"], default="",
        tooltip="A text encoder file in a clip (or text_encoders) folder.",
    )
    encoder = Choice(
        ("auto", "clip_l", "open_clip_h", "open_clip_g"), default="auto",
        tooltip="Which encoder the file holds: clip_l (SD 1.x), open_clip_h (SD 2.x), open_clip_g (SDXL refiner). "
        "auto: by the published sizes (1280 wide or 32 layers G, 1024 wide or 23-24 layers H, else L; an "
        "OpenCLIP-layout file of another size H).",
    )
    dtype = dtype_field()
    field_options = classmethod(_field_options)
    fingerprint = classmethod(_files_fingerprint)
    check_host = classmethod(_model_file_problems)
    estimate_memory = classmethod(estimates.text_encoder_files)
    outputs = (Output("clip", CLIP, "Tokenizer and text encoder"),)

    def run(self, ctx: RunContext, clip_name: str, encoder: str, dtype: str) -> Any:
        return _load(ctx, {"clip_name": clip_name}, encoder, dtype)


class DualTextEncoderLoader(Node):
    type = "DualTextEncoderLoader"
    display_name = "Load SDXL Text Encoders"
    category = "loaders"
    description = (
        "Loads SDXL's two text encoders from their own files, CLIP-L and OpenCLIP-G in either "
        "order (the narrower is CLIP-L), to pair with an SDXL UNet file."
    )

    clip_name1 = FileChoice(
        folder="clip", extensions=MODEL_EXTENSIONS["clip"], default="",
        tooltip="One of the two text encoder files (e.g. clip_l.safetensors) in a clip (or text_encoders) folder.",
    )
    clip_name2 = FileChoice(
        folder="clip", extensions=MODEL_EXTENSIONS["clip"], default="",
        tooltip="The other one (e.g. clip_g.safetensors).",
    )
    dtype = dtype_field()
    field_options = classmethod(_field_options)
    fingerprint = classmethod(_files_fingerprint)
    check_host = classmethod(_model_file_problems)
    estimate_memory = classmethod(estimates.text_encoder_files)
    outputs = (Output("clip", CLIP, "Tokenizers and text encoders"),)

    def run(self, ctx: RunContext, clip_name1: str, clip_name2: str, dtype: str) -> Any:
        return _load(ctx, {"clip_name1": clip_name1, "clip_name2": clip_name2}, "auto", dtype)
