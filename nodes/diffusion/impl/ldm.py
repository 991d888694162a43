"""Single-file checkpoints in the original (LDM / "ckpt") key layout.

Reads the architecture from the weights themselves (channels, depths, which levels have
attention, text-encoder widths), takes what weights cannot tell (head counts by the
family's rule, schedule, sample size) from the family's shipped config, and converts
the keys to diffusers / transformers names with diffusers' own converters. So any
checkpoint of a supported family loads, whatever its size, without a hub.
"""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any, Mapping

import torch

UNET = "model.diffusion_model."
VAE_PREFIXES = ("first_stage_model.", "vae.")
CLIP_L = {"sd1": "cond_stage_model.transformer.text_model.", "sdxl": "conditioner.embedders.0.transformer.text_model."}
OPEN_CLIP = {
    "sd2": "cond_stage_model.model.", "sdxl": "conditioner.embedders.1.model.",
    "sdxl_refiner": "conditioner.embedders.0.model.",  # the refiner has SDXL's second encoder alone
}

State = Mapping[str, torch.Tensor]


class CheckpointError(ValueError):
    """A file that is not a loadable checkpoint of a supported family; the message says why."""


def _indices(state: State, pattern: str) -> list[int]:
    """Sorted distinct integers captured by ``pattern`` (one group) over the keys."""
    regex = re.compile(pattern)
    return sorted({int(m[1]) for key in state if (m := regex.match(key))})


def has_prefix(state: State, prefix: str) -> bool:
    return any(key.startswith(prefix) for key in state)


# -- UNet ----------------------------------------------------------------------------------


def unet_config(
    state: State, base: Mapping[str, Any], family: str, pooled_dim: int | None = None, time_ids: int = 6
) -> dict[str, Any]:
    """The diffusers ``UNet2DConditionModel`` config for the UNet under ``model.diffusion_model.``.

    ``pooled_dim``: width of the pooled text embedding (SDXL), which with the added
    embedding's input width tells the width of each of the six time-id embeddings."""
    p = UNET
    inputs = _indices(state, re.escape(p) + r"input_blocks\.(\d+)\.")
    if not inputs:
        raise CheckpointError("the file holds no Stable Diffusion UNet (no model.diffusion_model.input_blocks weights)")
    downsamplers = [i for i in inputs if p + f"input_blocks.{i}.0.op.weight" in state]
    per_block = downsamplers[0] - 1 if downsamplers else len(inputs) - 1
    levels = len(downsamplers) + 1

    channels, attention, depth = [], [], []
    for level in range(levels):
        first = 1 + level * (per_block + 1)
        channels.append(int(state[p + f"input_blocks.{first}.0.out_layers.3.weight"].shape[0]))
        blocks = _indices(state, re.escape(p + f"input_blocks.{first}.1.transformer_blocks.") + r"(\d+)\.")
        attention.append(bool(blocks))
        depth.append(len(blocks) or 1)
    to_k = next((k for k in state if k.startswith(p) and k.endswith("attn2.to_k.weight")), None)
    if to_k is None:
        raise CheckpointError("the UNet has no cross-attention layers, so it is not a text-to-image SD UNet")
    proj_in = next(k for k in state if k.startswith(p) and k.endswith(".proj_in.weight"))

    config = dict(base)
    config.update(
        in_channels=int(state[p + "input_blocks.0.0.weight"].shape[1]),
        # (a ControlNet, which copies only the encoder half, has no output layer)
        out_channels=int(state[p + "out.2.weight"].shape[0]) if p + "out.2.weight" in state else base["out_channels"],
        block_out_channels=channels,
        layers_per_block=per_block,
        down_block_types=["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        up_block_types=["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)],
        cross_attention_dim=int(state[to_k].shape[1]),
        use_linear_projection=state[proj_in].ndim == 2,
        transformer_layers_per_block=depth if any(d != 1 for d in depth) else 1,
        # SD 1.x counts 8 heads everywhere; SD 2.x and SDXL use 64-wide heads.
        attention_head_dim=base["attention_head_dim"] if family == "sd1" else [max(1, c // 64) for c in channels],
    )
    if p + "label_emb.0.0.weight" in state and family in ("sd1", "sd2"):
        # SD 2.1 unCLIP: the label embedding takes an image embedding and its noise level's (impl/unclip.py).
        config.update(class_embed_type="projection",
                      projection_class_embeddings_input_dim=int(state[p + "label_emb.0.0.weight"].shape[1]))
    elif p + "label_emb.0.0.weight" in state:
        added = int(state[p + "label_emb.0.0.weight"].shape[1])
        config.update(addition_embed_type="text_time", projection_class_embeddings_input_dim=added)
        if pooled_dim is not None and (added - pooled_dim) % time_ids == 0:  # the refiner has 5 time ids
            config["addition_time_embed_dim"] = (added - pooled_dim) // time_ids
    return config


def convert_unet(state: State, config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    return convert_ldm_unet_checkpoint(state, dict(config))


# -- VAE -----------------------------------------------------------------------------------


def vae_prefix(state: State) -> str | None:
    return next((p for p in VAE_PREFIXES if p + "decoder.conv_in.weight" in state), None)


def vae_config(state: State, base: Mapping[str, Any]) -> dict[str, Any]:
    p = vae_prefix(state)
    if p is None:
        raise CheckpointError("the file holds no autoencoder (no first_stage_model.* weights)")
    levels = _indices(state, re.escape(p) + r"encoder\.down\.(\d+)\.")
    per_block = _indices(state, re.escape(p) + r"encoder\.down\.0\.block\.(\d+)\.")
    config = dict(base)
    config.update(
        in_channels=int(state[p + "encoder.conv_in.weight"].shape[1]),
        out_channels=int(state[p + "decoder.conv_out.weight"].shape[0]),
        latent_channels=int(state[p + "decoder.conv_in.weight"].shape[1]),
        block_out_channels=[int(state[p + f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) for i in levels],
        layers_per_block=len(per_block),
        down_block_types=["DownEncoderBlock2D"] * len(levels),
        up_block_types=["UpDecoderBlock2D"] * len(levels),
    )
    return config


def convert_vae(state: State, config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    # diffusers' converter picks the prefix itself; hand it only the VAE's keys.
    p = vae_prefix(state)
    return convert_ldm_vae_checkpoint({k: v for k, v in state.items() if k.startswith(p)}, dict(config))


# -- text encoders -------------------------------------------------------------------------


def clip_config(state: State, prefix: str, base: Mapping[str, Any]) -> dict[str, Any]:
    """transformers ``CLIPTextConfig`` fields for an OpenAI-CLIP text model stored in
    transformers layout under ``prefix`` (``...text_model.``)."""
    tokens = state[prefix + "embeddings.token_embedding.weight"]
    hidden = int(tokens.shape[1])
    return {
        **base,
        "vocab_size": int(tokens.shape[0]),
        "hidden_size": hidden,
        "max_position_embeddings": int(state[prefix + "embeddings.position_embedding.weight"].shape[0]),
        "num_hidden_layers": len(_indices(state, re.escape(prefix) + r"encoder\.layers\.(\d+)\.")),
        "intermediate_size": int(state[prefix + "encoder.layers.0.mlp.fc1.weight"].shape[0]),
        "num_attention_heads": max(1, hidden // 64),
    }


def convert_clip(state: State, prefix: str) -> dict[str, torch.Tensor]:
    # transformers >= 5.6 CLIPTextModel has no ``text_model.`` level.
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def open_clip_config(state: State, prefix: str, base: Mapping[str, Any], drop_last: bool) -> dict[str, Any]:
    """``CLIPTextConfig`` fields for an OpenCLIP text tower under ``prefix`` (``...model.``).

    ``drop_last``: SD 2.x conditions on the penultimate layer, so (like diffusers) its
    encoder is built without the last block and the final layer norm follows the rest."""
    tokens = state[prefix + "token_embedding.weight"]
    hidden = int(tokens.shape[1])
    layers = len(_indices(state, re.escape(prefix) + r"transformer\.resblocks\.(\d+)\."))
    config = {
        **base,
        "vocab_size": int(tokens.shape[0]),
        "hidden_size": hidden,
        "max_position_embeddings": int(state[prefix + "positional_embedding"].shape[0]),
        "num_hidden_layers": layers - 1 if drop_last else layers,
        "intermediate_size": int(state[prefix + "transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
        "num_attention_heads": max(1, hidden // 64),
    }
    if prefix + "text_projection" in state:
        config["projection_dim"] = int(state[prefix + "text_projection"].shape[1])
    return config


def convert_open_clip(state: State, prefix: str, config: Mapping[str, Any], with_projection: bool) -> dict[str, torch.Tensor]:
    """OpenCLIP names (fused q/k/v, ``resblocks``) -> transformers CLIP names."""
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint

    kept_layers = config["num_hidden_layers"]
    tower = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        if (m := re.match(re.escape(prefix) + r"transformer\.resblocks\.(\d+)\.", key)) and int(m[1]) >= kept_layers:
            continue
        tower[key] = value

    # The converter reads the width from a model, and only when there is no projection.
    width_only = SimpleNamespace(config=SimpleNamespace(hidden_size=config["hidden_size"]))
    converted = convert_open_clip_checkpoint(width_only, tower, prefix=prefix)
    if with_projection:
        return converted
    converted.pop("text_projection.weight", None)
    return {k.removeprefix("text_model."): v for k, v in converted.items()}
