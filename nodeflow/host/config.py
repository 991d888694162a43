"""Where the user keeps models: folders from the command line, the environment and a config file.

Each *models location* is one of:

- a ComfyUI ``models/`` tree: its ``checkpoints``, ``vae``, ``unet`` / ``diffusion_models``,
  ``clip`` / ``text_encoders`` and ``loras`` folders are used for those kinds;
- a Hugging Face cache (``hub/`` with ``models--org--name/snapshots/<rev>/``): each
  diffusers model in it can be named ``org/name``, offline;
- any other folder: a folder of checkpoints.

Locations come, in this order of precedence, from ``--models DIR`` (repeatable), the
``NODEFLOW_MODELS`` environment variable (separated by ``os.pathsep``) and the config
file ``config.json`` in ``$NODEFLOW_CONFIG_DIR`` (default ``~/.config/nodeflow``)::

    {"models": ["~/ComfyUI/models", "~/.cache/huggingface/hub"],
     "model_folders": {"checkpoints": ["/data/sd"], "loras": ["/data/loras"]}}

:func:`load_models_config` reads them into a :class:`ModelsConfig` (kind -> folders, and
kind -> name -> path); :func:`nodeflow.host.settings.build_run_settings` turns that
into the run's :class:`~nodeflow.model.context.RunSettings`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from nodeflow.model import jsontext
from nodeflow.model.values import show

from nodeflow.model.errors import NodeflowError

ENV_MODELS = "NODEFLOW_MODELS"
ENV_CONFIG_DIR = "NODEFLOW_CONFIG_DIR"
CONFIG_FILE = "config.json"

# Folder kind -> its folder names in a ComfyUI models tree.
COMFYUI_FOLDERS: dict[str, tuple[str, ...]] = {
    "checkpoints": ("checkpoints",),
    "vae": ("vae",),
    "unet": ("unet", "diffusion_models"),
    "clip": ("clip", "text_encoders"),
    "loras": ("loras",),
    "embeddings": ("embeddings",),  # comfy-import: textual inversion
    "controlnet": ("controlnet", "t2i_adapter"),
    "upscale_models": ("upscale_models",),
    "clip_vision": ("clip_vision",),
    "gligen": ("gligen",),
}
_HF_PREFIX = "models--"


class ConfigError(NodeflowError, ValueError):
    """An unreadable config file or a models location that does not exist."""


@dataclass
class ModelsConfig:
    folders: dict[str, list[Path]] = field(default_factory=dict)  # kind -> folders, searched in order
    names: dict[str, dict[str, Path]] = field(default_factory=dict)  # kind -> "org/name" -> snapshot folder

    def add_folder(self, kind: str, folder: Path) -> None:
        existing = self.folders.setdefault(kind, [])
        if folder not in existing:
            existing.append(folder)


def config_dir(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get(ENV_CONFIG_DIR) or "~/.config/nodeflow").expanduser()


def read_config_file(environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    path = config_dir(environ) / CONFIG_FILE
    if not path.is_file():
        return {}
    try:
        data = jsontext.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, jsontext.JSONTextError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be an object")
    return data


def load_models_config(models: Iterable[str | os.PathLike[str]] = (), environ: Mapping[str, str] = os.environ) -> ModelsConfig:
    """The models folders from ``models`` (command line), the environment and the config file."""
    file = read_config_file(environ)
    locations: list[Path] = [Path(p).expanduser() for p in models]
    locations += [Path(p).expanduser() for p in (environ.get(ENV_MODELS) or "").split(os.pathsep) if p]
    configured = file.get("models") or []
    if isinstance(configured, str):
        configured = [configured]
    if not isinstance(configured, list) or not all(isinstance(p, str) for p in configured):
        raise ConfigError(f"{config_dir(environ) / CONFIG_FILE}: 'models' must be a folder or a list of folders")
    locations += [Path(p).expanduser() for p in configured]

    config = ModelsConfig()
    for location in locations:
        if not location.is_dir():
            raise ConfigError(f"models location {location} is not a folder")
        add_location(config, location)
    folders = file.get("model_folders") or {}
    if not isinstance(folders, dict):
        raise ConfigError("'model_folders' in the config file must map a kind to a list of folders")
    for kind, paths in folders.items():
        paths = [paths] if isinstance(paths, str) else paths
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise ConfigError(
                f"{config_dir(environ) / CONFIG_FILE}: 'model_folders'[{show(kind)}] must be a folder "
                f"or a list of folders, not {show(paths)}"
            )
        for path in paths:
            config.add_folder(kind, Path(path).expanduser())
    return config


def add_location(config: ModelsConfig, location: Path) -> None:
    """Add one models location, recognising a ComfyUI tree and a Hugging Face cache."""
    hub = location / "hub" if (location / "hub").is_dir() else location
    repos = sorted(p for p in hub.iterdir() if p.is_dir() and p.name.startswith(_HF_PREFIX))
    if repos:
        for repo in repos:
            _add_hf_repo(config, repo)
        return
    tree = [(kind, location / name) for kind, names in COMFYUI_FOLDERS.items() for name in names]
    if any(folder.is_dir() for _, folder in tree):
        for kind, folder in tree:
            if folder.is_dir():
                config.add_folder(kind, folder)
        return
    config.add_folder("checkpoints", location)


def _add_hf_repo(config: ModelsConfig, repo: Path) -> None:
    snapshot = hf_snapshot(repo)
    if snapshot is None:
        return
    name = repo.name[len(_HF_PREFIX) :].replace("--", "/")
    if (snapshot / "model_index.json").is_file():
        config.names.setdefault("checkpoints", {}).setdefault(name, snapshot)
    elif (snapshot / "config.json").is_file():  # a lone model, e.g. a diffusers UNet
        config.names.setdefault("unet", {}).setdefault(name, snapshot)


def hf_snapshot(repo: Path) -> Path | None:
    """The snapshot ``refs/main`` points at, else the newest one."""
    snapshots = repo / "snapshots"
    ref = repo / "refs" / "main"
    if ref.is_file():
        revision = ref.read_text(encoding="utf-8", errors="replace").strip()
        if revision and "/" not in revision and (snapshots / revision).is_dir():
            return snapshots / revision
    if not snapshots.is_dir():
        return None
    candidates = [p for p in snapshots.iterdir() if p.is_dir()]
    return max(candidates, key=lambda p: p.stat().st_mtime, default=None)
