"""Textual-inversion embeddings named in prompts (``embedding:NAME``), read from disk.

An embedding is a few learned vectors that take the place of tokens in a prompt. The
files come from an ``embeddings`` model folder (``RunSettings.folders("embeddings")``,
ComfyUI's ``models/embeddings``), in the layouts people share:

- ``.safetensors`` with one tensor ``emb_params`` [n, dim] (or any single tensor), or,
  for SDXL, ``clip_l`` [n, 768] and ``clip_g`` [n, 1280], one per text encoder;
- ``.pt`` / ``.bin`` as A1111 saves them (``string_to_param`` -> ``*``), read only with
  torch's weights-only loading, so a file cannot run code.

The vectors for an encoder are those whose width is that encoder's embedding width; a
file with none that fits is refused, naming the file and the widths it has.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from nodeflow import NodeError, RunSettings

if TYPE_CHECKING:
    import torch

EXTENSIONS = (".safetensors", ".pt", ".bin")


class EmbeddingError(ValueError):
    """An embedding that cannot be found or used; the message names the file."""


class EmbeddingFiles:
    """The embeddings one prompt names, each file read once."""

    def __init__(self, settings: RunSettings):
        self.settings = settings
        self.loaded: dict[str, tuple[Path, list["torch.Tensor"]]] = {}

    def vectors(self, name: str, width: int) -> "torch.Tensor":
        """The [n, width] vectors of embedding ``name`` for an encoder of that width."""
        path, tensors = self._load(name)
        fitting = [t for t in tensors if t.shape[-1] == width]
        if not fitting:
            widths = ", ".join(str(t.shape[-1]) for t in tensors) or "none"
            raise EmbeddingError(f"embedding {path.name!r} does not fit this text encoder: its vectors are "
                                 f"{widths} wide, the encoder's {width}")
        return fitting[0]

    def _load(self, name: str) -> tuple[Path, list["torch.Tensor"]]:
        if name not in self.loaded:
            path = self._find(name)
            self.loaded[name] = (path, _read(path))
        return self.loaded[name]

    def _find(self, name: str) -> Path:
        from nodes.diffusion.impl.paths import resolve_model_path

        candidates = [name] if name.lower().endswith(EXTENSIONS) else [name + ext for ext in EXTENSIONS] + [name]
        first: NodeError | None = None
        for candidate in candidates:
            try:
                path = resolve_model_path(candidate, "embeddings", self.settings)
            except NodeError as exc:
                first = first or exc
                continue
            if path.is_file():
                return path
        searched = ", ".join(str(f) for f in self.settings.folders("embeddings")) or "no embeddings folder is configured"
        raise EmbeddingError(f"embedding {name!r} (from 'embedding:{name}' in the prompt) not found; searched: {searched}")


def _read(path: Path) -> list["torch.Tensor"]:
    import torch

    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            data: Any = load_file(str(path))
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unreadable, or a pickle that needs code to load
        raise EmbeddingError(f"cannot read embedding {path.name!r}: {exc}".splitlines()[0]) from None
    tensors = _tensors(data)
    if not tensors:
        raise EmbeddingError(f"embedding {path.name!r} holds no embedding vectors")
    return [t.detach().float().reshape(-1, t.shape[-1]) for t in tensors]


def _tensors(data: Any) -> list["torch.Tensor"]:
    import torch

    if isinstance(data, torch.Tensor):
        return [data]
    if not isinstance(data, dict):
        return []
    if isinstance(data.get("string_to_param"), dict):  # A1111 .pt
        return [t for t in data["string_to_param"].values() if isinstance(t, torch.Tensor)]
    ordered = [data[k] for k in ("clip_l", "clip_g", "emb_params") if isinstance(data.get(k), torch.Tensor)]
    return ordered or [v for v in data.values() if isinstance(v, torch.Tensor) and v.ndim in (1, 2)]
