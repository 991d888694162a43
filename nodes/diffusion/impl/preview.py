"""Cheap latent -> RGB previews of the current x0 estimate, shown while sampling.

A full VAE decode per step would cost about as much as the step itself, so the preview
is a per-pixel linear map of the latent channels to RGB: a ``[C + 1, 3]`` matrix whose
last row is a bias. The sampler has no VAE input, so the map is chosen by the model
family; families without a fitted map get a neutral one (the mean of the channels as
grey), which still shows the composition taking shape.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from nodes.diffusion.types import ModelFamily

# Least-squares fits of decoded RGB against latents, as published by the SD community;
# they act on latents in the model's (scaled) space and give RGB in about [-1, 1].
_SD1_RGB = (
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
    (0.0, 0.0, 0.0),
)
_SDXL_RGB = (
    (0.3651, 0.4232, 0.4341),
    (-0.2533, -0.0042, 0.1068),
    (0.1076, 0.1111, -0.0362),
    (-0.3165, -0.2492, -0.2188),
    (0.1084, -0.0175, -0.0011),
)
_FAMILY_RGB = {"sd1": _SD1_RGB, "sd2": _SD1_RGB, "sdxl": _SDXL_RGB}


def latent_rgb_map(family: "ModelFamily | None", channels: int) -> "torch.Tensor":
    """The ``[channels + 1, 3]`` preview map for ``family``."""
    import torch

    table = _FAMILY_RGB.get(family.name) if family is not None else None
    if table is not None and len(table) == channels + 1:
        return torch.tensor(table, dtype=torch.float32)
    if channels == 4:  # SD-style autoencoders share the latent layout closely enough
        return torch.tensor(_SD1_RGB, dtype=torch.float32)
    grey = torch.full((channels + 1, 3), 1.0 / channels)
    grey[-1] = 0.0
    return grey


def latent_preview(x0: "torch.Tensor", rgb_map: "torch.Tensor") -> Any:
    """A PIL image of the first latent of the batch ``x0`` [B, C, h, w] (one pixel per latent pixel).

    Done in NumPy: at preview sizes torch would split these small products over threads,
    which costs tens of milliseconds per step when other processes hold the cores."""
    import numpy as np
    from PIL import Image

    latent = x0[0].detach().float().cpu().numpy()  # [C, h, w]
    channels, height, width = latent.shape
    table = rgb_map.numpy()
    rgb = table[:-1].T @ latent.reshape(channels, -1) + table[-1][:, None]  # [3, h * w]
    pixels = ((np.clip(rgb, -1.0, 1.0) + 1.0) * 127.5 + 0.5).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(pixels.reshape(3, height, width).transpose(1, 2, 0)))
