"""Working-memory estimates for the diffusion nodes, from shapes and model configs alone.

Each node's :meth:`working_memory` hook calls one of these; the executor checks the result
against the budget before the node runs (see :mod:`nodeflow.model.memory`). The figures
are deliberately simple upper-side estimates of the activations alive at the peak, not
measurements: enough to refuse a 100 GB request before it is made, not to pack memory.

- VAE decode/encode: the full-resolution levels hold about eight tensors of the first
  block's channel count at the image's size (upsampled input, resnet activations,
  group-norm temporaries); a tiled decode holds that for one tile, plus the output.
- Upscale models: about eight tensors of the first layer's width at the input's size, and
  two per output pixel of the upsampling layers (scale squared times as many positions),
  for one image at a time; in tiles, for one tile, plus the output and its blend weights.
- Sampling, per copy of the batch classifier-free guidance runs (2 with a negative
  prompt): the skip tensors every down level keeps for the up path (its resnets' outputs
  and its downsample's), plus the largest level's working set: about 12 tensors of the
  level's channels at its size for a resnet level, 22 for a level with a transformer
  (its feed-forward's GEGLU projects to 8x the channels, then halves and multiplies).
  Attention uses PyTorch's memory-efficient kernels (flash attention on the CPU), so its
  matrices are not counted. The two counts were measured, not guessed: the peak RSS rise
  of one UNet forward at two latent sizes on three architectures (the bundled model's,
  an SD-1.5-shaped one with a transformer at the first level, and one with a transformer
  only from the second), with a fixed malloc mmap threshold so RSS follows live tensors
  (``python -m benchmarks.bench_memory`` section 5 repeats it); the estimate lies within
  0.99-1.03x of each.
- VAE decode: measured the same way at 7.1-7.4 tensors for the bundled VAE and an
  SD-shaped one (four levels, mid-block attention), so eight stay.
"""

from __future__ import annotations

from typing import Any, Mapping

from nodeflow import MemoryNeed

_VAE_TENSORS = 8
_RESNET_TENSORS = 12  # a level of resnets' working set, in tensors of its channels
_TRANSFORMER_TENSORS = 22  # a level with a transformer (GEGLU feed-forward)
SD_UNET = ((320, 640, 1280, 1280), (True, True, True, False), 2)  # SD 1.x: channels, transformer per level, layers
_UPSCALE_TENSORS = 8


def _first_channels(model: Any, default: int) -> int:
    config = getattr(model, "config", None)
    try:
        channels = config["block_out_channels"] if isinstance(config, Mapping) else config.block_out_channels
        return int(channels[0])
    except (AttributeError, KeyError, TypeError, IndexError, ValueError):
        return default


def _element_size(model: Any) -> int:
    dtype = getattr(model, "dtype", None)
    return int(getattr(dtype, "itemsize", 4) or 4)


def vae_bytes(batch: int, height: int, width: int, channels: int = 128, itemsize: int = 4) -> int:
    """Working memory of decoding or encoding ``batch`` images of ``height`` x ``width`` whole."""
    return batch * height * width * channels * itemsize * _VAE_TENSORS


def tiled_decode_bytes(batch: int, height: int, width: int, tile: int, channels: int = 128, itemsize: int = 4) -> int:
    """A tiled decode: one tile's activations and the float32 output with its weight map."""
    output = (batch * 3 + 1) * height * width * 4 * 2  # output and weight sums, then the image copy
    return vae_bytes(batch, min(tile, height), min(tile, width), channels, itemsize) + output


def unet_values(height: int, width: int, channels: tuple[int, ...], transformers: tuple[bool, ...], layers: int) -> int:
    """Values alive at a UNet forward's peak for one sample of a ``height`` x ``width`` latent:
    the skips all levels keep, plus the largest level's working set (see the module's docstring)."""
    positions = height * width
    skips = channels[0] * positions  # conv_in's output
    work = 0
    for level, width_ in enumerate(channels):
        here = positions // 4**level
        skips += layers * width_ * here
        if level < len(channels) - 1:
            skips += width_ * (positions // 4 ** (level + 1))  # the downsample's output
        attends = level < len(transformers) and transformers[level]
        work = max(work, here * width_ * (_TRANSFORMER_TENSORS if attends else _RESNET_TENSORS))
    return skips + work


def sampler_bytes(batch: int, copies: int, height: int, width: int, unet: tuple = SD_UNET, itemsize: int = 4) -> int:
    """Sampling a ``batch`` x ``height`` x ``width`` latent, ``copies`` model passes per step, with a
    UNet of ``unet`` = (channels per level, transformer per level, layers per block)."""
    channels, transformers, layers = unet
    return batch * copies * unet_values(height, width, tuple(channels), tuple(transformers), int(layers)) * itemsize


def unet_shape(config: Any) -> tuple:
    """(channels per level, transformer per level, layers per block) from a UNet's config
    (a mapping or a diffusers config object); SD 1.x's where it does not tell."""
    def read(key: str) -> Any:
        return config.get(key) if isinstance(config, Mapping) else getattr(config, key, None)

    try:
        channels = tuple(int(c) for c in read("block_out_channels"))
        kinds = read("down_block_types") or ()
        transformers = tuple("CrossAttn" in str(kind) or "Attn" in str(kind) for kind in kinds) or SD_UNET[1]
        layers = read("layers_per_block")
        layers = int(max(layers) if isinstance(layers, (list, tuple)) else layers if layers is not None else 2)
        return channels, transformers, layers
    except (AttributeError, KeyError, TypeError, ValueError):
        return SD_UNET


def vae_need(vae: Any, batch: int, height: int, width: int, field: str, what: str, hint: str = "") -> MemoryNeed:
    """Decoding or encoding ``batch`` images of ``height`` x ``width`` pixels whole."""
    model = getattr(vae, "vae", vae)
    return MemoryNeed(vae_bytes(batch, height, width, _first_channels(model, 128), _element_size(model)), field, what, hint)


def tiled_decode_need(vae: Any, batch: int, height: int, width: int, tile: int) -> MemoryNeed:
    """A tiled decode: one tile's activations and the float32 output with its weight map."""
    model = getattr(vae, "vae", vae)
    need = tiled_decode_bytes(batch, height, width, tile, _first_channels(model, 128), _element_size(model))
    return MemoryNeed(need, "tile_size", f"decoding {batch} x {width}x{height} in tiles of {tile}", "lower tile_size")


def sampler_need(guider: Any, samples: Any) -> MemoryNeed | None:
    """Sampling ``samples`` (a latent tensor) with the UNet behind ``guider``."""
    shape = getattr(samples, "shape", None)
    if shape is None or len(shape) != 4:
        return None
    batch, _, h, w = (int(side) for side in shape)
    unet = getattr(getattr(guider, "model", None), "unet", None)
    copies = 2 if getattr(guider, "negative", None) is not None else 1
    need = sampler_bytes(batch, copies, h, w, unet_shape(getattr(unet, "config", None)), _element_size(unet))
    return MemoryNeed(need, "latent", f"sampling a {batch} x {w}x{h} latent", "make the image or the batch smaller")


def upscale_need(model: Any, batch: int, height: int, width: int, tile: int | None) -> MemoryNeed:
    """Upscaling ``batch`` images of ``height`` x ``width`` with ``model`` (an UpscaleModel),
    whole (``tile`` None) or in tiles of ``tile`` pixels; images run one at a time."""
    scale, features = int(model.scale), int(model.features)
    side_h, side_w = (height, width) if tile is None else (min(tile, height), min(tile, width))
    per_pixel = features * 4 * (_UPSCALE_TENSORS + 2 * scale * scale)
    out_pixels = height * scale * width * scale
    output = batch * 3 * out_pixels * 4 * 2 + (4 * out_pixels * 4 if tile is not None else 0)
    total = side_h * side_w * per_pixel + output
    if tile is None:
        return MemoryNeed(total, "tiling", f"upscaling {batch} x {width}x{height} by {scale} without tiles",
                          "set tiling to auto or on")
    return MemoryNeed(total, "tile_size", f"upscaling {batch} x {width}x{height} by {scale} in tiles of {tile}",
                      "lower tile_size or make the image smaller")
