"""VAE decode/encode, including a tiled decode with blended overlaps.

Latents travel in model space (multiplied by the VAE's scaling factor, after the shift
of families that have one); images are [B, H, W, 3] float32 in [0, 1] on the CPU.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nodes.diffusion.types import Autoencoder

if TYPE_CHECKING:
    import torch


def decode(vae: Autoencoder, latents: "torch.Tensor") -> "torch.Tensor":
    """Latents [B, C, h, w] -> images [B, H, W, 3]."""
    return _to_image(_decode_pixels(vae, latents))


def decode_tiled(vae: Autoencoder, latents: "torch.Tensor", tile: int) -> "torch.Tensor":
    """Like :func:`decode`, one ``tile`` x ``tile`` latent window at a time.

    Windows overlap by a quarter tile; each decoded tile is weighted by a ramp that
    rises from the edges it shares with a neighbour, so overlaps cross-fade and no seam
    shows. Edges on the image border keep full weight.
    """
    import torch

    factor = vae.family.vae_scale_factor
    batch, _, h, w = latents.shape
    overlap = tile // 4
    out = torch.zeros(batch, 3, h * factor, w * factor)
    weight_sum = torch.zeros(1, 1, h * factor, w * factor)
    for top in _starts(h, tile, overlap):
        for left in _starts(w, tile, overlap):
            window = latents[:, :, top:top + tile, left:left + tile]
            pixels = _decode_pixels(vae, window).float().cpu()
            th, tw = pixels.shape[-2:]
            ramp_y = _ramp(th, overlap * factor, top > 0, top + tile < h)
            ramp_x = _ramp(tw, overlap * factor, left > 0, left + tile < w)
            weight = (ramp_y[:, None] * ramp_x[None, :])[None, None]
            y, x = top * factor, left * factor
            out[:, :, y:y + th, x:x + tw] += pixels * weight
            weight_sum[:, :, y:y + th, x:x + tw] += weight
    return _to_image(out / weight_sum)


def cropped_to_fit(image: "torch.Tensor", factor: int, crop: bool,
                   mask: "torch.Tensor | None" = None) -> tuple["torch.Tensor", "torch.Tensor | None"]:
    """The image [B, H, W, 3] (and its pixel mask [B, H, W], cut alike) as an autoencoder of
    scale ``factor`` encodes it: whole, or with ``crop`` its centre cut to multiples of the
    factor (ComfyUI's VAE nodes cut it so). ValueError naming the fix otherwise."""
    height, width = image.shape[1:3]
    fit_h, fit_w = height // factor * factor, width // factor * factor
    if (fit_h, fit_w) == (height, width):
        return image, mask
    if not crop or not fit_h or not fit_w:
        raise ValueError(f"the image is {width}x{height}; both sides must be multiples of {factor}, the VAE scale "
                         f"factor of this model" + ("" if crop else " (or turn on crop_to_fit to cut its centre to them)"))
    top, left = (height - fit_h) // 2, (width - fit_w) // 2
    cut = (slice(None), slice(top, top + fit_h), slice(left, left + fit_w))
    return image[cut], None if mask is None else mask[cut]


def encode(vae: Autoencoder, images: "torch.Tensor") -> "torch.Tensor":
    """Images [B, H, W, 3] in [0, 1] -> latents [B, C, h, w] (the distribution's mean)."""
    model = vae.vae
    pixels = images.permute(0, 3, 1, 2).to(device=model.device, dtype=model.dtype) * 2.0 - 1.0
    mean = model.encode(pixels).latent_dist.mode()
    return (mean - vae.shift_factor) * vae.scaling_factor


def _decode_pixels(vae: Autoencoder, latents: "torch.Tensor") -> "torch.Tensor":
    model = vae.vae
    z = latents.to(device=model.device, dtype=model.dtype) / vae.scaling_factor + vae.shift_factor
    return model.decode(z, return_dict=False)[0]


def _to_image(pixels: "torch.Tensor") -> "torch.Tensor":
    """[-1, 1] NCHW -> [0, 1] NHWC float32 on the CPU (as diffusers' image processor)."""
    return (pixels / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().cpu()


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    """Window starts covering ``size`` with windows of ``tile`` overlapping by ``overlap``."""
    if size <= tile:
        return [0]
    stride = max(1, tile - overlap)
    starts = list(range(0, size - tile + 1, stride))
    if starts[-1] + tile < size:
        starts.append(size - tile)
    return starts


def _ramp(length: int, fade: int, fade_start: bool, fade_end: bool) -> "torch.Tensor":
    """Weights along one side of a tile: rising over ``fade`` pixels at shared edges."""
    import torch

    weights = torch.ones(length)
    if fade <= 0:
        return weights
    rise = (torch.arange(fade, dtype=torch.float32) + 0.5) / fade
    n = min(fade, length)
    if fade_start:
        weights[:n] = torch.minimum(weights[:n], rise[:n])
    if fade_end:
        weights[length - n:] = torch.minimum(weights[length - n:], rise[:n].flip(0))
    return weights
