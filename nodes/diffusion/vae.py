"""Between pixels and latents: VAE decoding (tiled for large images) and encoding."""

from __future__ import annotations

from typing import Any

from nodeflow import Choice, Int, Node, NodeError, Output, RunContext, Socket

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
        tiled = tiling == "on" or (tiling == "auto" and height * width > AUTO_TILE_PIXELS)
        with torch.inference_mode():
            if tiled:
                return decode_tiled(vae, latent.samples, max(1, tile_size // factor))
            return decode(vae, latent.samples)


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
    outputs = (Output("latent", LATENT),)

    def run(self, ctx: RunContext, vae: Autoencoder, image: Any) -> Latent:
        import torch

        from nodes.diffusion.impl.vae import encode

        factor = vae.family.vae_scale_factor
        height, width = image.shape[1:3]
        if height % factor or width % factor:
            raise NodeError(
                f'the image is {width}x{height}; both sides must be multiples of {factor}, '
                "the VAE scale factor of this model",
                field="image",
            )
        with torch.inference_mode():
            return Latent(encode(vae, image), vae.family)
