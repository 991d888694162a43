"""Loading Stable Diffusion models (SD 1.x, SD 2.x, SDXL, the bundled model), offline.

Two sources: a diffusers folder (``model_index.json`` with ``unet/``, ``vae/``, ...) and a
single checkpoint file in the original layout (``.safetensors``; ``.ckpt``/``.pt``/``.bin``
only through ``torch.load(weights_only=True)``, which never runs code from the file).
Single files carry no configs and no tokenizer: the family is detected from the weights
and the configs and CLIP vocabulary that ship in ``configs/`` fill the gaps, so nothing
is ever fetched from a hub.

Models are built on the ``meta`` device and take the loaded tensors as their
parameters (``assign=True``): no random initialisation, no second copy of the weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from nodes.diffusion.impl import ldm as _ldm
from nodes.diffusion.impl.ldm import CheckpointError
from nodes.diffusion.types import ModelFamily

CONFIG_DIR = Path(__file__).parents[1] / "configs"
FAMILIES = ("sd1", "sd2", "sdxl")
PREDICTIONS = ("auto", "epsilon", "v_prediction")
DTYPES = ("auto", "fp32", "fp16", "bf16")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


@dataclass
class LoadedCheckpoint:
    """Everything a checkpoint holds, ready for the nodes to wrap in link values."""

    family: ModelFamily
    unet: Any
    vae: Any
    tokenizers: list[Any]
    text_encoders: list[Any]
    scheduler_config: dict[str, Any]
    dtype: torch.dtype
    vision: Any = None
    folder: Path | None = None  # a diffusers folder, for extras such as vae/latent_rgb.json
    pad_token_ids: list[int] = field(default_factory=list)


def resolve_dtype(choice: str, device: str) -> torch.dtype:
    """``auto`` is fp16 on CUDA and fp32 elsewhere (CPU bf16 is several times slower than fp32)."""
    if choice == "auto":
        return torch.float16 if str(device).startswith("cuda") else torch.float32
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[choice]


# -- reading files -------------------------------------------------------------------------


def read_state_dict(path: Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    """All tensors of a weights file. Pickle-based formats are read weights-only."""
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path, device=str(device))
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"{path.name} is not a readable .safetensors file ({error})") from None
    if path.suffix.lower() in PICKLE_SUFFIXES:
        import pickle
        import zipfile

        try:
            # weights_only: the unpickler accepts tensors and plain containers, nothing that runs code.
            data = torch.load(path, map_location=device, weights_only=True, mmap=zipfile.is_zipfile(path))
        except pickle.UnpicklingError:  # also what garbage gives: the two look alike
            raise CheckpointError(
                f"{path.name} is not a plain weights file: unreadable, or holding objects whose unpickling "
                "would run code from the file, which is never done; convert it to .safetensors"
            ) from None
        except (RuntimeError, OSError, EOFError, ValueError) as error:
            raise CheckpointError(f"{path.name} is not a readable weights file ({error})") from None
        if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
            data = data["state_dict"]
        if not isinstance(data, dict):
            raise CheckpointError(f"{path.name} holds no state dict")
        return {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    raise CheckpointError(f"{path.name}: unsupported file type {path.suffix!r} (use .safetensors)")


# -- family detection ----------------------------------------------------------------------


def detect_family(state: Mapping[str, Any]) -> str:
    """``"sd1"``, ``"sd2"`` or ``"sdxl"`` from the key names (text encoders) and, for a
    lone UNet, its cross-attention width and extra embeddings. Values need only ``.shape``."""
    if _ldm.has_prefix(state, "conditioner.embedders.1."):
        return "sdxl"
    if _ldm.has_prefix(state, _ldm.OPEN_CLIP["sdxl_refiner"]):
        return "sdxl_refiner"
    if _ldm.has_prefix(state, _ldm.OPEN_CLIP["sd2"]):
        return "sd2"
    if _ldm.has_prefix(state, "cond_stage_model.transformer."):
        return "sd1"
    # No text encoder: decide from the UNet alone.
    to_k = next((k for k in state if k.startswith(_ldm.UNET) and k.endswith("attn2.to_k.weight")), None)
    if _ldm.UNET + "label_emb.0.0.weight" in state:
        # The refiner cross-attends to OpenCLIP-G alone (1280 wide), the base to both encoders.
        return "sdxl_refiner" if to_k is not None and int(state[to_k].shape[1]) == 1280 else "sdxl"
    if to_k is None:
        raise CheckpointError("not a Stable Diffusion checkpoint: no UNet cross-attention weights in the original layout")
    return {1024: "sd2", 2048: "sdxl"}.get(int(state[to_k].shape[1]), "sd1")


def detect_prediction(state: Mapping[str, Any], family: str) -> str:
    """What the UNet predicts. Only SD 2.x is ambiguous (768-v vs 512-base).

    A ``v_pred`` marker key (written by some tools) decides; otherwise SD 2.x v-models are
    recognised by a heuristic: fine-tuning on v-targets leaves the last output block's
    first norm bias with a much larger spread (std > 0.09) than epsilon training does.
    Wrong guesses are fixed with the node's ``prediction`` widget."""
    if "v_pred" in state:
        return "v_prediction"
    if family != "sd2":
        return "epsilon"
    keys = [k for k in state if k.startswith(_ldm.UNET + "output_blocks.") and k.endswith("transformer_blocks.0.norm1.bias")]
    if not keys:
        return "epsilon"
    last = max(keys, key=lambda k: int(k.split(".")[3]))
    return "v_prediction" if float(state[last].float().std(unbiased=False)) > 0.09 else "epsilon"


def make_family(name: str, vae_config: Mapping[str, Any] | None, latent_channels: int = 4) -> ModelFamily:
    if vae_config is not None:
        latent_channels = int(vae_config.get("latent_channels", latent_channels))
        factor = 2 ** (len(vae_config.get("block_out_channels", (0,) * 4)) - 1)
    else:
        factor = 8
    return ModelFamily(name, latent_channels=latent_channels, vae_scale_factor=factor, uses_pooled=name in ("sdxl", "sdxl_refiner"))


def folder_family(folder: Path) -> str:
    """Family of a diffusers folder: declared (``_nodeflow_family``) or read from the UNet config."""
    index = _read_json(folder / "model_index.json") if (folder / "model_index.json").is_file() else {}
    if index.get("_nodeflow_family"):
        return str(index["_nodeflow_family"])
    unet = _read_json(_unet_folder(folder) / "config.json")
    if unet.get("addition_embed_type") == "text_time":
        return "sdxl" if (folder / "text_encoder").is_dir() or not (folder / "text_encoder_2").is_dir() else "sdxl_refiner"
    text = folder / "text_encoder" / "config.json"
    # SD 2.x's OpenCLIP encoder uses plain GELU where OpenAI's CLIP (SD 1.x) uses quick GELU.
    if text.is_file():
        return "sd2" if _read_json(text).get("hidden_act") == "gelu" else "sd1"
    return "sd2" if unet.get("cross_attention_dim") == 1024 else "sd1"


# -- building models -----------------------------------------------------------------------


def _diffusers_model(cls: Any, config: Mapping[str, Any], weights: Mapping[str, torch.Tensor], dtype: torch.dtype, device: str) -> Any:
    """A diffusers model from its config and diffusers-named weights, without random init."""
    with torch.device("meta"):
        model = cls.from_config(dict(config))
    weights = {k: v.to(device=device, dtype=dtype) for k, v in weights.items()}
    missing, unexpected = model.load_state_dict(weights, strict=False, assign=True)
    if missing or unexpected:
        raise CheckpointError(
            f"{cls.__name__} weights do not fit the architecture: "
            f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    leftover = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:
        raise CheckpointError(f"{cls.__name__}: no weights for {leftover[:5]}")
    return model.eval()


def _text_model(cls: Any, config: Mapping[str, Any], weights: Mapping[str, torch.Tensor], dtype: torch.dtype, device: str) -> Any:
    from transformers import CLIPTextConfig

    model, info = cls.from_pretrained(
        None, config=CLIPTextConfig(**config), state_dict=dict(weights), dtype=dtype, output_loading_info=True
    )
    bad = [k for k in info.get("missing_keys", ()) if "position_ids" not in k]
    if bad:
        raise CheckpointError(f"text encoder weights are incomplete: missing {sorted(bad)[:5]}")
    return model.to(device).eval()


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _vae_dtype(config: Mapping[str, Any], dtype: torch.dtype) -> torch.dtype:
    # The SDXL VAE overflows in fp16 (its config says force_upcast): keep it in fp32.
    return torch.float32 if dtype == torch.float16 and config.get("force_upcast") else dtype


# -- single files --------------------------------------------------------------------------


def _family_configs(family: str, prediction: str) -> Path:
    """The shipped config folder for ``family``; SD 1.x's for families without one."""
    name = "sd2-base" if family == "sd2" and prediction == "epsilon" else family
    if name == "sdxl_refiner":  # the base's configs; the refiner's differences are read from its weights
        name = "sdxl"
    return CONFIG_DIR / (name if name in ("sd1", "sd2", "sd2-base", "sdxl") else "sd1")


def _scheduler_config(folder: Path, prediction: str) -> dict[str, Any]:
    config = _read_json(folder / "scheduler" / "scheduler_config.json")
    if prediction != "auto":
        config["prediction_type"] = prediction
    return config


def load_single_file(path: Path, dtype: torch.dtype, device: str, prediction: str = "auto") -> LoadedCheckpoint:
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from nodes.diffusion.impl.tokenizer import PAD_END, PAD_ZERO, clip_tokenizer

    _quiet_transformers()
    state = read_state_dict(path, device)
    unet, family, chosen, configs = _original_layout_unet(state, dtype, device, prediction)
    vae_cfg = _ldm.vae_config(state, _read_json(configs / "vae" / "config.json"))
    vae = _diffusers_model(AutoencoderKL, vae_cfg, _ldm.convert_vae(state, vae_cfg), _vae_dtype(vae_cfg, dtype), device)

    encoders, tokenizers = [], []
    if family in _ldm.CLIP_L:
        prefix = _ldm.CLIP_L[family]
        if not _ldm.has_prefix(state, prefix):
            raise CheckpointError(f"{path.name} has no text encoder weights ({prefix}*)")
        cfg = _ldm.clip_config(state, prefix, _read_json(configs / "text_encoder" / "config.json"))
        encoders.append(_text_model(CLIPTextModel, cfg, _ldm.convert_clip(state, prefix), dtype, device))
        tokenizers.append(clip_tokenizer(PAD_END))
    if family in _ldm.OPEN_CLIP:
        prefix = _ldm.OPEN_CLIP[family]
        if not _ldm.has_prefix(state, prefix):
            raise CheckpointError(f"{path.name} has no OpenCLIP text encoder weights ({prefix}*)")
        sub = "text_encoder_2" if family in ("sdxl", "sdxl_refiner") else "text_encoder"
        cls = CLIPTextModelWithProjection if family in ("sdxl", "sdxl_refiner") else CLIPTextModel
        cfg = _ldm.open_clip_config(state, prefix, _read_json(configs / sub / "config.json"), drop_last=family == "sd2")
        weights = _ldm.convert_open_clip(state, prefix, cfg, with_projection=cls is CLIPTextModelWithProjection)
        encoders.append(_text_model(cls, cfg, weights, dtype, device))
        tokenizers.append(clip_tokenizer(PAD_ZERO))

    return LoadedCheckpoint(
        family=make_family(family, vae_cfg),
        unet=unet,
        vae=vae,
        tokenizers=tokenizers,
        text_encoders=encoders,
        scheduler_config=_scheduler_config(configs, chosen),
        dtype=dtype,
        pad_token_ids=[t.pad_token_id for t in tokenizers],
    )


def _original_layout_unet(
    state: Mapping[str, Any], dtype: torch.dtype, device: str, prediction: str
) -> tuple[Any, str, str, Path]:
    """The UNet of an original-layout (single-file) state dict, with the detected family,
    the prediction type in force and the shipped config folder used; shared by full
    checkpoints and UNet-only files."""
    from diffusers import UNet2DConditionModel

    family = detect_family(state)
    chosen = detect_prediction(state, family) if prediction == "auto" else prediction
    configs = _family_configs(family, chosen)
    config = _ldm.unet_config(
        state, _read_json(configs / "unet" / "config.json"), family, _pooled_dim(state),
        time_ids=5 if family == "sdxl_refiner" else 6,
    )
    _refuse_inpainting(config)
    unet = _diffusers_model(UNet2DConditionModel, config, _ldm.convert_unet(state, config), dtype, device)
    return unet, family, chosen, configs


def _pooled_dim(state: Mapping[str, Any]) -> int | None:
    projection = state.get(_ldm.OPEN_CLIP["sdxl"] + "text_projection")
    if projection is None:
        projection = state.get(_ldm.OPEN_CLIP["sdxl_refiner"] + "text_projection")
    return int(projection.shape[1]) if projection is not None else None


def _refuse_inpainting(config: Mapping[str, Any]) -> None:
    # 9 = 4 latent + 1 mask + 4 masked-image latent: an inpainting model (impl/inpaint.py).
    if config["in_channels"] not in (4, 9):
        raise CheckpointError(
            f"the UNet takes {config['in_channels']} input channels (a special model such as an instruct-pix2pix "
            "or depth model); text-to-image (4) and inpainting (9) models are supported"
        )


# -- diffusers folders ---------------------------------------------------------------------


def _unet_folder(folder: Path) -> Path:
    return folder / "unet" if (folder / "unet" / "config.json").is_file() else folder


def _diffusers_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The weights of one diffusers component folder (plain, fp16 variant or sharded)."""
    for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"):
        if (folder / name).is_file():
            return read_state_dict(folder / name)
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    if index.is_file():
        weights: dict[str, torch.Tensor] = {}
        for shard in sorted(set(_read_json(index)["weight_map"].values())):
            weights.update(read_state_dict(folder / shard))
        return weights
    if (folder / "diffusion_pytorch_model.bin").is_file():
        return read_state_dict(folder / "diffusion_pytorch_model.bin")
    raise CheckpointError(f"no weights in {folder} (expected diffusion_pytorch_model.safetensors)")


def _component(folder: Path, cls: Any, dtype: torch.dtype, device: str) -> Any:
    config = _read_json(folder / "config.json")
    if cls.__name__ == "AutoencoderKL":
        dtype = _vae_dtype(config, dtype)
    return _diffusers_model(cls, config, _diffusers_weights(folder), dtype, device)


def load_folder(folder: Path, dtype: torch.dtype, device: str, prediction: str = "auto") -> LoadedCheckpoint:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTokenizer

    _quiet_transformers()
    if not (folder / "model_index.json").is_file():
        raise CheckpointError(f"{folder} is not a diffusers model folder (no model_index.json)")
    index = _read_json(folder / "model_index.json")
    family = folder_family(folder)
    unet = _component(folder / "unet", UNet2DConditionModel, dtype, device)
    vae = _component(folder / "vae", AutoencoderKL, dtype, device)

    tokenizers, encoders = [], []
    for tok_name, enc_name in (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2")):
        if (folder / enc_name).is_dir():
            encoders.append(_transformers_model(index, enc_name, folder, dtype, device))
            tokenizers.append(CLIPTokenizer.from_pretrained(folder / tok_name, local_files_only=True))
    vision = None
    if (folder / "image_encoder").is_dir() and (index.get("image_encoder") or [None, None])[1]:
        vision = _transformers_model(index, "image_encoder", folder, dtype, device)

    return LoadedCheckpoint(
        family=make_family(family, vae.config),
        unet=unet,
        vae=vae,
        tokenizers=tokenizers,
        text_encoders=encoders,
        scheduler_config=_scheduler_config(folder, prediction),
        dtype=dtype,
        vision=vision,
        folder=folder,
        pad_token_ids=[t.pad_token_id for t in tokenizers],
    )


def _transformers_model(index: Mapping[str, Any], name: str, folder: Path, dtype: torch.dtype, device: str) -> Any:
    import transformers

    class_name = (index.get(name) or [None, None])[1] or "CLIPTextModel"
    cls = getattr(transformers, class_name, None)
    if cls is None or not class_name.startswith("CLIP"):
        raise CheckpointError(f"{folder.name}/{name}: unsupported model class {class_name!r}")
    # Hub snapshots sometimes hold only the half-precision variant.
    variant = "fp16" if (folder / name / "model.fp16.safetensors").is_file() and not any(
        (folder / name / f).is_file() for f in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
    ) else None
    return cls.from_pretrained(folder / name, dtype=dtype, variant=variant, local_files_only=True).to(device).eval()


# -- entry points --------------------------------------------------------------------------


def load_checkpoint(path: Path, dtype: torch.dtype, device: str, prediction: str = "auto") -> LoadedCheckpoint:
    """A whole model from a diffusers folder or a single checkpoint file."""
    if path.is_dir():
        return load_folder(path, dtype, device, prediction)
    return load_single_file(path, dtype, device, prediction)


@dataclass
class LoadedUNet:
    unet: Any
    family: ModelFamily
    scheduler_config: dict[str, Any]


def load_unet(path: Path, dtype: torch.dtype, device: str, prediction: str = "auto") -> LoadedUNet:
    """Only the UNet, from a diffusers folder (pipeline or ``unet`` folder) or a single file
    (full checkpoint or UNet-only, original layout)."""
    from diffusers import UNet2DConditionModel

    if path.is_dir():
        unet = _component(_unet_folder(path), UNet2DConditionModel, dtype, device)
        if (path / "model_index.json").is_file():
            family, scheduler = folder_family(path), _scheduler_config(path, prediction)
        else:
            family = folder_family(path)
            scheduler = _scheduler_config(_family_configs(family, prediction), prediction)
        return LoadedUNet(unet, make_family(family, None, _latent_channels(unet)), scheduler)

    state = read_state_dict(path, device)
    if "conv_in.weight" in state and (path.parent / "config.json").is_file():
        # diffusers-named weights picked from inside a diffusers unet folder
        config = _read_json(path.parent / "config.json")
        unet = _diffusers_model(UNet2DConditionModel, config, state, dtype, device)
        family = folder_family(path.parent)
        scheduler = _scheduler_config(_family_configs(family, prediction), prediction)
        return LoadedUNet(unet, make_family(family, None, _latent_channels(unet)), scheduler)
    if not _ldm.has_prefix(state, _ldm.UNET):
        state = {_ldm.UNET + k: v for k, v in state.items()}  # a bare UNet in the original layout
    unet, family, chosen, configs = _original_layout_unet(state, dtype, device, prediction)
    return LoadedUNet(unet, make_family(family, None, _latent_channels(unet)), _scheduler_config(configs, chosen))


def _latent_channels(unet: Any) -> int:
    """An inpainting UNet's 9 inputs are 4 latent channels, a mask and a 4-channel masked image."""
    channels = int(unet.config.in_channels)
    return 4 if channels == 9 else channels


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"missing {path}") from None
