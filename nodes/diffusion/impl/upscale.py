"""Upscale models: loading through spandrel, and running them whole or in tiles.

spandrel reads the architecture and its hyper-parameters from the weights (ESRGAN and its
variants, Real-ESRGAN compact, SwinIR, DAT, HAT, ...). The file itself is read by
:func:`~nodes.diffusion.impl.loading.read_state_dict` through the confined reader, like every
other model file: ``.safetensors``, or a pickle through torch's weights-only loading (never
spandrel's own file loader, whose unpickler is not weights-only).

Tiling: an image too large for working memory runs in overlapping square tiles. Each tile
counts only its inner part: at an edge shared with another tile a quarter of the overlap is
dropped (the pixels that saw the tile's border), and the next half is cross-faded with the
neighbour, so a network whose receptive field is within a quarter of the overlap gives
exactly the untiled image, and larger ones show no hard seams.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from nodes.diffusion.impl.ldm import CheckpointError
from nodes.diffusion.impl.loading import read_state_dict
from nodes.diffusion.impl.paths import ModelFiles
from nodes.diffusion.types import UpscaleModel

# Where training code puts the weights in a pickled checkpoint (BasicSR's params_ema first:
# the averaged weights are the ones published models mean).
WRAPPERS = ("params_ema", "params-ema", "params", "state_dict", "model", "net")


def load_upscale_model(path: Path, files: ModelFiles, device: str, dtype: torch.dtype) -> UpscaleModel:
    """The network in ``path``; :class:`CheckpointError` saying why when it is none spandrel
    knows, or not an RGB image-to-image network."""
    if path.is_dir():
        raise CheckpointError("is a folder; an upscale model is one weights file (.safetensors or .pth)")
    state = read_state_dict(path, "cpu", files, wrappers=WRAPPERS)
    if not state:
        raise CheckpointError("holds no weights")
    import spandrel

    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(state)
    except spandrel.UnsupportedModelError:
        raise CheckpointError(
            "no architecture spandrel supports (ESRGAN, Real-ESRGAN, SwinIR, DAT, HAT, ...) matches its weights"
        ) from None
    except (KeyError, IndexError, ValueError, TypeError, RuntimeError, AssertionError, AttributeError) as error:
        # The keys looked like an architecture but the tensors do not fit it (a damaged or
        # hand-edited file): spandrel's message names internals, so only its kind is shown.
        raise CheckpointError(f"its weights do not form a complete network ({type(error).__name__})") from None
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise CheckpointError(f"is a {descriptor.architecture.name} {descriptor.purpose.lower()} model that needs a "
                              "mask; ImageUpscaleWithModel runs image-to-image models only")
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        raise CheckpointError(f"is a {descriptor.architecture.name} model for {descriptor.input_channels}-channel images "
                              f"giving {descriptor.output_channels} channels; images here are RGB")
    if dtype == torch.float16 and not descriptor.supports_half or dtype == torch.bfloat16 and not descriptor.supports_bfloat16:
        dtype = torch.float32  # the architecture is known to break in that precision
    descriptor.to(device=torch.device(device), dtype=dtype)
    descriptor.eval()
    for parameter in descriptor.model.parameters():
        parameter.requires_grad_(False)
    return UpscaleModel(descriptor, descriptor.architecture.name, int(descriptor.scale),
                        features=_feature_channels(descriptor.model), tiling=descriptor.tiling.name.lower(),
                        source=str(path))


def _feature_channels(network: torch.nn.Module) -> int:
    """The width of the network's first layer (its activations dominate memory)."""
    for module in network.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            return int(getattr(module, "out_channels", None) or module.out_features)
    return 64


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Where tiles of ``tile`` pixels start along a side of ``size``, overlapping by at least
    ``overlap``; the last one is moved back to end at the edge, so all have the same size."""
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    return [*starts, size - tile]


def _ramp(length: int, start: int, end: int, size: int, overlap: int) -> torch.Tensor:
    """A tile's weights along one side (output pixels): 1 inside; at an edge shared with a
    neighbour, 0 over the outer quarter of the overlap, then rising over the next half."""
    weights = torch.ones(length)
    margin, fade = overlap // 4, overlap - 2 * (overlap // 4)
    rise = (torch.arange(fade, dtype=torch.float32) + 0.5) / max(fade, 1)
    if start > 0:
        weights[:margin] = 0
        weights[margin:margin + fade] = rise
    if end < size:
        weights[length - margin:] = 0
        weights[length - margin - fade:length - margin] = rise.flip(0)
    return weights


def upscale(model: UpscaleModel, images: torch.Tensor, tile: int | None, overlap: int, device: str,
            progress: Callable[[int, int], None]) -> torch.Tensor:
    """``images`` [B, H, W, 3] in [0, 1] upscaled by the model: [B, H*s, W*s, 3] on the CPU.
    ``tile`` None runs each image whole; ``progress(done, total)`` after each piece (and is
    where an interruption stops it)."""
    descriptor, scale = model.descriptor, model.scale
    dtype = next(descriptor.model.parameters()).dtype
    batch, height, width = (int(side) for side in images.shape[:3])
    if tile is None:
        rows = cols = [0]
        tile_h, tile_w = height, width
    else:
        rows, cols = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
        tile_h, tile_w = min(tile, height), min(tile, width)
    total = batch * len(rows) * len(cols)
    results = []
    done = 0
    with torch.inference_mode():
        for index in range(batch):
            picture = images[index:index + 1].movedim(-1, 1).clamp(0.0, 1.0)
            if len(rows) * len(cols) == 1:
                results.append(_run(descriptor, picture, device, dtype))
                done += 1
                progress(done, total)
                continue
            out = torch.zeros(1, 3, height * scale, width * scale)
            weight = torch.zeros(1, 1, height * scale, width * scale)
            for top in rows:
                for left in cols:
                    piece = _run(descriptor, picture[:, :, top:top + tile_h, left:left + tile_w], device, dtype)
                    y0, x0, h, w = top * scale, left * scale, tile_h * scale, tile_w * scale
                    wy = _ramp(h, y0, y0 + h, height * scale, overlap * scale)
                    wx = _ramp(w, x0, x0 + w, width * scale, overlap * scale)
                    mask = (wy[:, None] * wx[None, :])[None, None]
                    out[:, :, y0:y0 + h, x0:x0 + w] += piece * mask
                    weight[:, :, y0:y0 + h, x0:x0 + w] += mask
                    done += 1
                    progress(done, total)
            results.append(out / weight.clamp_min(1e-8))
    return torch.cat(results).clamp(0.0, 1.0).movedim(1, -1).contiguous()


def _run(descriptor: Any, picture: torch.Tensor, device: str, dtype: torch.dtype) -> torch.Tensor:
    return descriptor(picture.to(device=device, dtype=dtype)).float().cpu()
