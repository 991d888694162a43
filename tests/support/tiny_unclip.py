"""A tiny SD 2.1 unCLIP model and CLIP vision encoder, built in code for tests.

- :func:`build_tiny_vision` writes a tiny ``CLIPVisionModelWithProjection`` as one
  ``.safetensors`` in the layout of ComfyUI's ``clip_vision`` files (transformers names),
  or in OpenCLIP's (``visual.*``, fused q/k/v).
- :func:`build_tiny_unclip` writes a tiny SD 2.x v-prediction model whose UNet has the
  unCLIP class embedding (``class_embed_type="projection"``), as a diffusers folder with
  everything StableUnCLIPImg2ImgPipeline needs (image encoder, identity normaliser,
  squared-cosine noising schedule), and :func:`save_unclip_single_file` writes it as one
  file in the layout published SD 2.1 unCLIP checkpoints use (``model.diffusion_model.``,
  ``first_stage_model.``, ``cond_stage_model.model.``, and the image encoder in OpenCLIP
  names under ``embedder.model.visual.``).

Shapes follow the real models' rules (64-wide heads, GELU for OpenCLIP widths), so the
loaders that read the architecture from the weights can rebuild them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from tests.support.tiny_models import (
    _SHARED, SAMPLE_SIZE, SCHEDULER_CONFIG, TEXT2_HIDDEN, UNET_CHANNELS, _text_encoder, _vae, open_clip_state,
    save_single_file,
)

VISION_HIDDEN = 128  # two 64-wide heads
VISION_LAYERS = 3
VISION_IMAGE = 32
VISION_PATCH = 8
EMBED_DIM = 32  # the image embedding's width; the UNet's class input is twice it


def tiny_vision_model(seed: int = 11, projection_dim: int = EMBED_DIM) -> Any:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=VISION_HIDDEN, intermediate_size=2 * VISION_HIDDEN, num_hidden_layers=VISION_LAYERS,
        num_attention_heads=VISION_HIDDEN // 64, image_size=VISION_IMAGE, patch_size=VISION_PATCH,
        projection_dim=projection_dim, hidden_act="gelu", layer_norm_eps=1e-5,
    ))
    with torch.no_grad():  # trained layer norms are not exactly 1 and 0
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.normal_(1.0, 0.1)
                module.bias.normal_(0.0, 0.1)
    return model.eval()


def build_tiny_vision(out_file: Path | str, layout: str = "transformers", seed: int = 11) -> Path:
    """Save the tiny vision model at ``out_file``: ``layout`` "transformers" (ComfyUI's
    clip_vision files), "clip" (a whole CLIPModel's file: text keys too) or "open_clip"."""
    from safetensors.torch import save_file

    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in tiny_vision_model(seed).state_dict().items()}
    if layout == "open_clip":
        state = {"visual." + k: v for k, v in open_clip_vision_state(state).items()}
    elif layout == "clip":
        generator = torch.Generator().manual_seed(3)
        state["text_model.embeddings.token_embedding.weight"] = torch.randn(10, 16, generator=generator)
        state["text_projection.weight"] = torch.randn(EMBED_DIM, 16, generator=generator)
        state["logit_scale"] = torch.tensor(2.6592)
    save_file(state, out_file)
    return out_file


_TOP_TO_OPEN_CLIP = {
    "vision_model.embeddings.class_embedding": "class_embedding",
    "vision_model.embeddings.patch_embedding.weight": "conv1.weight",
    "vision_model.embeddings.position_embedding.weight": "positional_embedding",
    "vision_model.pre_layrnorm.weight": "ln_pre.weight", "vision_model.pre_layrnorm.bias": "ln_pre.bias",
    "vision_model.post_layernorm.weight": "ln_post.weight", "vision_model.post_layernorm.bias": "ln_post.bias",
}


def open_clip_vision_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers CLIP vision state dict in OpenCLIP's visual-tower names (the layers
    renamed as the text tower's are)."""
    out = {name: state[key] for key, name in _TOP_TO_OPEN_CLIP.items()}
    out["proj"] = state["visual_projection.weight"].T.contiguous()
    layers = {k.removeprefix("vision_model."): v for k, v in state.items() if k.startswith("vision_model.encoder.")}
    out.update(open_clip_state(layers))
    return out


def build_tiny_unclip(path: Path | str) -> Path:
    """Write the tiny unCLIP model as a diffusers folder at ``path`` (kept if already there)."""
    from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
    from transformers import CLIPImageProcessor, CLIPTextModel

    from nodes.diffusion.impl.tokenizer import PAD_ZERO, clip_tokenizer

    path = Path(path)
    if (path / "model_index.json").is_file():
        return path
    torch.manual_seed(12)
    unet = UNet2DConditionModel(
        sample_size=SAMPLE_SIZE, in_channels=4, out_channels=4, block_out_channels=UNET_CHANNELS, layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT2_HIDDEN, attention_head_dim=[max(1, c // 64) for c in UNET_CHANNELS],
        use_linear_projection=True, norm_num_groups=32,
        class_embed_type="projection", projection_class_embeddings_input_dim=2 * EMBED_DIM,
    )
    with torch.no_grad():  # a fresh class embedding is small; make the image's effect plain to see
        unet.class_embedding.linear_1.weight.mul_(20.0)
    tokenizer = clip_tokenizer(PAD_ZERO)
    parts = {
        "unet": unet,
        "vae": _vae(0.18215),
        "text_encoder": _text_encoder(CLIPTextModel, tokenizer, 13, TEXT2_HIDDEN, "gelu"),
        "tokenizer": tokenizer,
        "scheduler": DDIMScheduler.from_config({**SCHEDULER_CONFIG, "prediction_type": "v_prediction"}),
        "image_encoder": tiny_vision_model(),
        "image_normalizer": StableUnCLIPImageNormalizer(embedding_dim=EMBED_DIM),
        "image_noising_scheduler": DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2"),
        "feature_extractor": CLIPImageProcessor(size={"shortest_edge": VISION_IMAGE},
                                                crop_size={"height": VISION_IMAGE, "width": VISION_IMAGE}),
    }
    path.mkdir(parents=True, exist_ok=True)
    for name, part in parts.items():
        part.save_pretrained(path / name)
    index = {
        "_class_name": "StableUnCLIPImg2ImgPipeline",
        "_diffusers_version": "0.42.1",
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
        "image_normalizer": ["stable_diffusion", "StableUnCLIPImageNormalizer"],
        "image_noising_scheduler": ["diffusers", "DDPMScheduler"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (path / "model_index.json").write_text(json.dumps(index, indent=2))
    return path


def save_unclip_single_file(diffusers_dir: Path | str, out_file: Path | str) -> Path:
    """The folder's model as one original-layout file, image encoder included."""
    from safetensors.torch import load_file, save_file

    diffusers_dir, out_file = Path(diffusers_dir), Path(out_file)
    save_single_file(diffusers_dir, out_file)
    state = load_file(out_file)
    vision = load_file(diffusers_dir / "image_encoder" / "model.safetensors")
    for key, value in open_clip_vision_state(vision).items():
        state["embedder.model.visual." + key] = value
    save_file({k: v.contiguous() for k, v in state.items()}, out_file)
    return out_file


def shared_tiny_unclip(tmp_path_factory: Any) -> Path:
    """The tiny unCLIP diffusers folder, built once per test process."""
    if "unclip" not in _SHARED:
        _SHARED["unclip"] = build_tiny_unclip(tmp_path_factory.getbasetemp() / "tiny-unclip")
    return _SHARED["unclip"]
