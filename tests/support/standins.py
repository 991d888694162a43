"""Tiny real model files of every kind a ComfyUI workflow names, in the layouts published
files use: LoRAs (kohya), ControlNets (the original layout), ESRGAN upscalers, VAE single
files, GLIGEN files. The tests of each loader build theirs with these, and
``benchmarks/comfyui_standins.py`` puts them under the names a workflow references."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from tests.support.tiny_models import _vae_blocks, _vae_value_to_ldm, unet_key_to_ldm, vae_key_to_ldm

# -- LoRA --------------------------------------------------------------------------------


def lora_layers(pipe: Any, seed: int = 5, scale: float = 0.3) -> tuple[dict, dict, dict]:
    """Random LoRA layers for ``pipe`` (a diffusers SD or SDXL pipeline): the UNet's attention
    by peft, and every text encoder's attention. Returns (unet layers, text layers under
    ``text_encoder.`` / ``text_encoder_2.`` peft names, text encoder 1's deltas by module)."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                     target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    unet_layers = {k: v * scale for k, v in get_peft_model_state_dict(pipe.unet).items()}
    text_layers: dict[str, dict] = {}
    text_deltas: dict[str, torch.Tensor] = {}
    for prefix in ("text_encoder", "text_encoder_2"):
        encoder = getattr(pipe, prefix, None)
        if encoder is None:
            continue
        layers = text_layers.setdefault(prefix, {})
        for name, module in encoder.named_modules():
            if name.endswith(("q_proj", "k_proj", "v_proj", "out_proj")):
                down = torch.randn(4, module.in_features) * scale
                up = torch.randn(module.out_features, 4) * scale
                key = name if name.startswith("text_model.") else "text_model." + name
                layers[f"{key}.lora_A.weight"], layers[f"{key}.lora_B.weight"] = down, up
                if prefix == "text_encoder":
                    text_deltas[name] = up @ down
    return unet_layers, text_layers, text_deltas


def kohya_state(unet_layers: dict, text_layers: dict[str, dict], sdxl: bool = False) -> dict[str, torch.Tensor]:
    """The layers under kohya/A1111 names: SD 1.x files name the text encoder ``lora_te_``,
    SDXL files ``lora_te1_`` and ``lora_te2_``."""
    from diffusers.utils import convert_state_dict_to_kohya

    peft_named = {f"unet.{k}": v for k, v in unet_layers.items()}
    for prefix, layers in text_layers.items():
        peft_named.update({f"{prefix}.{k}": v for k, v in layers.items()})
    state = convert_state_dict_to_kohya(peft_named)
    if not sdxl:
        state = {k.replace("lora_te1_", "lora_te_"): v for k, v in state.items()}
    return {k: v.contiguous() for k, v in state.items()}


def build_kohya_lora(model_dir: Path | str, out_file: Path | str, sdxl: bool = False, seed: int = 5) -> Path:
    """A random LoRA for the diffusers model at ``model_dir``, saved in the kohya layout."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from safetensors.torch import save_file

    cls = StableDiffusionXLPipeline if sdxl else StableDiffusionPipeline
    pipe = cls.from_pretrained(model_dir, local_files_only=True, **({} if sdxl else {"safety_checker": None}))
    unet_layers, text_layers, _ = lora_layers(pipe, seed)
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    save_file(kohya_state(unet_layers, text_layers, sdxl), out_file)
    return out_file


# -- ControlNet --------------------------------------------------------------------------


def tiny_controlnet(model_dir: Path | str, hint_channels: tuple[int, ...], seed: int = 4) -> Any:
    """A ControlNet copied from the tiny UNet (as training starts), with random zero-convs
    so that it has an effect."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(Path(model_dir) / "unet")
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=hint_channels)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in net.named_parameters():
            if name.startswith(("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding.conv_out")):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    return net.eval()


def controlnet_original_layout(net: Any) -> dict[str, torch.Tensor]:
    """A diffusers ControlNetModel's weights under the names of the original ControlNet files."""
    config = dict(net.config)
    hint = {"conv_in": 0, **{f"blocks.{j}": 2 * (j + 1) for j in range(6)}, "conv_out": 14}
    state = {}
    for key, value in net.state_dict().items():
        if key.startswith("controlnet_down_blocks."):
            _, index, rest = key.split(".", 2)
            name = f"zero_convs.{index}.0.{rest}"
        elif key.startswith("controlnet_mid_block."):
            name = "middle_block_out.0." + key.split(".", 1)[1]
        elif key.startswith("controlnet_cond_embedding."):
            part, rest = key[len("controlnet_cond_embedding."):].rsplit(".", 1)
            name = f"input_hint_block.{hint[part]}.{rest}"
        else:
            name = unet_key_to_ldm(key, {**config, "up_block_types": ()})
        state["control_model." + name] = value.contiguous()
    return state


def tiny_union_controlnet(sdxl: Path | str, types: int, seed: int = 7) -> Any:
    """A union ControlNet shaped like the tiny SDXL UNet (hint encoder (16, 32): the tiny
    VAE's 2x), its zero-initialised parts randomised so that hint and type have an effect."""
    from diffusers import ControlNetUnionModel, UNet2DConditionModel

    c = UNet2DConditionModel.from_pretrained(Path(sdxl) / "unet").config
    torch.manual_seed(seed)
    net = ControlNetUnionModel(
        in_channels=c.in_channels, down_block_types=c.down_block_types, block_out_channels=c.block_out_channels,
        layers_per_block=c.layers_per_block, transformer_layers_per_block=c.transformer_layers_per_block,
        cross_attention_dim=c.cross_attention_dim, attention_head_dim=c.attention_head_dim,
        use_linear_projection=c.use_linear_projection, addition_embed_type=c.addition_embed_type,
        addition_time_embed_dim=c.addition_time_embed_dim,
        projection_class_embeddings_input_dim=c.projection_class_embeddings_input_dim,
        conditioning_embedding_out_channels=(16, 32), num_control_type=types,
        num_trans_channel=c.block_out_channels[0], num_trans_head=8, num_proj_channel=c.block_out_channels[0],
    )
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in net.named_parameters():
            if name.startswith(("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding.conv_out",
                                "spatial_ch_projs")):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    return net.eval()


# -- upscalers ---------------------------------------------------------------------------


def tiny_esrgan(seed: int = 2) -> Any:
    """A one-block RRDB ESRGAN x4; weights scaled so the output is not clamped flat."""
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(seed)
    network = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4)
    with torch.no_grad():
        parameters = list(network.named_parameters())
        for name, parameter in parameters:
            parameter.copy_(torch.randn_like(parameter) * 0.1 if name.endswith("weight") else torch.zeros_like(parameter))
        parameters[-1][1].fill_(0.5)  # the last layer's bias: mid-grey before the network's own detail
    return network


def network_state(network: Any) -> dict[str, torch.Tensor]:
    return {k: v.contiguous() for k, v in network.state_dict().items()}


# -- VAE ---------------------------------------------------------------------------------


def vae_original_state(model_dir: Path | str) -> dict[str, torch.Tensor]:
    """The diffusers model's VAE under the original names, as vae-ft-mse-840000 ships."""
    from safetensors.torch import load_file

    model_dir = Path(model_dir)
    weights = load_file(model_dir / "vae" / "diffusion_pytorch_model.safetensors")
    blocks = len(_vae_blocks(model_dir))
    return {vae_key_to_ldm(k, blocks): _vae_value_to_ldm(k, v).contiguous() for k, v in weights.items()}


# -- GLIGEN ------------------------------------------------------------------------------


def gated_unet(model_dir: Path | str, seed: int = 7) -> Any:
    """The tiny UNet with GLIGEN's fusers and position net, given random weights and open
    gates (a trained GLIGEN's gates are open; fresh ones are closed, tanh(0) = 0)."""
    from diffusers import UNet2DConditionModel

    base = UNet2DConditionModel.from_pretrained(Path(model_dir) / "unet")
    gated = UNet2DConditionModel.from_config(base.config, attention_type="gated")
    missing, unexpected = gated.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all(".fuser." in k or k.startswith("position_net.") for k in missing)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in gated.named_parameters():
            if name.endswith(("alpha_attn", "alpha_dense")):
                param.fill_(0.8)
            elif ".fuser." in name or name.startswith("position_net."):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return gated.eval()


def gligen_published_layout(gated: Any) -> dict[str, torch.Tensor]:
    """The GLIGEN parts of a gated diffusers UNet under the published files' names."""
    config = dict(gated.config)
    out = {}
    for key, value in gated.state_dict().items():
        if ".fuser." in key:
            out[unet_key_to_ldm(key, config)] = value.contiguous()
        elif key.startswith("position_net."):
            out[key] = value.contiguous()
    return out


# -- textual inversion -------------------------------------------------------------------


def embedding_state(model_dir: Path | str, sdxl: bool = False, vectors: int = 1, seed: int = 3) -> dict[str, torch.Tensor]:
    """A random textual-inversion embedding as published files hold it: ``emb_params`` for
    SD 1.x, ``clip_l`` + ``clip_g`` for SDXL, sized from the model's text encoders."""
    model_dir = Path(model_dir)
    generator = torch.Generator().manual_seed(seed)

    def width(folder: str) -> int:
        return json.loads((model_dir / folder / "config.json").read_text())["hidden_size"]

    if sdxl:
        return {"clip_l": torch.randn(vectors, width("text_encoder"), generator=generator) * 0.01,
                "clip_g": torch.randn(vectors, width("text_encoder_2"), generator=generator) * 0.01}
    return {"emb_params": torch.randn(vectors, width("text_encoder"), generator=generator) * 0.01}


# -- a model's parts in their own files (UNETLoader, CLIPLoader, DualCLIPLoader) ------------


def unet_file_state(model_dir: Path | str, layout: str = "original") -> dict[str, torch.Tensor]:
    """The diffusers model's UNet alone, as ComfyUI's ``diffusion_models`` files hold it:
    ``"original"`` names without the ``model.diffusion_model.`` prefix (as ComfyUI saves a
    UNet), or ``"diffusers"`` names without a config beside them."""
    from safetensors.torch import load_file

    model_dir = Path(model_dir)
    weights = load_file(model_dir / "unet" / "diffusion_pytorch_model.safetensors")
    if layout == "diffusers":
        return {k: v.contiguous() for k, v in weights.items()}
    config = json.loads((model_dir / "unet" / "config.json").read_text())
    return {unet_key_to_ldm(k, config): v.contiguous() for k, v in weights.items()}


def text_encoder_file_states(model_dir: Path | str) -> list[dict[str, torch.Tensor]]:
    """The diffusers model's text encoders as separate files, in the layouts published ones
    use: CLIP-L in the transformers layout (``text_model.*``, as ``clip_l.safetensors``),
    SDXL's OpenCLIP-G in the transformers layout with its projection (``clip_g.safetensors``),
    SD 2.x's OpenCLIP-H in OpenCLIP's layout with the whole tower (the layer SD 2.x leaves
    unused and the projection added, as in its checkpoints)."""
    from safetensors.torch import load_file

    from tests.support.tiny_models import open_clip_state, with_unused_last_layer

    model_dir = Path(model_dir)
    states = []
    for folder in ("text_encoder", "text_encoder_2"):
        if not (model_dir / folder).is_dir():
            continue
        config = json.loads((model_dir / folder / "config.json").read_text())
        weights = load_file(model_dir / folder / "model.safetensors")
        if folder == "text_encoder" and config["hidden_act"] == "gelu" and not (model_dir / "text_encoder_2").is_dir():
            states.append({k: v.contiguous() for k, v in open_clip_state(with_unused_last_layer(weights, config)).items()})
            continue
        named = {}
        for key, value in weights.items():
            # transformers >= 5.6 dropped the ``text_model.`` level from CLIPTextModel's keys.
            named[key if key.startswith(("text_model.", "text_projection")) else "text_model." + key] = value.contiguous()
        states.append(named)
    return states


def inpainting_twin(model_dir: Path | str, out_dir: Path | str, seed: int = 11) -> Path:
    """The diffusers model with a 9-channel inpainting UNet (latent, mask, masked-image
    latent), its first convolution widened with random weights for the 5 extra inputs, as
    inpainting checkpoints are trained from a base; the other parts shared."""
    import shutil

    from diffusers import UNet2DConditionModel

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if (out_dir / "model_index.json").is_file():
        return out_dir
    shutil.copytree(model_dir, out_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns("model_index.json"))
    base = UNet2DConditionModel.from_pretrained(model_dir / "unet")
    config = dict(base.config)
    config["in_channels"] = 9
    twin = UNet2DConditionModel.from_config(config)
    state = base.state_dict()
    generator = torch.Generator().manual_seed(seed)
    weight = state["conv_in.weight"]
    extra = torch.randn(weight.shape[0], 5, *weight.shape[2:], generator=generator) * weight.std()
    state["conv_in.weight"] = torch.cat([weight, extra], dim=1)
    twin.load_state_dict(state)
    shutil.rmtree(out_dir / "unet")
    twin.save_pretrained(out_dir / "unet")
    shutil.copy(model_dir / "model_index.json", out_dir / "model_index.json")
    return out_dir


def tiny_refiner(sdxl_dir: Path | str, out_dir: Path | str, seed: int = 8) -> Path:
    """A tiny SDXL refiner beside the tiny SDXL base: its VAE and second text encoder, a
    UNet cross-attending to that encoder alone and taking 5 time ids (size + aesthetic score)."""
    import shutil

    from diffusers import UNet2DConditionModel

    from tests.support.tiny_models import TEXT2_HIDDEN, TIME_EMBED_DIM

    sdxl_dir, out_dir = Path(sdxl_dir), Path(out_dir)
    if (out_dir / "model_index.json").is_file():
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    for part in ("vae", "text_encoder_2", "tokenizer_2", "scheduler"):
        shutil.copytree(sdxl_dir / part, out_dir / part, dirs_exist_ok=True)
    config = dict(UNet2DConditionModel.load_config(sdxl_dir / "unet"))
    config.update(cross_attention_dim=TEXT2_HIDDEN, projection_class_embeddings_input_dim=TEXT2_HIDDEN + 5 * TIME_EMBED_DIM)
    torch.manual_seed(seed)
    UNet2DConditionModel.from_config(config).save_pretrained(out_dir / "unet")
    index = json.loads((sdxl_dir / "model_index.json").read_text())
    index.update(_class_name="StableDiffusionXLImg2ImgPipeline", text_encoder=[None, None], tokenizer=[None, None],
                 requires_aesthetics_score=True, force_zeros_for_empty_prompt=False)
    (out_dir / "model_index.json").write_text(json.dumps(index))
    return out_dir


def save_refiner_single_file(folder: Path | str, out_file: Path | str) -> Path:
    """The refiner folder (:func:`tiny_refiner`) as one file in the original layout, as
    ``sd_xl_refiner_1.0.safetensors`` ships: its OpenCLIP-G under ``conditioner.embedders.0.model.``."""
    from safetensors.torch import load_file, save_file

    from tests.support.tiny_models import open_clip_state

    folder, out_file = Path(folder), Path(out_file)
    config = json.loads((folder / "unet" / "config.json").read_text())
    state = {"model.diffusion_model." + unet_key_to_ldm(k, config): v
             for k, v in load_file(folder / "unet" / "diffusion_pytorch_model.safetensors").items()}
    blocks = len(_vae_blocks(folder))
    for k, v in load_file(folder / "vae" / "diffusion_pytorch_model.safetensors").items():
        state["first_stage_model." + vae_key_to_ldm(k, blocks)] = _vae_value_to_ldm(k, v)
    for k, v in open_clip_state(load_file(folder / "text_encoder_2" / "model.safetensors")).items():
        state["conditioner.embedders.0.model." + k] = v
    out_file.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, out_file)
    return out_file
