"""The diffusion pack's implementation: model loading, sampling, guidance, prompts, VAE.

Plain modules, imported by the node modules when they run (most import torch)."""
