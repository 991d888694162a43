"""Where model files named in a workflow are found.

A workflow names a model by a value such as ``"sd15.safetensors"``,
``"anime/model.safetensors"`` or ``"shapes"`` (a diffusers folder). The value is looked
up in the folders configured for its kind (``settings["model_folders"][kind]``), then
in the built-in models folder ``nodes/bundled/``. Every lookup goes through
:func:`resolve_model_path`, so rules about which paths a workflow may name live here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from nodeflow.node import NodeError

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "bundled"

# Folder kinds a node's FileChoice can name, with the file types each lists.
MODEL_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "checkpoints": (".safetensors", ".ckpt", ".pt", ".pth", ".bin"),
    "unet": (".safetensors", ".ckpt", ".pt", ".pth", ".bin"),
}
_DIFFUSERS_MARKERS = ("model_index.json", "config.json")


def model_folders(kind: str, settings: Mapping[str, Any] | None) -> list[Path]:
    """The folders searched for ``kind``, in order: configured ones, then the bundled models."""
    configured = ((settings or {}).get("model_folders") or {}).get(kind) or []
    if isinstance(configured, (str, os.PathLike)):
        configured = [configured]
    return [Path(folder).expanduser() for folder in configured] + [BUNDLED_DIR]


def resolve_model_path(value: str, kind: str, settings: Mapping[str, Any] | None = None) -> Path:
    """The file or diffusers folder ``value`` names; :class:`NodeError` naming the value
    and the folders searched when there is none. A workflow is untrusted: it may name
    only models inside the folders (see :mod:`nodeflow.paths`) or a cached Hugging Face
    model by name (``settings["model_names"]``, see :mod:`nodeflow.config`)."""
    from nodeflow.paths import PathRefused, resolve_inside

    if not value or not value.strip():
        raise NodeError(f"no {_singular(kind)} chosen")
    named = ((settings or {}).get("model_names") or {}).get(kind) or {}
    if value in named:
        return Path(named[value])
    folders = model_folders(kind, settings)
    try:
        found = resolve_inside(value, folders, settings, exists=_is_model, what=_singular(kind))
    except PathRefused as error:
        raise NodeError(str(error)) from None
    if found is not None:
        return found
    searched = ", ".join(str(folder) for folder in folders)
    raise NodeError(f"{_singular(kind)} {value!r} not found; searched: {searched}")


def list_models(kind: str, settings: Mapping[str, Any] | None = None) -> list[str]:
    """Values the editor offers for ``kind``: model files (by extension) and diffusers
    folders under each searched folder, as paths relative to it, sorted, without duplicates."""
    extensions = MODEL_EXTENSIONS.get(kind, (".safetensors",))
    found: set[str] = set()
    for folder in model_folders(kind, settings):
        if not folder.is_dir():
            continue
        # The bundled folder also holds helper weights (e.g. a classifier): only its
        # diffusers folders are models.
        loose_files = folder != BUNDLED_DIR
        for root, dirs, files in os.walk(folder):
            here = Path(root)
            if here != folder and _is_diffusers_folder(here, kind):
                found.add(here.relative_to(folder).as_posix())
                dirs.clear()  # its weights are not separate choices
                continue
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
            for name in files if loose_files else ():
                if name.lower().endswith(extensions):
                    found.add((here / name).relative_to(folder).as_posix())
    found.update(((settings or {}).get("model_names") or {}).get(kind) or {})
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
