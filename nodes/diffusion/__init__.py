"""The diffusion pack: Stable-Diffusion-style text-to-image as nodes, on diffusers.

The link data types are declared here once; the values that travel on them are the
records in :mod:`nodes.diffusion._types`.
"""

from nodeflow.types import register_data_type

MODEL = register_data_type("MODEL", (180, 130, 230), "A denoising UNet with its noise-schedule configuration")
CLIP = register_data_type("CLIP", (240, 210, 80), "Tokenizer(s) and text encoder(s)")
VAE = register_data_type("VAE", (240, 100, 100), "Autoencoder between pixels and latents")
CONDITIONING = register_data_type("CONDITIONING", (240, 160, 60), "Text embeddings the UNet cross-attends to")
LATENT = register_data_type("LATENT", (240, 130, 200), "A batch of latent images")
IMAGE = register_data_type("IMAGE", (100, 160, 240), "A batch of RGB images, values in [0, 1]")
NOISE = register_data_type("NOISE", (200, 200, 200), "A seeded source of starting noise")
GUIDER = register_data_type("GUIDER", (100, 200, 160), "How the model is steered by conditioning (e.g. CFG)")
SAMPLER = register_data_type("SAMPLER", (120, 200, 220), "A sampling algorithm")
SIGMAS = register_data_type("SIGMAS", (200, 220, 120), "A noise schedule: one sigma per step")

# Converters from other tools' workflow files (see nodeflow.importers), imported on use.
IMPORTERS = ("nodes.diffusion._comfyui:IMPORTER",)
