"""The values that travel on the diffusion pack's links.

Plain records; the behaviour lives in the nodes and their helpers. Tensors live on the
run's device and are never modified in place by a consumer (the executor caches them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class ModelFamily:
    """What a checkpoint is: decides latent channels, tokenizer padding, pooled outputs."""

    name: str  # "sd1", "sd2", "sdxl", "bundled", ...
    latent_channels: int = 4
    vae_scale_factor: int = 8
    uses_pooled: bool = False  # SDXL: pooled text embeds + time ids


@dataclass
class DiffusionModel:  # MODEL
    unet: Any  # diffusers UNet2DConditionModel
    family: ModelFamily
    scheduler_config: dict[str, Any]  # the checkpoint's scheduler config (betas, prediction type, ...)
    dtype: "torch.dtype | None" = None
    source: str = ""
    latent_rgb: "torch.Tensor | None" = None  # the checkpoint's own preview map, when it has one


@dataclass
class TextEncoders:  # CLIP
    tokenizers: list[Any]  # one per encoder (SDXL has two)
    encoders: list[Any]  # transformers CLIPTextModel / CLIPTextModelWithProjection
    family: ModelFamily
    pad_token_ids: list[int] = field(default_factory=list)
    vision: Any = None  # CLIPVisionModelWithProjection when the model carries one (bundled model)
    source: str = ""


@dataclass
class Autoencoder:  # VAE
    vae: Any  # diffusers AutoencoderKL
    family: ModelFamily
    scaling_factor: float = 0.18215
    shift_factor: float = 0.0
    latent_rgb: "torch.Tensor | None" = None  # [C+1, 3] cheap latent -> RGB preview map (last row: bias)
    source: str = ""


@dataclass
class Conditioning:  # CONDITIONING
    embeds: "torch.Tensor"  # [B, tokens, dim] hidden states for cross-attention
    pooled: "torch.Tensor | None" = None  # [B, dim] for families that use it (SDXL)
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class Latent:  # LATENT
    samples: "torch.Tensor"  # [B, C, h, w], unscaled-by-VAE convention: already multiplied by scaling_factor
    family: ModelFamily | None = None


@dataclass(frozen=True)
class NoiseSource:  # NOISE
    """Starting noise drawn from a CPU generator seeded with ``seed`` (same image on every
    device). ``seed is None`` means no noise (zeros), for ComfyUI's DisableNoise."""

    seed: int | None


# IMAGE values are torch tensors [B, H, W, 3], float32 in [0, 1], on the CPU.
