"""Loading a VAE file on its own, to decode with another autoencoder than the checkpoint's."""

from __future__ import annotations

from typing import Any

from nodeflow import Choice, FileChoice, Node, NodeError, Output, RunContext

from nodes.diffusion.impl.paths import MODEL_EXTENSIONS
from nodes.diffusion.loaders import _field_options, _model_file_problems, _model_fingerprint, dtype_field
from nodes.diffusion.types import VAE


class VAELoader(Node):
    type = "VAELoader"
    display_name = "Load VAE"
    category = "loaders"
    description = (
        "Loads an autoencoder from a single file (original layout, e.g. vae-ft-mse-840000 or "
        "sdxl_vae) or a diffusers folder, for SD 1.x/2.x and SDXL."
    )

    vae_name = FileChoice(
        folder="vae", extensions=MODEL_EXTENSIONS["vae"], default="",
        tooltip="A VAE file or diffusers folder in a vae folder.",
    )
    family = Choice(
        ("auto", "sd1", "sdxl"), default="auto",
        tooltip="Whose latent space: sd1 (also SD 2.x) or sdxl. auto: the folder's config; for a single "
        "file, 'xl' in its name means SDXL.",
    )
    dtype = dtype_field()
    field_options = classmethod(_field_options)
    fingerprint = classmethod(_model_fingerprint)
    check_host = classmethod(_model_file_problems)
    outputs = (Output("vae", VAE, "The autoencoder between pixels and latents"),)

    def run(self, ctx: RunContext, vae_name: str, family: str, dtype: str) -> Any:
        from nodes.diffusion.impl.ldm import CheckpointError
        from nodes.diffusion.impl.loading import make_family, resolve_dtype
        from nodes.diffusion.impl.paths import resolve_model_path
        from nodes.diffusion.impl.preview import latent_rgb_map
        from nodes.diffusion.impl.vae_files import load_vae
        from nodes.diffusion.types import Autoencoder

        try:
            path = resolve_model_path(vae_name, "vae", ctx.settings)
        except NodeError as error:
            raise NodeError(error.message, field="vae_name") from None
        try:
            loaded = load_vae(path, family, resolve_dtype(dtype, ctx.device), ctx.device)
        except CheckpointError as error:
            raise NodeError(f"{path.name}: {error}", field="vae_name") from None
        config = loaded.vae.config
        model_family = make_family(loaded.family, config)
        return Autoencoder(
            loaded.vae, model_family,
            scaling_factor=float(config.get("scaling_factor") or 0.18215),
            shift_factor=float(config.get("shift_factor") or 0.0),
            latent_rgb=latent_rgb_map(model_family, model_family.latent_channels),
            source=str(path),
        )
