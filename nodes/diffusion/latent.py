"""Latent images: an empty canvas of the right shape, and resizing in latent space."""

from __future__ import annotations

from typing import Any, Mapping

from nodeflow import Choice, Float, Int, Node, NodeError, Output, RunContext, Socket, check_pixels

from nodes.diffusion import estimates
from nodes.diffusion.types import LATENT, MODEL, VAE, Autoencoder, DiffusionModel, Latent, ModelFamily

# Without a model or VAE to ask, assume Stable Diffusion 1.x/2.x/XL: 4 channels, 8x.
DEFAULT_FAMILY = ModelFamily("sd1")


def _family(vae: Autoencoder | None, model: DiffusionModel | None) -> ModelFamily:
    for source in (vae, model):
        if source is not None:
            return source.family
    return DEFAULT_FAMILY


def _latent_side(field: str, pixels: int, factor: int) -> int:
    if pixels % factor:
        raise NodeError(
            f'{pixels} is not a multiple of {factor}, the VAE scale factor of this model '
            f"(try {max(factor, pixels // factor * factor)})",
            field=field,
        )
    return pixels // factor


class EmptyLatent(Node):
    type = "EmptyLatent"
    display_name = "Empty Latent"
    category = "latent"
    description = (
        "A batch of blank latents for text-to-image, sized in pixels. Connect the VAE (or "
        "the model) so the latent gets that family's channel count and scale factor; "
        "without one, Stable Diffusion's 4 channels and 8x are assumed."
    )

    width = Int(512, min=8, max=8192, step=8, tooltip="image width in pixels; a multiple of the VAE scale factor")
    height = Int(512, min=8, max=8192, step=8, tooltip="image height in pixels; a multiple of the VAE scale factor")
    batch = Int(1, min=1, max=64, tooltip="images generated together")
    vae = Socket(VAE, optional=True, tooltip="tells the latent shape of the model family")
    model = Socket(MODEL, optional=True, tooltip="tells the latent shape when no VAE is connected")
    outputs = (Output("latent", LATENT),)
    estimate_memory = classmethod(estimates.empty_latent)

    @classmethod
    def check_host(cls, values: dict[str, Any], ctx: RunContext) -> dict[str, str]:
        """The batch's pixel budget, before anything runs (the run checks it again)."""
        width, height, batch = (values.get(k) for k in ("width", "height", "batch"))
        if None in (width, height, batch):
            return {}
        try:
            check_pixels("batch" if batch > 1 else "width", width, height, batch, ctx.settings)
        except NodeError as error:
            return {error.field or "width": error.message}
        return {}

    @classmethod
    def advise(cls, values: Mapping[str, Any], upstream: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        """The connected model's native size as the default; a warning far from it (a
        model makes poor images away from its training size, and a larger one is slow)."""
        native = upstream.get("native_size")
        if not isinstance(native, int) or native <= 0:
            return {}, {}
        warnings = {}
        for name in ("width", "height"):
            value = values.get(name)
            if isinstance(value, int) and not native / 2 <= value <= native * 2:
                warnings[name] = f"{value} px is far from the model's native {native} px: expect a poor or slow result"
        return {"width": native, "height": native}, warnings

    def run(
        self, ctx: RunContext, width: int, height: int, batch: int,
        vae: Autoencoder | None = None, model: DiffusionModel | None = None,
    ) -> Latent:
        import torch

        family = _family(vae, model)
        h = _latent_side("height", height, family.vae_scale_factor)
        w = _latent_side("width", width, family.vae_scale_factor)
        check_pixels("batch" if batch > 1 else "width", width, height, batch, ctx.settings)
        return Latent(torch.zeros(batch, family.latent_channels, h, w, device=ctx.device), family)


class LatentUpscale(Node):
    type = "LatentUpscale"
    display_name = "Upscale Latent"
    category = "latent"
    description = (
        "Resizes latents, e.g. for a second, higher-resolution img2img pass. Give a target "
        "width and height in pixels, or one of them (the other keeps the aspect ratio), or "
        "neither to scale by `scale_by`."
    )

    latent = Socket(LATENT)
    method = Choice(("nearest", "bilinear", "bicubic", "area", "bislerp"), default="bilinear",
                    tooltip="interpolation; bislerp keeps the latent vectors' length where neighbours differ")
    width = Int(0, min=0, max=16384, step=8, tooltip="target width in pixels; 0 = from height or scale_by")
    height = Int(0, min=0, max=16384, step=8, tooltip="target height in pixels; 0 = from width or scale_by")
    scale_by = Float(1.5, min=0.01, max=8.0, step=0.05, tooltip="factor used when width and height are both 0")
    outputs = (Output("latent", LATENT),)
    estimate_memory = classmethod(estimates.latent_upscale)

    def run(
        self, ctx: RunContext, latent: Latent, method: str, width: int, height: int, scale_by: float
    ) -> Latent:
        from nodes.diffusion.impl.resample import resize

        samples = latent.samples
        h, w = samples.shape[-2:]
        factor = (latent.family or DEFAULT_FAMILY).vae_scale_factor
        if width == 0 and height == 0:
            size = (max(1, round(h * scale_by)), max(1, round(w * scale_by)))
        else:
            new_w = _latent_side("width", width, factor) if width else None
            new_h = _latent_side("height", height, factor) if height else None
            new_w = new_w or max(1, round(w * new_h / h))
            new_h = new_h or max(1, round(h * new_w / w))
            size = (new_h, new_w)
        check_pixels("scale_by" if width == 0 and height == 0 else "width", size[1] * factor, size[0] * factor,
                     samples.shape[0], ctx.settings)
        resized = resize(samples, size, method)
        return Latent(resized, latent.family, latent.noise_mask, latent.batch_index)  # as ComfyUI: the mask is resized when sampling
