"""Inpainting: masks in pixel space and the masked-image inputs of inpainting UNets.

Two mechanisms, as in ComfyUI and diffusers:

- An inpainting UNet (9 input channels: 4 latent + 1 mask + 4 masked-image latent) sees
  the mask and the encoded masked image beside the noisy latent at every step
  (:func:`concat_inputs`). They come from InpaintModelConditioning (in the
  conditioning's ``extras["inpaint"]``) or, for VAEEncodeForInpaint, from the latent
  itself and its noise mask.
- A latent with a ``noise_mask`` is re-imposed outside the mask after every step: the
  original latent, noised to the level of the next step (done by the sampler loop in
  :mod:`nodes.diffusion.impl.sample`, which also knows step ranges), so any model can
  inpaint, and the unmasked part comes back unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nodes.diffusion.types import Latent


@dataclass(frozen=True, eq=False)
class InpaintInputs:
    mask: torch.Tensor  # [B, H, W] in pixels, [0, 1]
    masked_latent: torch.Tensor  # [B, 4, h, w] in model space: the image with the masked part grey, encoded


def grow(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """``mask`` [B, H, W] dilated by ``pixels`` in every direction (a square neighbourhood)."""
    if pixels <= 0:
        return mask
    return torch.nn.functional.max_pool2d(mask[:, None], 2 * pixels + 1, stride=1, padding=pixels)[:, 0]


def grey_out(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """IMAGE [B, H, W, 3] with the pixels where ``mask`` rounds to 1 set to mid grey (0.5),
    so the encoded masked image carries nothing of what is to be replaced."""
    keep = 1.0 - mask.round()[..., None]
    return (image - 0.5) * keep + 0.5


def fit_mask(mask: torch.Tensor, size: tuple[int, int], batch: int) -> torch.Tensor:
    """A mask [b, H, W] (or [H, W]) as [batch, 1, *size], resized bilinearly."""
    mask = mask.float()
    if mask.ndim == 2:
        mask = mask[None]
    mask = mask[:, None]
    if tuple(mask.shape[-2:]) != size:
        mask = torch.nn.functional.interpolate(mask, size=size, mode="bilinear", align_corners=False)
    if mask.shape[0] != batch:
        if batch % mask.shape[0]:
            raise ValueError(f"the mask batch of {mask.shape[0]} does not divide the latent batch of {batch}")
        mask = mask.repeat_interleave(batch // mask.shape[0], dim=0)
    return mask.clamp(0.0, 1.0)


def concat_inputs(in_channels: int, latent: Latent, inpaint: InpaintInputs | None, like: torch.Tensor,
                  edited: torch.Tensor | None = None) -> torch.Tensor | None:
    """The extra channels an inpainting UNet takes ([B, 5, h, w]: mask, masked-image
    latent), an InstructPix2Pix UNet's (the ``edited`` image's latent, [B, 4, h, w]), or None
    for a plain UNet. ValueError when the UNet needs them and there are none."""
    channels = like.shape[1]
    if in_channels == channels:
        return None
    if in_channels == channels * 2:
        if edited is None:
            raise ValueError("this is an InstructPix2Pix model (8 input channels): give it the image to edit, "
                             "through InstructPixToPixConditioning")
        return _fitted(edited, like, "the image to edit")
    if in_channels != channels * 2 + 1:
        raise ValueError(f"the latent has {channels} channels but the model expects {in_channels}")
    size, batch = tuple(like.shape[-2:]), like.shape[0]
    if inpaint is not None:
        mask, masked = inpaint.mask, inpaint.masked_latent
    elif latent.noise_mask is not None:  # VAEEncodeForInpaint: the latent is the grey-filled image
        mask, masked = latent.noise_mask, latent.samples
    else:
        raise ValueError(
            "this is an inpainting model (9 input channels): give it a mask, through InpaintModelConditioning "
            "or VAEEncodeForInpaint"
        )
    masked = _fitted(masked, like, "the masked image")
    return torch.cat([fit_mask(mask, size, batch).to(like.device, like.dtype), masked], dim=1)


def _fitted(latent: torch.Tensor, like: torch.Tensor, what: str) -> torch.Tensor:
    """``latent`` on ``like``'s device and dtype with its batch repeated to ``like``'s."""
    latent = latent.to(device=like.device, dtype=like.dtype)
    if tuple(latent.shape[-2:]) != tuple(like.shape[-2:]):
        raise ValueError(f"{what} is {latent.shape[-1]}x{latent.shape[-2]} latent cells, the latent "
                         f"{like.shape[-1]}x{like.shape[-2]}")
    if latent.shape[0] != like.shape[0]:
        if like.shape[0] % latent.shape[0]:
            raise ValueError(f"{what} has a batch of {latent.shape[0]}, which does not divide the latent's {like.shape[0]}")
        latent = latent.repeat_interleave(like.shape[0] // latent.shape[0], dim=0)
    return latent
