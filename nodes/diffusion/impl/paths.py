"""Where model files named in a workflow are found.

A workflow names a model by a value such as ``"sd15.safetensors"``,
``"anime/model.safetensors"`` or ``"shapes"`` (a diffusers folder). The value is looked
up in the folders the host configured for its kind (``RunSettings.model_folders``: the
user's own, then those packs ship, such as the bundled model's). Every lookup goes through
:func:`resolve_model_path`, so rules about which paths a workflow may name live here.
"""

from __future__ import annotations

import os
from pathlib import Path
from nodeflow import NodeError, RunSettings

# Folder kinds a node's FileChoice can name, with the file types each lists.
MODEL_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "checkpoints": (".safetensors", ".ckpt", ".pt", ".pth", ".bin"),
    "unet": (".safetensors", ".ckpt", ".pt", ".pth", ".bin"),
    "vae": (".safetensors", ".ckpt", ".pt", ".pth", ".bin"),
    "loras": (".safetensors", ".ckpt", ".pt", ".bin"),
    "controlnet": (".safetensors", ".ckpt", ".pt", ".pth", ".bin"),
    "upscale_models": (".safetensors", ".pth", ".pt"),
    "clip_vision": (".safetensors", ".bin"),
}
# Kinds whose diffusers form is one model folder (config.json + weights), not a pipeline.
_LONE_MODEL_KINDS = ("unet", "vae", "controlnet")
_DIFFUSERS_MARKERS = ("model_index.json", "config.json")


def resolve_model_path(value: str, kind: str, settings: RunSettings) -> Path:
    """The file or diffusers folder ``value`` names; :class:`NodeError` naming the value
    and the folders searched when there is none. A workflow is untrusted: it may name
    only models inside the folders (see :mod:`nodeflow.host.paths`) or a cached Hugging Face
    model by name (``settings.model_names``, see :mod:`nodeflow.host.config`)."""
    from nodeflow import PathRefused, resolve_inside

    if not value or not value.strip():
        raise NodeError(f"no {_singular(kind)} chosen")
    named = settings.model_names.get(kind, {})
    if value in named:
        return named[value]
    folders = settings.folders(kind)
    try:
        found = resolve_inside(value, folders, settings.trusted_paths, exists=_is_model, what=_singular(kind))
    except PathRefused as error:
        raise NodeError(str(error)) from None
    if found is not None:
        return found
    searched = ", ".join(str(folder) for folder in folders)
    raise NodeError(f"{_singular(kind)} {value!r} not found; searched: {searched}")


def list_models(kind: str, settings: RunSettings) -> list[str]:
    """Values the editor offers for ``kind``: model files (by extension) and diffusers
    folders under each searched folder, as paths relative to it, sorted, without duplicates."""
    extensions = MODEL_EXTENSIONS.get(kind, (".safetensors",))
    found: set[str] = set()
    for folder in settings.folders(kind):
        if not folder.is_dir():
            continue
        for root, dirs, files in os.walk(folder):
            here = Path(root)
            if here != folder and _is_diffusers_folder(here, kind):
                found.add(here.relative_to(folder).as_posix())
                dirs.clear()  # its weights are not separate choices
                continue
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
            for name in files:
                if name.lower().endswith(extensions):
                    found.add((here / name).relative_to(folder).as_posix())
    found.update(settings.model_names.get(kind, {}))
    return sorted(found)


def _is_model(path: Path) -> bool:
    return path.is_file() or (path.is_dir() and any((path / m).is_file() for m in _DIFFUSERS_MARKERS))


def _is_diffusers_folder(path: Path, kind: str) -> bool:
    if (path / "model_index.json").is_file():
        return True
    # A lone diffusers model folder (a UNet, VAE or ControlNet) is a choice for its loader.
    return kind in _LONE_MODEL_KINDS and (path / "config.json").is_file()


def _singular(kind: str) -> str:
    return {
        "checkpoints": "checkpoint", "unet": "UNet", "vae": "VAE", "loras": "LoRA", "controlnet": "ControlNet",
        "upscale_models": "upscale model", "clip_vision": "CLIP vision model",
    }.get(kind, kind.rstrip("s"))
