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
from typing import Any

from nodeflow import NodeError, RunSettings

# Folder kinds a node's FileChoice can name, with the file types each lists.
MODEL_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "checkpoints": (".safetensors", ".ckpt", ".pt", ".pth", ".bin"),
    "unet": (".safetensors", ".ckpt", ".pt", ".pth", ".bin"),
    # comfy-import: textual-inversion embeddings (.pt only through torch's weights-only loading)
    "embeddings": (".safetensors", ".pt", ".bin"),
}
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


def missing_model(value: Any, kind: str, settings: RunSettings) -> str | None:
    """Why ``value`` names no model of ``kind`` (the folders searched and the nearest name
    found there), or None when it resolves. Cheap: names are listed, nothing is read."""
    import difflib

    if not isinstance(value, str):
        return None  # the field's own check reports a wrong type
    try:
        resolve_model_path(value, kind, settings)
    except NodeError as error:
        message = error.message
        if value.strip():
            nearest = difflib.get_close_matches(value, list_models(kind, settings), n=1, cutoff=0.4)
            if nearest:
                message += f"; the nearest name found is {nearest[0]!r}"
            elif not settings.folders(kind):
                message += f" (no {kind} folder is configured: pass --models or set NODEFLOW_MODELS)"
        return message
    return None


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
    # A lone diffusers UNet folder is a choice for the UNet loader.
    return kind == "unet" and (path / "config.json").is_file()


def _singular(kind: str) -> str:
    return {"checkpoints": "checkpoint", "unet": "UNet"}.get(kind, kind.rstrip("s"))
