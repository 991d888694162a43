"""Turning node outputs into pictures the editor can show, without importing torch.

An IMAGE value is a tensor ``[B, H, W, 3]`` (or ``[H, W, 3]``) of floats in [0, 1];
nodes may also hand over PIL images. Anything else is not a picture.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
from PIL import Image


def to_pil_images(value: Any) -> list[Image.Image]:
    """The pictures in ``value`` (a batch gives several); [] for non-images."""
    if isinstance(value, Image.Image):
        return [value.convert("RGB")]
    if isinstance(value, (list, tuple)):
        return [img for item in value for img in to_pil_images(item)]
    array = _as_array(value)
    if array is None:
        return []
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3, 4):
        return []
    if array.dtype != np.uint8:
        array = (np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return [Image.fromarray(frame[..., :3]) for frame in array]


def _as_array(value: Any) -> np.ndarray | None:
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor, duck-typed
        try:
            return value.detach().cpu().float().numpy()
        except Exception:
            return None
    return None


def images_in_outputs(outputs: dict[str, dict[str, Any]], order: Iterable[str] = ()) -> list[tuple[str, Image.Image]]:
    """Every picture in a run's outputs as ``(node id, image)``, in ``order`` first."""
    ids = list(dict.fromkeys([*order, *outputs]))
    found: list[tuple[str, Image.Image]] = []
    for node_id in ids:
        for value in (outputs.get(node_id) or {}).values():
            found.extend((node_id, img) for img in to_pil_images(value))
    return found


def fit_rgba(image: Image.Image, width: int, height: int, background=(24, 24, 28)) -> np.ndarray:
    """``image`` scaled to fit ``width`` x ``height`` (aspect kept, centred) as a flat
    float32 RGBA array: the layout Dear PyGui's dynamic textures take."""
    canvas = Image.new("RGB", (width, height), background)
    scale = min(width / image.width, height / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    resized = image.convert("RGB").resize(size, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.NEAREST)
    canvas.paste(resized, ((width - size[0]) // 2, (height - size[1]) // 2))
    rgba = np.asarray(canvas.convert("RGBA"), dtype=np.float32) / 255.0
    return rgba.reshape(-1)
