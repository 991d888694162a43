"""Where model files named in a workflow are found.

A workflow names a model by a value such as ``"sd15.safetensors"``,
``"anime/model.safetensors"`` or ``"shapes"`` (a diffusers folder). The value is looked
up in the folders the host configured for its kind (``RunSettings.model_folders``: the
user's own, then those packs ship, such as the bundled model's). Every lookup goes through
:func:`resolve_model_path`, so rules about which paths a workflow may name live here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodeflow import NodeError, RunSettings

# Folder kinds a node's FileChoice can name, with the file types each lists.
MODEL_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "checkpoints": (".safetensors", ".ckpt", ".pt", ".pth", ".bin"),
    "unet": (".safetensors", ".ckpt", ".pt", ".pth", ".bin"),
    "clip": (".safetensors", ".pt", ".bin"),  # text encoder files (ComfyUI's text_encoders / clip)
    # comfy-import: textual-inversion embeddings (.pt only through torch's weights-only loading)
    "embeddings": (".safetensors", ".pt", ".bin"),
    "vae": (".safetensors", ".ckpt", ".pt", ".pth", ".bin"),
    "loras": (".safetensors", ".ckpt", ".pt", ".bin"),
    "controlnet": (".safetensors", ".ckpt", ".pt", ".pth", ".bin"),
    "upscale_models": (".safetensors", ".pth", ".pt"),
    "clip_vision": (".safetensors", ".bin"),
    "gligen": (".safetensors", ".ckpt", ".pt", ".pth", ".bin"),
}
# Kinds whose diffusers form is one model folder (config.json + weights), not a pipeline.
_LONE_MODEL_KINDS = ("unet", "vae", "controlnet")
_DIFFUSERS_MARKERS = ("model_index.json", "config.json")
# xinsir's controlnet-union-sdxl-1.0 keeps its ProMax model beside the plain one as this
# config + weights pair; a controlnet folder holding only the pair is that model.
PROMAX_CONFIG, PROMAX_STEM = "config_promax.json", "diffusion_pytorch_model_promax"


def lone_model_layout(path: Path, kind: str) -> tuple[str, str] | None:
    """``(config file name, weights stem)`` of the lone diffusers model folder ``path``
    (``config.json`` + ``diffusion_pytorch_model.*``; for a ControlNet also the ProMax pair
    alone), or None when it is not one."""
    if (path / "config.json").is_file():
        return "config.json", "diffusion_pytorch_model"
    if kind == "controlnet" and (path / PROMAX_CONFIG).is_file():
        return PROMAX_CONFIG, PROMAX_STEM
    return None


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
        found = resolve_inside(value, folders, settings.trusted_paths, exists=lambda path: _is_model(path, kind), what=_singular(kind))
    except PathRefused as error:
        raise NodeError(str(error)) from None
    except OSError as error:  # e.g. a name too long for the file system
        raise NodeError(f"{_singular(kind)} {_short(value)}: {error.strerror or error}") from None
    if found is not None:
        return found
    searched = ", ".join(str(folder) for folder in folders) or "no folders are configured"
    raise NodeError(f"{_singular(kind)} {_short(value)} not found; searched: {searched}{nearest(value, list_models(kind, settings))}")


def nearest(value: str, names: list[str]) -> str:
    """``"; nearest name: 'x'"`` when one of ``names`` is close to ``value``, else ``""``."""
    import difflib

    close = difflib.get_close_matches(value, names, n=1, cutoff=0.5) if len(value) <= 256 else []
    return f"; nearest name: {close[0]!r}" if close else ""


def _short(value: str) -> str:
    return repr(value) if len(value) <= 80 else repr(value[:77] + "...")


def missing_model(value: Any, kind: str, settings: RunSettings) -> str | None:
    """Why ``value`` names no model of ``kind`` (the folders searched and the nearest name
    found there), or None when it resolves. Cheap: names are listed, nothing is read."""
    if not isinstance(value, str):
        return None  # the field's own check reports a wrong type
    try:
        resolve_model_path(value, kind, settings)
    except NodeError as error:
        return error.message
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


def _is_model(path: Path, kind: str) -> bool:
    if path.is_file():
        return True
    return path.is_dir() and (any((path / m).is_file() for m in _DIFFUSERS_MARKERS)
                              or lone_model_layout(path, kind) is not None)


def _is_diffusers_folder(path: Path, kind: str) -> bool:
    if (path / "model_index.json").is_file():
        return True
    # A lone diffusers model folder (a UNet, VAE or ControlNet) is a choice for its loader.
    return kind in _LONE_MODEL_KINDS and lone_model_layout(path, kind) is not None


def _singular(kind: str) -> str:
    return {
        "checkpoints": "checkpoint", "unet": "UNet", "clip": "text encoder", "vae": "VAE", "loras": "LoRA", "controlnet": "ControlNet",
        "upscale_models": "upscale model", "clip_vision": "CLIP vision model", "gligen": "GLIGEN model",
    }.get(kind, kind.rstrip("s"))


# -- reading a model's files ---------------------------------------------------------------

MAX_JSON_BYTES = 64 * 1024 * 1024  # tokenizer.json files of large vocabularies run to ~20 MB
MAX_FOLDER_COPY_BYTES = 256 * 1024 * 1024  # a tokenizer folder: a few MB


@dataclass(frozen=True)
class ModelFiles:
    """The folders a model's files may be read from, and the only way loaders read them.

    A model folder is as untrusted as a workflow: its shard index may name ``../../x`` and
    its ``vae/`` may be a symlink out. Every file a loader opens goes through :meth:`open`
    (or :meth:`read_json`), which refuses anything that does not lie inside ``roots`` and
    reads the checked descriptor (see :func:`nodeflow.open_inside`); a library that opens
    files by name (a tokenizer) is handed a private copy made through those descriptors
    (:meth:`copy_folder`), so nothing swapped in after the check is ever read.
    Refusals name the file as the model refers to it, never whether an outside file exists.
    """

    roots: tuple[Path, ...]

    @classmethod
    def around(cls, path: Path) -> "ModelFiles":
        """Confined to the model itself: its folder, or the file's own folder."""
        return cls((path if path.is_dir() else path.parent,))

    def open(self, path: Path) -> int:
        """A descriptor of ``path``; :class:`ModelFileError` if refused or missing."""
        from nodeflow import PathRefused, open_inside

        try:
            return open_inside(path, self.roots, "model file")
        except PathRefused:
            raise ModelFileError(f"{self._shown(path)} lies outside the model folders; it is never read") from None
        except FileNotFoundError:
            raise ModelFileError(f"missing {self._shown(path)}") from None
        except OSError as exc:
            raise ModelFileError(f"cannot open {self._shown(path)}: {exc.strerror or exc}") from None

    def read_json(self, path: Path) -> dict[str, Any]:
        """The JSON object in ``path``; an error naming the file for anything else."""
        from nodeflow import JSONTextError, parse_json

        fd = self.open(path)
        with os.fdopen(fd, "rb") as file:
            data = file.read(MAX_JSON_BYTES + 1)
        if len(data) > MAX_JSON_BYTES:
            raise ModelFileError(f"{self._shown(path)} is larger than {MAX_JSON_BYTES // 2**20} MB")
        try:
            value = parse_json(data.decode("utf-8-sig"))
        except UnicodeDecodeError:
            raise ModelFileError(f"{self._shown(path)} is not UTF-8 text") from None
        except JSONTextError as exc:
            raise ModelFileError(f"{self._shown(path)}: {exc}") from None
        if not isinstance(value, dict):
            raise ModelFileError(f"{self._shown(path)} must hold a JSON object")
        return value

    def copy_folder(self, folder: Path, into: Path, limit: int = MAX_FOLDER_COPY_BYTES) -> Path:
        """The plain files directly in ``folder``, each read through :meth:`open` and written
        into ``into`` (a private folder); returns ``into``. For libraries that open files
        by name: they read the copy, so a file replaced or symlinked out between the check
        and the library's open is never read. Subfolders are not copied (a tokenizer has none)."""
        from nodeflow import is_within

        if not is_within(folder, self.roots):
            raise ModelFileError(f"{self._shown(folder)} lies outside the model folders; it is never read")
        if folder.is_symlink():
            raise ModelFileError(f"{self._shown(folder)} is a symlinked folder; copy it in instead")
        total = 0
        for entry in sorted(folder.iterdir()):
            if entry.is_dir():
                continue
            fd = self.open(entry)  # refuses a symlink out, and anything not a regular file
            with os.fdopen(fd, "rb") as source:
                data = source.read(limit - total + 1)
            total += len(data)
            if total > limit:
                raise ModelFileError(f"{self._shown(folder)} holds more than {limit // 2**20} MB")
            (into / entry.name).write_bytes(data)
        return into

    def _shown(self, path: Path) -> str:
        for root in self.roots:
            try:
                return Path(os.path.normpath(path)).relative_to(root).as_posix()
            except ValueError:
                continue
        return path.name


class ModelFileError(ValueError):
    """A model file refused or unreadable; the message names it as the model refers to it."""


def model_files(path: Path, kind: str, settings: RunSettings) -> ModelFiles:
    """Where the model at ``path`` (from :func:`resolve_model_path`) may read files: the
    folders configured for ``kind``, the paths the user allowed and, for a Hugging Face
    cache snapshot, its repository folder (snapshot files are symlinks into ``blobs/``)."""
    roots = [*settings.folders(kind), *settings.trusted_paths]
    for named in settings.model_names.get(kind, {}).values():
        if path == named:
            repo = next((p for p in path.parents if p.name.startswith("models--")), path)
            roots.append(repo)
    return ModelFiles(tuple(roots))
