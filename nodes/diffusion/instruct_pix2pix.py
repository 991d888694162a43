"""Editing an image by instruction with an InstructPix2Pix model (Brooks et al. 2023).

Such a UNet takes 8 channels: the noisy latent and the latent of the image it edits
(unscaled: the autoencoder's mean, as the model was trained and diffusers' pipeline
gives it). The prompt says what to change ("make it winter"); classifier-free guidance
runs with the image on both passes, which is diffusers' pipeline at an image guidance
scale of 1 and ComfyUI's InstructPixToPixConditioning.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from nodeflow import Node, NodeError, Output, RunContext, Socket

from nodes.diffusion.types import CONDITIONING, IMAGE, LATENT, VAE, Autoencoder, Conditioning, Latent


class InstructPixToPixConditioning(Node):
    type = "InstructPixToPixConditioning"
    display_name = "InstructPix2Pix Conditioning"
    category = "conditioning"
    description = (
        "Gives an InstructPix2Pix model the image to edit (its latent, on both conditionings) "
        "and an empty latent of its size to sample; the prompt says what to change. Sides "
        "that are not multiples of the autoencoder's factor are cropped to them, centred."
    )

    positive = Socket(CONDITIONING, tooltip="the instruction: what to change")
    negative = Socket(CONDITIONING)
    vae = Socket(VAE)
    pixels = Socket(IMAGE, tooltip="the image to edit")
    outputs = (Output("positive", CONDITIONING), Output("negative", CONDITIONING), Output("latent", LATENT))

    def run(self, ctx: RunContext, positive: Conditioning, negative: Conditioning, vae: Autoencoder,
            pixels: Any) -> dict[str, Any]:
        import torch

        from nodes.diffusion.impl.vae import encode

        factor = vae.family.vae_scale_factor
        height, width = (side // factor * factor for side in pixels.shape[1:3])
        if not height or not width:
            raise NodeError(f"the image is smaller than {factor}x{factor} pixels", field="pixels")
        top, left = (pixels.shape[1] - height) // 2, (pixels.shape[2] - width) // 2
        cropped = pixels[:, top:top + height, left:left + width]
        with torch.inference_mode():
            edited = encode(vae, cropped) / vae.scaling_factor + vae.shift_factor  # the unscaled mean

        def attach(cond: Conditioning) -> Conditioning:
            return dataclasses.replace(cond, extras={**cond.extras, "edited_latent": edited})

        latent = torch.zeros(edited.shape[0], vae.family.latent_channels, *edited.shape[-2:])
        return {"positive": attach(positive), "negative": attach(negative), "latent": Latent(latent, vae.family)}
