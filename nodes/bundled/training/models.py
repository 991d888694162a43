"""Architectures of the bundled model, all stock diffusers/transformers classes.

Sizes are chosen for a 2-core CPU: 32x32 images, a VAE that halves the resolution
(16x16x4 latents, so thin strokes survive), and a UNet that adds the text to its time
embedding (``addition_embed_type="text"``) as well as cross-attending to it, so colour
and shape reach every resolution.
"""

from __future__ import annotations

from typing import Any

from nodes.bundled.training.dataset import SIZE

TEXT_WIDTH = 128  # text hidden size = CLIP embedding size (the text projection is the identity)
LATENT_CHANNELS = 4
VAE_FACTOR = 2
SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "DDPMScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "timestep_spacing": "leading",
}


def build_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=LATENT_CHANNELS, sample_size=SIZE,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=16,
        mid_block_add_attention=False,  # 16x16 attention costs more than it gives at this size
    )


def text_config(vocab_size: int, bos: int, eos: int):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=TEXT_WIDTH, intermediate_size=4 * TEXT_WIDTH,
        num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=77,
        projection_dim=TEXT_WIDTH, bos_token_id=bos, eos_token_id=eos, pad_token_id=eos,
    )


def vision_config():
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        image_size=SIZE, patch_size=4, num_channels=3, hidden_size=96, intermediate_size=384,
        num_hidden_layers=4, num_attention_heads=4, projection_dim=TEXT_WIDTH,
    )


def build_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=SIZE // VAE_FACTOR, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS,
        block_out_channels=(32, 64, 128), layers_per_block=1, norm_num_groups=16,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=4,  # diffusers' legacy name: this is the number of heads
        addition_embed_type="text", addition_embed_type_num_heads=4,
    )


def parameter_count(module) -> int:
    return sum(p.numel() for p in module.parameters())
