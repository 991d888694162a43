"""Inpainting: encoding an image with a mask, for normal and for inpainting (9-channel) models.

The mask says where the image is to be redrawn (1) and where it is kept (0). The latent
these nodes give carries it as its noise mask, so the sampler keeps the unmasked part
(impl/inpaint.py); inpainting models also see the mask and the masked image at every step.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from nodeflow import Bool, Int, Node, NodeError, Output, RunContext, Socket

from nodes.diffusion.types import CONDITIONING, IMAGE, LATENT, MASK, VAE, Autoencoder, Conditioning, Latent


def _encode(vae: Autoencoder, image: Any) -> Any:
    import torch

    from nodes.diffusion.impl.vae import encode

    _cropped(vae, image, False)  # the caller cut it to fit, or it must fit as it is
    with torch.inference_mode():
        return encode(vae, image)


def _cropped(vae: Autoencoder, image: Any, crop: bool, mask: Any = None) -> tuple[Any, Any]:
    """The image (and its pixel mask) as the VAE encodes it (impl/vae.cropped_to_fit); the
    refusal names the image."""
    from nodes.diffusion.impl.vae import cropped_to_fit

    try:
        return cropped_to_fit(image, vae.family.vae_scale_factor, crop, mask)
    except ValueError as error:
        raise NodeError(str(error), field="image") from None


CROP_TO_FIT_TOOLTIP = ("cut the image's (and mask's) centre to multiples of the VAE's scale factor (as ComfyUI does); "
                       "off refuses such an image")


def _pixel_mask(mask: Any, image: Any) -> Any:
    """The mask at the image's size, [B, H, W]."""
    from nodes.diffusion.impl.inpaint import fit_mask

    try:
        return fit_mask(mask, tuple(image.shape[1:3]), image.shape[0])[:, 0]
    except ValueError as error:
        raise NodeError(str(error), field="mask") from None


class VAEEncodeForInpaint(Node):
    type = "VAEEncodeForInpaint"
    display_name = "VAE Encode (for inpainting)"
    category = "latent"
    description = (
        "Encodes the image with the masked part (grown by a few pixels) painted grey, and "
        "marks the mask on the latent so the sampler redraws only there. Meant for denoise 1; "
        "works with inpainting models and normal ones."
    )

    vae = Socket(VAE)
    image = Socket(IMAGE)
    mask = Socket(MASK, tooltip="1 where the image is redrawn")
    grow_mask_by = Int(6, min=0, max=64, tooltip="pixels added around the mask, so its edge blends in")
    crop_to_fit = Bool(False, tooltip=CROP_TO_FIT_TOOLTIP)
    outputs = (Output("latent", LATENT),)

    def run(self, ctx: RunContext, vae: Autoencoder, image: Any, mask: Any, grow_mask_by: int,
            crop_to_fit: bool = False) -> Latent:
        from nodes.diffusion.impl.inpaint import grey_out, grow

        image, pixel_mask = _cropped(vae, image, crop_to_fit, _pixel_mask(mask, image))
        grown = grow(pixel_mask, grow_mask_by)
        return Latent(_encode(vae, grey_out(image, grown)), vae.family, noise_mask=grown)


class InpaintModelConditioning(Node):
    type = "InpaintModelConditioning"
    display_name = "Inpaint Conditioning"
    category = "conditioning"
    description = (
        "Gives an inpainting model the mask and the encoded masked image (on both conditionings), "
        "and the encoded image as the latent to sample from, with the mask as its noise mask."
    )

    positive = Socket(CONDITIONING)
    negative = Socket(CONDITIONING)
    vae = Socket(VAE)
    image = Socket(IMAGE)
    mask = Socket(MASK, tooltip="1 where the image is redrawn")
    noise_mask = Bool(True, tooltip="also keep the unmasked part of the latent at every step (off: the model alone decides)")
    crop_to_fit = Bool(False, tooltip=CROP_TO_FIT_TOOLTIP)
    outputs = (Output("positive", CONDITIONING), Output("negative", CONDITIONING), Output("latent", LATENT))

    def run(
        self, ctx: RunContext, positive: Conditioning, negative: Conditioning, vae: Autoencoder, image: Any,
        mask: Any, noise_mask: bool, crop_to_fit: bool = False,
    ) -> dict[str, Any]:
        from nodes.diffusion.impl.inpaint import InpaintInputs, grey_out

        image, pixel_mask = _cropped(vae, image, crop_to_fit, _pixel_mask(mask, image))
        inputs = InpaintInputs(pixel_mask, _encode(vae, grey_out(image, pixel_mask)))

        def attach(cond: Conditioning) -> Conditioning:
            return dataclasses.replace(cond, extras={**cond.extras, "inpaint": inputs})

        latent = Latent(_encode(vae, image), vae.family, noise_mask=pixel_mask if noise_mask else None)
        return {"positive": attach(positive), "negative": attach(negative), "latent": latent}
