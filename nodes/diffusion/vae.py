"""Between pixels and latents: VAE decoding (tiled for large images) and encoding."""

from __future__ import annotations

from typing import Any

from nodeflow import Bool, Choice, Int, Node, NodeError, Output, RunContext, Socket

from nodes.diffusion import estimates
from nodes.diffusion.types import IMAGE, LATENT, VAE, Autoencoder, Latent

# Above this many pixels per image, "auto" decodes in tiles to bound memory.
AUTO_TILE_PIXELS = 1024 * 1024


class VAEDecode(Node):
    type = "VAEDecode"
    display_name = "VAE Decode"
    category = "latent"
    description = (
        "Turns latents into RGB images. Large images are decoded in overlapping tiles "
        "blended together: far less memory, at the cost of small differences from a "
        "whole decode."
    )

    vae = Socket(VAE)
    latent = Socket(LATENT)
    tiling = Choice(("auto", "on", "off"), default="auto", tooltip="auto: tiles above 1024x1024 pixels")
    tile_size = Int(512, min=64, max=4096, step=64, tooltip="tile side in pixels when tiling")
    outputs = (Output("image", IMAGE),)
    estimate_memory = classmethod(estimates.vae_decode)

    @classmethod
    def working_memory(cls, inputs: dict[str, Any], settings: Any) -> Any:
        from nodes.diffusion.impl.memory import tiled_decode_need, vae_need

        vae, latent = inputs["vae"], inputs["latent"]
        factor = vae.family.vae_scale_factor
        batch, (height, width) = latent.samples.shape[0], (side * factor for side in latent.samples.shape[-2:])
        if _tiled(inputs["tiling"], height, width):
            return tiled_decode_need(vae, batch, height, width, inputs["tile_size"])
        return vae_need(vae, batch, height, width, "tiling", f"decoding {batch} x {width}x{height} without tiles",
                        "set tiling to on or auto")

    def run(self, ctx: RunContext, vae: Autoencoder, latent: Latent, tiling: str, tile_size: int) -> Any:
        import torch

        from nodes.diffusion.impl.vae import decode, decode_tiled

        channels = vae.vae.config.latent_channels
        if latent.samples.shape[1] != channels:
            raise NodeError(
                f'the latent has {latent.samples.shape[1]} channels but this VAE expects {channels}',
                field="latent",
            )
        factor = vae.family.vae_scale_factor
        height, width = (side * factor for side in latent.samples.shape[-2:])
        with torch.inference_mode():
            if _tiled(tiling, height, width):
                return decode_tiled(vae, latent.samples, max(1, tile_size // factor))
            return decode(vae, latent.samples)


def _tiled(tiling: str, height: int, width: int) -> bool:
    return tiling == "on" or (tiling == "auto" and height * width > AUTO_TILE_PIXELS)


class VAEEncode(Node):
    type = "VAEEncode"
    display_name = "VAE Encode"
    category = "latent"
    description = (
        "Turns RGB images into latents, e.g. for image-to-image. Uses the mean of the "
        "encoder's distribution, so an image always encodes the same way and the seed of "
        "the Noise node alone decides the randomness."
    )

    vae = Socket(VAE)
    image = Socket(IMAGE)
    crop_to_fit = Bool(False, tooltip="cut the image's centre to multiples of the VAE's scale factor (as ComfyUI "
                       "does); off refuses such an image")
    outputs = (Output("latent", LATENT),)
    estimate_memory = classmethod(estimates.vae_encode)

    @classmethod
    def working_memory(cls, inputs: dict[str, Any], settings: Any) -> Any:
        from nodes.diffusion.impl.memory import vae_need

        image = inputs["image"]
        batch, height, width = (int(side) for side in image.shape[:3])
        return vae_need(inputs["vae"], batch, height, width, "image", f"encoding {batch} x {width}x{height}",
                        "use a smaller image (e.g. scale it down first)")

    def run(self, ctx: RunContext, vae: Autoencoder, image: Any, crop_to_fit: bool = False) -> Latent:
        import torch

        from nodes.diffusion.impl.vae import cropped_to_fit, encode

        try:
            image, _ = cropped_to_fit(image, vae.family.vae_scale_factor, crop_to_fit)
        except ValueError as error:
            raise NodeError(str(error), field="image") from None
        with torch.inference_mode():
            return Latent(encode(vae, image), vae.family)
