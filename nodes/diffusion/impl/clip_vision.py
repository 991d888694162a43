"""CLIP image encoders (``clip_vision`` files and the one inside an unCLIP checkpoint), offline.

Published CLIP vision files come in three layouts, all read here into a transformers
``CLIPVisionModelWithProjection``:

- transformers names (``vision_model.*`` + ``visual_projection.weight``), what ComfyUI's
  ``clip_vision`` folder mostly holds (e.g. CLIP-ViT-H-14, clip_vision_g), also as a whole
  ``CLIPModel`` whose text half is left out;
- OpenCLIP / OpenAI names (``visual.conv1.weight``, fused ``attn.in_proj_weight``,
  ``visual.proj``), as open_clip saves it;
- the same under ``embedder.model.visual.`` inside SD 2.1 unCLIP checkpoints.

No config ships with any of them: the architecture is read from the weights' shapes,
and what shapes cannot tell (head count, activation) follows the published models' rule
(64-wide heads up to ViT-L, 16 heads above; quick GELU for OpenAI's ViT-B and ViT-L
widths, GELU for OpenCLIP's larger ones), as ComfyUI's shipped configs have it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import torch

from nodes.diffusion.impl.ldm import CheckpointError
from nodes.diffusion.impl.mapped import MappedFile
from nodes.diffusion.impl.paths import ModelFiles

State = Mapping[str, torch.Tensor]
OPEN_CLIP_PREFIXES = ("visual.", "embedder.model.visual.")
MAX_LAYERS = 128


def load_clip_vision(path: Path, dtype: torch.dtype, device: str, files: ModelFiles | None = None,
                     prefixes: tuple[str, ...] = ("",) + OPEN_CLIP_PREFIXES) -> Any:
    """The CLIP vision model in the weights file at ``path``: transformers names at the
    top level, or an OpenCLIP tower under one of ``prefixes``."""
    from nodes.diffusion.impl.loading import read_mapped

    state, source = read_mapped(path, device, files)
    try:
        return vision_from_state(state, dtype, device, source, prefixes)
    finally:
        if source is not None:
            source.release_all()


def vision_from_state(state: State, dtype: torch.dtype, device: str, source: MappedFile | None = None,
                      prefixes: tuple[str, ...] = ("",) + OPEN_CLIP_PREFIXES) -> Any:
    from transformers import CLIPVisionModelWithProjection

    from nodes.diffusion.impl.loading import _quiet_transformers, _text_model

    weights = transformers_weights(state, prefixes)
    _quiet_transformers()
    return _text_model(CLIPVisionModelWithProjection, vision_config(weights), weights, dtype, device, source)


def transformers_weights(state: State, prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The vision tower's weights in transformers names, from whichever layout holds them."""
    for prefix in prefixes:
        if prefix + "vision_model.embeddings.patch_embedding.weight" in state:
            wanted = (prefix + "vision_model.", prefix + "visual_projection.")
            weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(wanted)}
            if "visual_projection.weight" not in weights:
                raise CheckpointError("the CLIP vision weights have no visual projection (visual_projection.weight), "
                                      "so they give no image embedding")
            return weights
        if prefix + "conv1.weight" in state and prefix + "transformer.resblocks.0.attn.in_proj_weight" in state:
            return _from_open_clip(state, prefix)
    raise CheckpointError("no CLIP vision model in it (neither vision_model.* weights nor an OpenCLIP visual tower)")


_OPEN_CLIP_TOP = {
    "class_embedding": "vision_model.embeddings.class_embedding",
    "conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "ln_post.weight": "vision_model.post_layernorm.weight",
    "ln_post.bias": "vision_model.post_layernorm.bias",
}
_OPEN_CLIP_LAYER = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
                    "attn.out_proj": "self_attn.out_proj"}


def _from_open_clip(state: State, prefix: str) -> dict[str, torch.Tensor]:
    """OpenCLIP's visual tower (fused q/k/v, ``proj`` multiplied from the right) in transformers names."""
    out: dict[str, torch.Tensor] = {}
    for short, name in _OPEN_CLIP_TOP.items():
        if prefix + short in state:
            out[name] = state[prefix + short]
    if prefix + "proj" not in state:
        raise CheckpointError(f"the OpenCLIP visual tower ({prefix}*) has no projection ({prefix}proj)")
    out["visual_projection.weight"] = state[prefix + "proj"].T
    layer = re.compile(re.escape(prefix) + r"transformer\.resblocks\.(\d+)\.(.+)")
    for key, value in state.items():
        match = layer.match(key)
        if match is None:
            continue
        index, rest = match[1], match[2]
        base = f"vision_model.encoder.layers.{index}."
        if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
            kind = rest.rsplit("_", 1)[1]
            if value.shape[0] % 3:
                raise CheckpointError(f"{key}: fused attention weights of {value.shape[0]} rows are not q, k and v")
            for part, chunk in zip("qkv", value.chunk(3)):
                out[base + f"self_attn.{part}_proj.{kind}"] = chunk
            continue
        for old, new in _OPEN_CLIP_LAYER.items():
            if rest.startswith(old + "."):
                rest = new + rest[len(old):]
                break
        out[base + rest] = value
    return out


def vision_config(weights: State) -> dict[str, Any]:
    """``CLIPVisionConfig`` fields read from transformers-named vision weights."""
    try:
        patch = weights["vision_model.embeddings.patch_embedding.weight"]
        positions = int(weights["vision_model.embeddings.position_embedding.weight"].shape[0])
        projection = weights["visual_projection.weight"]
        fc1 = weights["vision_model.encoder.layers.0.mlp.fc1.weight"]
    except KeyError as error:
        raise CheckpointError(f"the CLIP vision weights are incomplete: no {error.args[0]}") from None
    if patch.ndim != 4 or projection.ndim != 2:
        raise CheckpointError("the CLIP vision patch embedding or projection has the wrong shape")
    hidden, channels, patch_size = int(patch.shape[0]), int(patch.shape[1]), int(patch.shape[2])
    side = round((positions - 1) ** 0.5)
    if side * side != positions - 1 or side < 1:
        raise CheckpointError(f"the CLIP vision position embedding has {positions} rows, not a square grid plus one")
    layers = {int(m[1]) for k in weights if (m := re.match(r"vision_model\.encoder\.layers\.(\d+)\.", k))}
    if not layers or len(layers) > MAX_LAYERS:
        raise CheckpointError(f"the CLIP vision model has {len(layers)} layers (1 to {MAX_LAYERS} are loaded)")
    return {
        "hidden_size": hidden,
        "intermediate_size": int(fc1.shape[0]),
        "projection_dim": int(projection.shape[0]),
        "num_hidden_layers": max(layers) + 1,
        "num_attention_heads": heads(hidden),
        "num_channels": channels,
        "patch_size": patch_size,
        "image_size": side * patch_size,
        # OpenAI's ViT-B and ViT-L use quick GELU; OpenCLIP's H and bigG, GELU.
        "hidden_act": "quick_gelu" if hidden in (768, 1024) else "gelu",
        "layer_norm_eps": 1e-5,
    }


def heads(hidden: int) -> int:
    """Attention heads of a published CLIP vision width: 64-wide up to ViT-L (B 12, L 16),
    16 for the wider ones (ViT-H 1280, ViT-g 1408, ViT-bigG 1664)."""
    if hidden > 1024:
        return 16
    return max(1, hidden // 64)


# -- encoding ------------------------------------------------------------------------------


def pixels_for(image: torch.Tensor, size: int, mean: tuple[float, ...], std: tuple[float, ...], crop: bool) -> torch.Tensor:
    """IMAGE [B, H, W, C] in [0, 1] -> the encoder's input [B, 3, size, size]: the short side
    resized to ``size`` (bicubic, antialiased) and the middle cut out (``crop``), or the
    whole image squeezed to a square; then quantised to 8 bits, as the encoder's training
    images were, and normalised."""
    import torch.nn.functional as F

    pixels = image[..., :3].permute(0, 3, 1, 2).float()
    height, width = pixels.shape[-2:]
    if (height, width) != (size, size):
        if crop:
            scale = size / min(height, width)
            target = (max(size, round(height * scale)), max(size, round(width * scale)))
        else:
            target = (size, size)
        pixels = F.interpolate(pixels, size=target, mode="bicubic", antialias=True, align_corners=False)
        top, left = (pixels.shape[2] - size) // 2, (pixels.shape[3] - size) // 2
        pixels = pixels[:, :, top:top + size, left:left + size]
    pixels = (pixels * 255.0).clamp(0, 255).round() / 255.0
    mean_t = torch.tensor(mean, dtype=pixels.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=pixels.dtype).view(1, 3, 1, 1)
    return (pixels - mean_t) / std_t


def encode(model: Any, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    """The projected image embedding and the last and penultimate hidden states (on the CPU, fp32)."""
    param = next(model.parameters())
    with torch.inference_mode():
        out = model(pixel_values=pixels.to(device=param.device, dtype=param.dtype), output_hidden_states=True)
    return {
        "image_embeds": out.image_embeds.float().cpu(),
        "penultimate_hidden_states": out.hidden_states[-2].float().cpu(),
        "last_hidden_state": out.last_hidden_state.float().cpu(),
    }
