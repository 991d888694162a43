"""Model weights in the original (LDM / ComfyUI / A1111) single-file layout, for saving.

nodeflow runs diffusers and transformers modules; a checkpoint that other tools open is
one ``.safetensors`` file named as the original Stable Diffusion code names its weights:
``model.diffusion_model.*`` (the UNet), ``first_stage_model.*`` (the autoencoder),
``cond_stage_model.transformer.*`` (SD 1.x's CLIP) or ``conditioner.embedders.N.*``
(SDXL's two encoders, the second in OpenCLIP's names). The names are worked out the way
the original layout counts blocks (see impl/unet_blocks.py for the UNet's); the loader
(impl/ldm.py, diffusers' converters) reads them back.

:func:`plain_state` gives a network's weights with PEFT LoRA layers merged at the
strengths switched on, so a saved checkpoint bakes in the LoRAs of the model it was given.
"""

from __future__ import annotations

import re
from typing import Any

import torch

_RESNET_TO_LDM = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0",
                  "conv2": "out_layers.3", "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
_UNET_TOP_TO_LDM = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
                    "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
                    "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
                    "class_embedding.linear_1": "label_emb.0.0", "class_embedding.linear_2": "label_emb.0.2"}


def unet_key_to_ldm(key: str, config: dict[str, Any]) -> str:
    """One diffusers UNet2DConditionModel key -> its name in the original SD UNet."""
    per_block = config["layers_per_block"]
    for new, old in _UNET_TOP_TO_LDM.items():
        if key.startswith(new + "."):
            return old + key[len(new):]

    def resnet(rest: str) -> str:
        part, tail = rest.split(".", 1)
        return _RESNET_TO_LDM.get(part, part) + "." + tail

    if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
        block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = 1 + block * (per_block + 1) + layer
        return f"input_blocks.{index}.0.{resnet(rest)}" if kind == "resnets" else f"input_blocks.{index}.1.{rest}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
        return f"input_blocks.{1 + int(m[1]) * (per_block + 1) + per_block}.0.op.{m[2]}"
    if m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", key):
        return f"middle_block.{2 * int(m[1])}.{resnet(m[2])}"
    if m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
        block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = block * (per_block + 1) + layer
        return f"output_blocks.{index}.0.{resnet(rest)}" if kind == "resnets" else f"output_blocks.{index}.1.{rest}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
        block = int(m[1])
        # The upsampler follows the attention when the block has one.
        slot = 2 if "CrossAttn" in config["up_block_types"][block] else 1
        return f"output_blocks.{block * (per_block + 1) + per_block}.{slot}.conv.{m[2]}"
    raise KeyError(f"no LDM name for UNet key {key!r}")


_VAE_ATTN_TO_LDM = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def vae_key_to_ldm(key: str, num_blocks: int) -> str:
    """One diffusers AutoencoderKL key -> its name in the original SD autoencoder."""
    key = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
    if m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", key):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}"
    if m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)\.(weight|bias)", key):
        return f"{m[1]}.mid.attn_1.{_VAE_ATTN_TO_LDM[m[2]]}.{m[3]}"
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(.*)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}"
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.*)", key):
        return f"encoder.down.{m[1]}.downsample.{m[2]}"
    # The original decoder numbers its levels from the bottom up.
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(.*)", key):
        return f"decoder.up.{num_blocks - 1 - int(m[1])}.block.{m[2]}"
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.*)", key):
        return f"decoder.up.{num_blocks - 1 - int(m[1])}.upsample.{m[2]}"
    return key


def vae_value_to_ldm(key: str, value: torch.Tensor) -> torch.Tensor:
    # The original mid-block attention uses 1x1 convolutions where diffusers uses linears.
    if ".mid_block.attentions." in key and key.endswith(".weight") and value.ndim == 2:
        return value[:, :, None, None]
    return value


_OPEN_CLIP_NAMES = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
                    "self_attn.out_proj": "attn.out_proj"}


def open_clip_state(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers CLIPTextModelWithProjection state dict in OpenCLIP's names (fused q/k/v)."""
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in weights.items():
        key = key.removeprefix("text_model.")
        if key == "embeddings.token_embedding.weight":
            out["token_embedding.weight"] = value
        elif key == "embeddings.position_embedding.weight":
            out["positional_embedding"] = value
        elif key.startswith("final_layer_norm."):
            out["ln_final." + key.split(".")[-1]] = value
        elif key == "text_projection.weight":
            out["text_projection"] = value.T.contiguous()  # OpenCLIP multiplies from the right
        elif m := re.match(r"encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", key):
            fused.setdefault(f"transformer.resblocks.{m[1]}.attn.in_proj_{m[3]}", {})[m[2]] = value
        elif m := re.match(r"encoder\.layers\.(\d+)\.(.*)", key):
            rest = m[2]
            for new, old in _OPEN_CLIP_NAMES.items():
                rest = rest.replace(new, old)
            out[f"transformer.resblocks.{m[1]}.{rest}"] = value
        elif key != "embeddings.position_ids":
            raise KeyError(f"no OpenCLIP name for {key!r}")
    for name, parts in fused.items():
        out[name] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out



def plain_state(network: Any) -> dict[str, torch.Tensor]:
    """``network``'s state dict without PEFT's structure: each LoRA layer's base weight plus
    the deltas of its adapters switched on (at their strengths), under the base names."""
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # peft is a dependency; without it no network has LoRA layers
        LoraLayer = ()
    state = {key.replace(".base_layer.", "."): value for key, value in network.state_dict().items()
             if ".lora_" not in key}
    for name, module in network.named_modules():
        if not LoraLayer or not isinstance(module, LoraLayer) or module.disable_adapters:
            continue
        deltas = [module.get_delta_weight(adapter) for adapter in module.active_adapters if adapter in module.lora_A]
        if deltas:
            weight = state[f"{name}.weight"]
            state[f"{name}.weight"] = (weight.float() + sum(d.float() for d in deltas)).to(weight.dtype)
    return state


def unet_state(unet: Any) -> dict[str, torch.Tensor]:
    """``unet``'s weights in the original layout, under ``model.diffusion_model.``."""
    config = dict(unet.config)
    if not isinstance(config["layers_per_block"], int):
        raise ValueError("a UNet with a different number of layers per level has no original layout")
    return {"model.diffusion_model." + unet_key_to_ldm(key, config): value for key, value in plain_state(unet).items()}


def vae_state(vae: Any) -> dict[str, torch.Tensor]:
    """``vae``'s weights in the original layout, under ``first_stage_model.``."""
    blocks = len(vae.config.block_out_channels)
    return {"first_stage_model." + vae_key_to_ldm(key, blocks): vae_value_to_ldm(key, value)
            for key, value in plain_state(vae).items()}


def text_state(encoders: list[Any], family: str) -> dict[str, torch.Tensor]:
    """The text encoders' weights in the original layout of ``family`` (sd1, sdxl)."""
    def clip_l(network: Any, prefix: str) -> dict[str, torch.Tensor]:
        # transformers >= 5.6 dropped the ``text_model.`` level from CLIPTextModel's keys.
        return {prefix + (key if key.startswith("text_model.") else "text_model." + key): value
                for key, value in plain_state(network).items() if not key.endswith("position_ids")}

    if family == "sd1":
        return clip_l(encoders[0], "cond_stage_model.transformer.")
    if family == "sdxl":
        state = clip_l(encoders[0], "conditioner.embedders.0.transformer.")
        for key, value in open_clip_state(plain_state(encoders[1])).items():
            state["conditioner.embedders.1.model." + key] = value
        return state
    raise ValueError(f"saving {family} text encoders in the original layout is not supported")
