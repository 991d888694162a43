"""A tiny Stable-Diffusion-1.x-architecture model, built in code for tests.

Same component types and wiring as SD 1.5 (UNet2DConditionModel with cross-attention,
AutoencoderKL with 4 latent channels, CLIP text encoder with the real CLIP vocabulary,
PNDM scheduler with SD's scaled-linear betas) but a few hundred kB of weights, from
fixed seeds, so every test that builds it gets the same model.

- :func:`build_tiny_sd` writes it as a diffusers folder that
  ``StableDiffusionPipeline.from_pretrained(path, local_files_only=True, safety_checker=None)`` loads.
- :func:`save_single_file` writes the same weights as one ``.safetensors`` file in the
  original (LDM) key layout that SD 1.x checkpoints are distributed in.
- :func:`build_tiny_sdxl` does the same for the SDXL architecture (two text encoders,
  the second an OpenCLIP-style one with a projection; pooled + time-id conditioning);
  :func:`save_single_file` writes it in the SDXL single-file layout.
- :func:`shared_tiny_sd` / :func:`shared_tiny_sdxl` build once per test process, for session fixtures::

      @pytest.fixture(scope="session")
      def tiny_sd(tmp_path_factory):
          return shared_tiny_sd(tmp_path_factory)

Head counts follow the real families' rules (SD 1.x UNet: 8 heads; CLIP: 64-dim heads,
at least one), so a single-file loader that reads the architecture from the weights can
rebuild it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

UNET_CHANNELS = (32, 64)
VAE_CHANNELS = (32, 64)
TEXT_HIDDEN = 32
TEXT_LAYERS = 3
TEXT2_HIDDEN = 64  # OpenCLIP-style encoders: SD 2.x's, SDXL's second
CROSS_ATTENTION_DIM = TEXT_HIDDEN
SAMPLE_SIZE = 16  # latent side; images are SAMPLE_SIZE * 2 pixels (VAE factor 2)

SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "PNDMScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "clip_sample": False,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
    "trained_betas": None,
}


def build_tiny_sd(path: Path | str, version: int = 1) -> Path:
    """Write the tiny model as a diffusers folder at ``path`` (kept if already there).

    ``version=2``: the SD 2.x (768-v) variant instead: an OpenCLIP-style text encoder
    (GELU, 64-wide heads, padding with id 0), linear attention projections, 64-wide UNet
    heads, and a DDIM v-prediction schedule."""
    from diffusers import DDIMScheduler, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    from nodes.diffusion.impl.tokenizer import PAD_END, PAD_ZERO, clip_tokenizer

    path = Path(path)
    if (path / "model_index.json").is_file():
        return path

    sd2 = version == 2
    hidden = TEXT2_HIDDEN if sd2 else TEXT_HIDDEN
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=SAMPLE_SIZE,
        in_channels=4,
        out_channels=4,
        block_out_channels=UNET_CHANNELS,
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=hidden,
        attention_head_dim=[max(1, c // 64) for c in UNET_CHANNELS] if sd2 else 8,
        use_linear_projection=sd2,
        norm_num_groups=32,
    )
    vae = _vae(0.18215)
    tokenizer = clip_tokenizer(PAD_ZERO if sd2 else PAD_END)
    text_encoder = _text_encoder(CLIPTextModel, tokenizer, 2, hidden, "gelu" if sd2 else "quick_gelu")
    if sd2:
        scheduler = DDIMScheduler.from_config({**SCHEDULER_CONFIG, "prediction_type": "v_prediction"})
    else:
        scheduler = PNDMScheduler.from_config(SCHEDULER_CONFIG)

    path.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(path / "unet")
    vae.save_pretrained(path / "vae")
    text_encoder.save_pretrained(path / "text_encoder")
    tokenizer.save_pretrained(path / "tokenizer")
    scheduler.save_pretrained(path / "scheduler")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.42.1",
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", type(scheduler).__name__],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    # Written last: its presence marks a complete folder.
    (path / "model_index.json").write_text(json.dumps(index, indent=2))
    return path


def _vae(scaling_factor: float, **extra: Any) -> Any:
    from diffusers import AutoencoderKL

    torch.manual_seed(1)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=VAE_CHANNELS,
        down_block_types=("DownEncoderBlock2D",) * len(VAE_CHANNELS),
        up_block_types=("UpDecoderBlock2D",) * len(VAE_CHANNELS),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=32,
        sample_size=SAMPLE_SIZE * 2,
        scaling_factor=scaling_factor,
        **extra,
    )


def _text_encoder(cls: Any, tokenizer: Any, seed: int, hidden: int, act: str) -> Any:
    from transformers import CLIPTextConfig

    torch.manual_seed(seed)
    model = cls(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            intermediate_size=hidden + 5,
            num_hidden_layers=TEXT_LAYERS,
            num_attention_heads=max(1, hidden // 64),
            max_position_embeddings=77,
            hidden_act=act,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            projection_dim=hidden,
        )
    )
    # Fresh layer norms are exactly weight 1, bias 0, which makes every token embedding
    # zero-mean; trained encoders are not like that (prompt weighting relies on the mean).
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.normal_(1.0, 0.1)
                module.bias.normal_(0.0, 0.1)
    return model


TIME_EMBED_DIM = 8

SDXL_SCHEDULER_CONFIG: dict[str, Any] = {
    **{k: v for k, v in SCHEDULER_CONFIG.items() if k not in ("skip_prk_steps", "set_alpha_to_one")},
    "_class_name": "EulerDiscreteScheduler",
    "interpolation_type": "linear",
    "use_karras_sigmas": False,
}


def build_tiny_sdxl(path: Path | str) -> Path:
    """Write a tiny SDXL-architecture model as a diffusers folder at ``path`` (kept if there);
    ``StableDiffusionXLPipeline.from_pretrained(path, local_files_only=True)`` loads it."""
    from diffusers import EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from nodes.diffusion.impl.tokenizer import PAD_ZERO, clip_tokenizer

    path = Path(path)
    if (path / "model_index.json").is_file():
        return path
    tokenizer, tokenizer_2 = clip_tokenizer(), clip_tokenizer(PAD_ZERO)
    torch.manual_seed(3)
    unet = UNet2DConditionModel(
        sample_size=SAMPLE_SIZE,
        in_channels=4,
        out_channels=4,
        block_out_channels=UNET_CHANNELS,
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2),
        attention_head_dim=[max(1, c // 64) for c in UNET_CHANNELS],  # SDXL: 64-wide heads
        cross_attention_dim=TEXT_HIDDEN + TEXT2_HIDDEN,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED_DIM,
        projection_class_embeddings_input_dim=TEXT2_HIDDEN + 6 * TIME_EMBED_DIM,
        norm_num_groups=32,
    )
    parts = {
        "unet": unet,
        "vae": _vae(0.13025, force_upcast=True),
        "text_encoder": _text_encoder(CLIPTextModel, tokenizer, 4, TEXT_HIDDEN, "quick_gelu"),
        "text_encoder_2": _text_encoder(CLIPTextModelWithProjection, tokenizer_2, 5, TEXT2_HIDDEN, "gelu"),
        "tokenizer": tokenizer,
        "tokenizer_2": tokenizer_2,
        "scheduler": EulerDiscreteScheduler.from_config(SDXL_SCHEDULER_CONFIG),
    }
    path.mkdir(parents=True, exist_ok=True)
    for name, part in parts.items():
        part.save_pretrained(path / name)
    index = {
        "_class_name": "StableDiffusionXLPipeline",
        "_diffusers_version": "0.42.1",
        "force_zeros_for_empty_prompt": True,
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (path / "model_index.json").write_text(json.dumps(index, indent=2))
    return path


_SHARED: dict[str, Path] = {}


def shared_tiny_sd(tmp_path_factory: Any) -> Path:
    """The tiny SD 1.x model, built once per test process under pytest's base temp dir."""
    if "sd" not in _SHARED:
        _SHARED["sd"] = build_tiny_sd(tmp_path_factory.getbasetemp() / "tiny-sd")
    return _SHARED["sd"]


def shared_tiny_sd2(tmp_path_factory: Any) -> Path:
    """The tiny SD 2.x (v-prediction) model, built once per test process."""
    if "sd2" not in _SHARED:
        _SHARED["sd2"] = build_tiny_sd(tmp_path_factory.getbasetemp() / "tiny-sd2", version=2)
    return _SHARED["sd2"]


def shared_tiny_sdxl(tmp_path_factory: Any) -> Path:
    """The tiny SDXL model, built once per test process."""
    if "sdxl" not in _SHARED:
        _SHARED["sdxl"] = build_tiny_sdxl(tmp_path_factory.getbasetemp() / "tiny-sdxl")
    return _SHARED["sdxl"]


# -- diffusers -> original (LDM) key layout ---------------------------------------------


def save_single_file(diffusers_dir: Path | str, out_file: Path | str) -> Path:
    """Save the folder's UNet, VAE and text encoder(s) as one ``.safetensors`` in the
    original layout: SD 1.x's, or SDXL's when the folder has a second text encoder."""
    from safetensors.torch import load_file, save_file

    diffusers_dir, out_file = Path(diffusers_dir), Path(out_file)
    unet_config = json.loads((diffusers_dir / "unet" / "config.json").read_text())
    state: dict[str, torch.Tensor] = {}
    for key, value in load_file(diffusers_dir / "unet" / "diffusion_pytorch_model.safetensors").items():
        state["model.diffusion_model." + unet_key_to_ldm(key, unet_config)] = value
    for key, value in load_file(diffusers_dir / "vae" / "diffusion_pytorch_model.safetensors").items():
        state["first_stage_model." + vae_key_to_ldm(key, len(_vae_blocks(diffusers_dir)))] = _vae_value_to_ldm(key, value)
    sdxl = (diffusers_dir / "text_encoder_2").is_dir()
    text_config = json.loads((diffusers_dir / "text_encoder" / "config.json").read_text())
    if text_config["hidden_act"] == "gelu" and not sdxl:  # SD 2.x: OpenCLIP-H layout
        weights = load_file(diffusers_dir / "text_encoder" / "model.safetensors")
        for key, value in open_clip_state(with_unused_last_layer(weights, text_config)).items():
            state["cond_stage_model.model." + key] = value
        save_file({k: v.contiguous() for k, v in state.items()}, _parent(out_file))
        return out_file
    clip_prefix = "conditioner.embedders.0.transformer." if sdxl else "cond_stage_model.transformer."
    for key, value in load_file(diffusers_dir / "text_encoder" / "model.safetensors").items():
        # transformers >= 5.6 dropped the ``text_model.`` level from CLIPTextModel's keys.
        key = key if key.startswith("text_model.") else "text_model." + key
        state[clip_prefix + key] = value
    if sdxl:
        weights = load_file(diffusers_dir / "text_encoder_2" / "model.safetensors")
        for key, value in open_clip_state(weights).items():
            state["conditioner.embedders.1.model." + key] = value
    save_file({k: v.contiguous() for k, v in state.items()}, _parent(out_file))
    return out_file


def _parent(out_file: Path) -> Path:
    out_file.parent.mkdir(parents=True, exist_ok=True)
    return out_file


def with_unused_last_layer(weights: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """SD 2.x files hold the whole OpenCLIP tower, one layer more than diffusers keeps
    (conditioning reads the penultimate layer) and a projection: add both, as noise."""
    generator = torch.Generator().manual_seed(7)
    last = config["num_hidden_layers"] - 1
    out = dict(weights)
    for key, value in weights.items():
        short = key.removeprefix("text_model.")
        if short.startswith(f"encoder.layers.{last}."):
            new = "encoder.layers." + str(last + 1) + short[len(f"encoder.layers.{last}"):]
            out[new] = torch.randn(value.shape, generator=generator)
    hidden = config["hidden_size"]
    out["text_projection.weight"] = torch.randn(hidden, hidden, generator=generator)
    return out


def _vae_blocks(diffusers_dir: Path) -> list[int]:
    return json.loads((diffusers_dir / "vae" / "config.json").read_text())["block_out_channels"]


# The original-layout names are the pack's (CheckpointSave writes them); the test models use the same.
from nodes.diffusion.impl.ldm_export import (  # noqa: E402,F401
    open_clip_state, unet_key_to_ldm, vae_key_to_ldm, vae_value_to_ldm as _vae_value_to_ldm,
)
