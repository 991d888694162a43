"""Loading Stable Diffusion models (SD 1.x, SD 2.x, SDXL, the bundled model), offline.

Two sources: a diffusers folder (``model_index.json`` with ``unet/``, ``vae/``, ...) and a
single checkpoint file in the original layout (``.safetensors``; ``.ckpt``/``.pt``/``.bin``
only through ``torch.load(weights_only=True)``, which never runs code from the file).
Single files carry no configs and no tokenizer: the family is detected from the weights
and the configs and CLIP vocabulary that ship in ``configs/`` fill the gaps, so nothing
is ever fetched from a hub.

Models are built on the ``meta`` device and take the loaded tensors as their
parameters (``assign=True``): no random initialisation, no second copy of the weights,
and no allocation that a model folder's ``config.json`` alone could make huge.

A model folder is untrusted: every file is read through a :class:`ModelFiles` (only
inside the allowed folders, through a checked descriptor), and every malformed file is
a :class:`CheckpointError` naming it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from nodes.diffusion.impl import ldm as _ldm
from nodes.diffusion.impl.ldm import CheckpointError
from nodes.diffusion.impl.mapped import MappedFile, adopt, map_file
from nodes.diffusion.impl.paths import ModelFileError, ModelFiles
from nodes.diffusion.types import ModelFamily

CONFIG_DIR = Path(__file__).parents[1] / "configs"
SHIPPED = ModelFiles((CONFIG_DIR,))  # the configs and vocabulary this pack ships
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
    image_stats: tuple[torch.Tensor, torch.Tensor] | None = None  # an unCLIP folder's image normaliser


def resolve_dtype(choice: str, device: str) -> torch.dtype:
    """``auto`` is fp16 on CUDA and fp32 elsewhere (CPU bf16 is several times slower than fp32)."""
    if choice == "auto":
        return torch.float16 if str(device).startswith("cuda") else torch.float32
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[choice]


# -- reading files -------------------------------------------------------------------------


def read_state_dict(path: Path, device: str = "cpu", files: ModelFiles | None = None,
                    wrappers: tuple[str, ...] = ("state_dict",)) -> dict[str, torch.Tensor]:
    """All tensors of a weights file, read through ``files`` (by default confined to the
    file's own folder). Pickle-based formats are read weights-only; a pickled dict whose
    weights sit under one of ``wrappers`` (e.g. ``{"state_dict": {...}}``) is unwrapped."""
    import os

    from nodeflow import descriptor_path

    suffix = path.suffix.lower()
    if suffix != ".safetensors" and suffix not in PICKLE_SUFFIXES:
        raise CheckpointError(f"{path.name}: unsupported file type {path.suffix!r} (use .safetensors)")
    fd = _open(files or ModelFiles.around(path), path)
    try:
        # The libraries take a name: /proc/self/fd/N names exactly the checked file.
        return _read_weights(path, descriptor_path(fd, path), device, wrappers)
    finally:
        os.close(fd)


def read_mapped(path: Path, device: str = "cpu", files: ModelFiles | None = None) -> tuple[dict[str, torch.Tensor], MappedFile | None]:
    """Like :func:`read_state_dict`, but a ``.safetensors`` file is memory-mapped: its
    tensors are views of the file (see :mod:`~nodes.diffusion.impl.mapped`), to be copied
    into a model with :func:`~nodes.diffusion.impl.mapped.adopt`, which releases their pages."""
    import os

    if path.suffix.lower() != ".safetensors":
        return read_state_dict(path, device, files), None
    fd = _open(files or ModelFiles.around(path), path)
    try:
        mapped = map_file(fd, path)
    finally:
        os.close(fd)
    return mapped.tensors, mapped


def _read_weights(path: Path, name: str, device: str, wrappers: tuple[str, ...] = ("state_dict",)) -> dict[str, torch.Tensor]:
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(name, device=str(device))
        except (SafetensorError, OSError, RuntimeError, ValueError) as error:
            raise CheckpointError(f"{path.name} is not a readable .safetensors file ({_first_line(error)})") from None
    if path.suffix.lower() in PICKLE_SUFFIXES:
        import pickle
        import zipfile

        try:
            # weights_only: the unpickler accepts tensors and plain containers, nothing that runs code.
            data = torch.load(name, map_location=device, weights_only=True, mmap=zipfile.is_zipfile(name))
        except pickle.UnpicklingError:  # also what garbage gives: the two look alike
            raise CheckpointError(
                f"{path.name} is not a plain weights file: unreadable, or holding objects whose unpickling "
                "would run code from the file, which is never done; convert it to .safetensors"
            ) from None
        except (RuntimeError, OSError, EOFError, ValueError, TypeError, AttributeError) as error:
            # torch's own message may suggest weights_only=False, which would run the file's code: not shown.
            raise CheckpointError(f"{path.name} is not a readable weights file ({type(error).__name__})") from None
        wrapper = next((w for w in wrappers if isinstance(data, dict) and isinstance(data.get(w), dict)), None)
        if wrapper is not None:
            data = data[wrapper]
        if not isinstance(data, dict):
            raise CheckpointError(f"{path.name} holds no state dict")
        return {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    raise CheckpointError(f"{path.name}: unsupported file type {path.suffix!r} (use .safetensors)")


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0][:200]


def _open(files: ModelFiles, path: Path) -> int:
    try:
        return files.open(path)
    except ModelFileError as error:
        raise CheckpointError(str(error)) from None


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
    if _ldm.UNET + "label_emb.0.0.weight" in state and (to_k is None or int(state[to_k].shape[1]) != 1024):
        # The refiner cross-attends to OpenCLIP-G alone (1280 wide), the base to both encoders
        # (a 1024-wide UNet with a label embedding is SD 2.1 unCLIP).
        return "sdxl_refiner" if to_k is not None and int(state[to_k].shape[1]) == 1280 else "sdxl"
    if to_k is None:
        raise CheckpointError("not a Stable Diffusion checkpoint: no UNet cross-attention weights in the original layout")
    width = int(state[to_k].shape[1])
    if width in (768, 1024, 2048):
        return {768: "sd1", 1024: "sd2", 2048: "sdxl"}[width]
    # A narrower UNet than the published ones: SD 2.x projects attention with linear layers, SD 1.x with 1x1 convolutions.
    proj_in = next((k for k in state if k.startswith(_ldm.UNET) and k.endswith(".proj_in.weight")), None)
    return "sd2" if proj_in is not None and len(state[proj_in].shape) == 2 else "sd1"


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
    if _ldm.UNET + "label_emb.0.0.weight" in state:
        return "v_prediction"  # SD 2.1 unCLIP (-h and -l) predicts v
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


def folder_family(folder: Path, files: ModelFiles | None = None) -> str:
    """Family of a diffusers folder: declared (``_nodeflow_family``) or read from the UNet config."""
    files = files or ModelFiles.around(folder)
    index = _read_json(folder / "model_index.json", files) if (folder / "model_index.json").is_file() else {}
    if index.get("_nodeflow_family"):
        return str(index["_nodeflow_family"])
    unet = _read_json(_unet_folder(folder) / "config.json", files)
    if unet.get("addition_embed_type") == "text_time":
        return "sdxl" if (folder / "text_encoder").is_dir() or not (folder / "text_encoder_2").is_dir() else "sdxl_refiner"
    text = folder / "text_encoder" / "config.json"
    # SD 2.x's OpenCLIP encoder uses plain GELU where OpenAI's CLIP (SD 1.x) uses quick GELU.
    if text.is_file():
        return "sd2" if _read_json(text, files).get("hidden_act") == "gelu" else "sd1"
    return "sd2" if unet.get("cross_attention_dim") == 1024 else "sd1"


# -- building models -----------------------------------------------------------------------


MAX_TRAIN_TIMESTEPS = 100_000
MAX_CONFIG_LIST = 64  # entries in any list of a model config (blocks, channels per level)
MAX_CONFIG_COUNT = 1024  # layers, blocks, heads: counts of modules a config asks to build
MAX_CONFIG_INT = 2**31


def _check_config(config: Mapping[str, Any], what: str) -> None:
    """Refuse config values that would make even a meta-device build take hours: a list of
    a million blocks, a million layers. Sizes of tensors are left to the weights check."""
    stack: list[tuple[str, Any]] = list(config.items())
    while stack:
        key, value = stack.pop()
        if isinstance(value, (list, tuple)):
            if len(value) > MAX_CONFIG_LIST:
                raise CheckpointError(f"{what} config: {key!r} has {len(value):,} entries (at most {MAX_CONFIG_LIST})")
            stack.extend((key, item) for item in value)
        elif isinstance(value, int) and not isinstance(value, bool):
            counts = ("layers", "blocks", "heads", "depth", "num_")
            limit = MAX_CONFIG_COUNT if any(word in key for word in counts) and "timesteps" not in key else MAX_CONFIG_INT
            if not -MAX_CONFIG_INT <= value <= limit:
                raise CheckpointError(f"{what} config: {key!r} is {value:,}, more than this loader builds ({limit:,})")


def _diffusers_model(cls: Any, config: Mapping[str, Any], weights: Mapping[str, torch.Tensor], dtype: torch.dtype, device: str,
                     source: MappedFile | None = None) -> Any:
    """A diffusers model from its config and diffusers-named weights, without random init;
    weights that are views of ``source`` are copied (and their pages released)."""
    _check_config(config, cls.__name__)
    try:
        with torch.device("meta"):
            model = cls.from_config(dict(config))
    except Exception as error:  # any shape of config a library chokes on: the file's fault
        raise CheckpointError(f"its config.json does not describe a {cls.__name__} ({_first_line(error)})") from None
    weights = {k: adopt(v, device, dtype, source) for k, v in weights.items()}
    missing, unexpected = _assign(model, weights, cls.__name__)
    if missing or unexpected:
        raise CheckpointError(
            f"{cls.__name__} weights do not fit the architecture: "
            f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    leftover = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:
        raise CheckpointError(f"{cls.__name__}: no weights for {leftover[:5]}")
    return model.eval()


def _assign(model: Any, weights: Mapping[str, torch.Tensor], what: str) -> tuple[list[str], list[str]]:
    """Load ``weights`` into a meta-device ``model``; a shape that does not fit is the file's error."""
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False, assign=True)
    except RuntimeError as error:  # size mismatch: the config and the weights disagree
        lines = [line.strip() for line in str(error).splitlines() if "size mismatch" in line] or [_first_line(error)]
        raise CheckpointError(f"{what} weights do not fit its config: {lines[0][:300]}") from None
    return list(missing), list(unexpected)


def _text_model(cls: Any, config: Mapping[str, Any], weights: Mapping[str, torch.Tensor], dtype: torch.dtype, device: str,
                source: MappedFile | None = None) -> Any:
    """A CLIP text (or vision) model from its config and weights, built on the meta device
    like the diffusers models: a config declaring a 30-million-token vocabulary costs
    nothing until the weights are found not to fit it."""
    import transformers

    config_cls = getattr(transformers, cls.__name__.replace("WithProjection", "").replace("Model", "Config"), None)
    config_cls = config_cls or transformers.CLIPTextConfig
    _check_config(config, cls.__name__)
    try:
        built = config_cls(**{k: v for k, v in config.items() if not k.startswith("_")})
        with torch.device("meta"):
            model = cls._from_config(built, dtype=dtype)
    except Exception as error:  # any shape of config transformers chokes on: the file's fault
        raise CheckpointError(f"its config.json does not describe a {cls.__name__} ({_first_line(error)})") from None
    weights = {k: adopt(v, "cpu", dtype, source) for k, v in weights.items()}
    missing, unexpected = _assign(model, weights, cls.__name__)
    bad = [k for k in missing if "position_ids" not in k]
    if bad:
        raise CheckpointError(f"text encoder weights are incomplete: missing {sorted(bad)[:5]}")
    for name, buffer in list(model.named_buffers()):
        if buffer.is_meta and name.endswith("position_ids"):  # not stored in files: the positions 0..n-1
            owner = model.get_submodule(name.rsplit(".", 1)[0])
            rows = owner.position_embedding.weight.shape[0]
            owner.register_buffer("position_ids", torch.arange(rows).expand((1, -1)), persistent=False)
    leftover = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:
        raise CheckpointError(f"{cls.__name__}: no weights for {leftover[:5]}")
    return model.to(device).eval()


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _vae_dtype(config: Mapping[str, Any], dtype: torch.dtype) -> torch.dtype:
    # The SD 1.x and SDXL VAEs overflow to NaN in fp16: keep them in fp32 unless the config
    # says otherwise (force_upcast: false, e.g. a fixed fp16 VAE); diffusers' default is True,
    # and SD 1.x's shipped config, like many files' own, does not say.
    return torch.float32 if dtype == torch.float16 and config.get("force_upcast", True) else dtype


# -- single files --------------------------------------------------------------------------


def _family_configs(family: str, prediction: str) -> Path:
    """The shipped config folder for ``family``; SD 1.x's for families without one."""
    name = "sd2-base" if family == "sd2" and prediction == "epsilon" else family
    if name == "sdxl_refiner":  # the base's configs; the refiner's differences are read from its weights
        name = "sdxl"
    return CONFIG_DIR / (name if name in ("sd1", "sd2", "sd2-base", "sdxl") else "sd1")


def _scheduler_config(folder: Path, prediction: str, files: ModelFiles = SHIPPED) -> dict[str, Any]:
    config = _read_json(folder / "scheduler" / "scheduler_config.json", files)
    timesteps = config.get("num_train_timesteps", 1000)
    if not (isinstance(timesteps, int) and not isinstance(timesteps, bool) and 1 <= timesteps <= MAX_TRAIN_TIMESTEPS):
        raise CheckpointError(
            f"scheduler/scheduler_config.json: num_train_timesteps must be a whole number from 1 to "
            f"{MAX_TRAIN_TIMESTEPS:,}"
        )
    for key in ("beta_start", "beta_end"):
        if key in config and (isinstance(config[key], bool) or not isinstance(config[key], (int, float))):
            raise CheckpointError(f"scheduler/scheduler_config.json: {key} must be a number")
    if prediction != "auto":
        config["prediction_type"] = prediction
    return config


def load_single_file(
    path: Path, dtype: torch.dtype, device: str, prediction: str = "auto", files: ModelFiles | None = None
) -> LoadedCheckpoint:
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from nodes.diffusion.impl.tokenizer import PAD_END, PAD_ZERO, clip_tokenizer

    _quiet_transformers()
    state, source = read_mapped(path, device, files)
    unet, family, chosen, configs = _original_layout_unet(state, dtype, device, prediction, source)
    vae_cfg = _ldm.vae_config(state, _read_json(configs / "vae" / "config.json", SHIPPED))
    vae = _diffusers_model(AutoencoderKL, vae_cfg, _ldm.convert_vae(state, vae_cfg), _vae_dtype(vae_cfg, dtype), device,
                           source)

    encoders, tokenizers = [], []
    if family in _ldm.CLIP_L:
        prefix = _ldm.CLIP_L[family]
        if not _ldm.has_prefix(state, prefix):
            raise CheckpointError(f"{path.name} has no text encoder weights ({prefix}*)")
        cfg = _ldm.clip_config(state, prefix, _read_json(configs / "text_encoder" / "config.json", SHIPPED))
        encoders.append(_text_model(CLIPTextModel, cfg, _ldm.convert_clip(state, prefix), dtype, device, source))
        tokenizers.append(clip_tokenizer(PAD_END))
    if family in _ldm.OPEN_CLIP:
        prefix = _ldm.OPEN_CLIP[family]
        if not _ldm.has_prefix(state, prefix):
            raise CheckpointError(f"{path.name} has no OpenCLIP text encoder weights ({prefix}*)")
        sub = "text_encoder_2" if family in ("sdxl", "sdxl_refiner") else "text_encoder"
        cls = CLIPTextModelWithProjection if family in ("sdxl", "sdxl_refiner") else CLIPTextModel
        cfg = _ldm.open_clip_config(state, prefix, _read_json(configs / sub / "config.json", SHIPPED), drop_last=family == "sd2")
        weights = _ldm.convert_open_clip(state, prefix, cfg, with_projection=cls is CLIPTextModelWithProjection)
        encoders.append(_text_model(cls, cfg, weights, dtype, device, source))
        tokenizers.append(clip_tokenizer(PAD_ZERO))
    if source is not None:
        source.release_all()  # what the models did not take (an EMA copy, a second VAE) leaves RSS too

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
    state: Mapping[str, Any], dtype: torch.dtype, device: str, prediction: str, source: MappedFile | None = None
) -> tuple[Any, str, str, Path]:
    """The UNet of an original-layout (single-file) state dict, with the detected family,
    the prediction type in force and the shipped config folder used; shared by full
    checkpoints and UNet-only files."""
    from diffusers import UNet2DConditionModel

    family = detect_family(state)
    chosen = detect_prediction(state, family) if prediction == "auto" else prediction
    configs = _family_configs(family, chosen)
    time_ids = 5 if family == "sdxl_refiner" else 6
    pooled = _pooled_dim(state)
    added, to_k = state.get(_ldm.UNET + "label_emb.0.0.weight"), next(
        (k for k in state if k.startswith(_ldm.UNET) and k.endswith("attn2.to_k.weight")), None)
    if pooled is None and added is not None and to_k is not None and family in ("sdxl", "sdxl_refiner"):
        pooled = _pooled_width(int(added.shape[1]), int(state[to_k].shape[1]), time_ids)  # a UNet-only file
    config = _ldm.unet_config(
        state, _read_json(configs / "unet" / "config.json", SHIPPED), family, pooled, time_ids=time_ids,
    )
    _refuse_inpainting(config)
    unet = _diffusers_model(UNet2DConditionModel, config, _ldm.convert_unet(state, config), dtype, device, source)
    return unet, family, chosen, configs


def _pooled_dim(state: Mapping[str, Any]) -> int | None:
    projection = state.get(_ldm.OPEN_CLIP["sdxl"] + "text_projection")
    if projection is None:
        projection = state.get(_ldm.OPEN_CLIP["sdxl_refiner"] + "text_projection")
    return int(projection.shape[1]) if projection is not None else None


def _refuse_inpainting(config: Mapping[str, Any]) -> None:
    # 9 = 4 latent + 1 mask + 4 masked-image latent: an inpainting model; 8 = 4 latent + the
    # 4-channel latent of the image to edit: an InstructPix2Pix model (impl/inpaint.py).
    if config["in_channels"] not in (4, 8, 9):
        raise CheckpointError(
            f"the UNet takes {config['in_channels']} input channels (a special model such as a depth model); "
            "text-to-image (4), InstructPix2Pix (8) and inpainting (9) models are supported"
        )


# -- diffusers folders ---------------------------------------------------------------------


def _unet_folder(folder: Path) -> Path:
    return folder / "unet" if (folder / "unet" / "config.json").is_file() else folder


def _folder_weights(folder: Path, files: ModelFiles, stem: str = "diffusion_pytorch_model",
                    pickled: str = "diffusion_pytorch_model.bin") -> dict[str, torch.Tensor]:
    """The weights of one component folder (plain, fp16 variant or sharded), every file
    (each shard the index names too) read through ``files``."""
    for name in (f"{stem}.safetensors", f"{stem}.fp16.safetensors"):
        if (folder / name).is_file():
            return read_state_dict(folder / name, files=files)
    index = folder / f"{stem}.safetensors.index.json"
    if index.is_file():
        weight_map = _read_json(index, files).get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) and v for v in weight_map.values()):
            raise CheckpointError(f"{index.name}: 'weight_map' must map tensor names to shard file names")
        weights: dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            if "\x00" in shard or not shard.lower().endswith(".safetensors"):
                raise CheckpointError(f"{index.name}: shard {shard[:80]!r} is not a .safetensors file")
            weights.update(read_state_dict(folder / shard, files=files))  # files refuses ../ and absolute
        return weights
    if (folder / pickled).is_file():
        return read_state_dict(folder / pickled, files=files)
    raise CheckpointError(f"no weights in {folder.name}/ (expected {stem}.safetensors)")


def _component(folder: Path, cls: Any, dtype: torch.dtype, device: str, files: ModelFiles) -> Any:
    config = _read_json(folder / "config.json", files)
    if cls.__name__ == "AutoencoderKL":
        dtype = _vae_dtype(config, dtype)
    return _diffusers_model(cls, config, _folder_weights(folder, files), dtype, device)


def load_folder(
    folder: Path, dtype: torch.dtype, device: str, prediction: str = "auto", files: ModelFiles | None = None
) -> LoadedCheckpoint:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    _quiet_transformers()
    files = files or ModelFiles.around(folder)
    if not (folder / "model_index.json").is_file():
        raise CheckpointError(f"{folder.name} is not a diffusers model folder (no model_index.json)")
    index = _read_json(folder / "model_index.json", files)
    family = folder_family(folder, files)
    unet = _component(folder / "unet", UNet2DConditionModel, dtype, device, files)
    vae = _component(folder / "vae", AutoencoderKL, dtype, device, files)

    tokenizers, encoders = [], []
    for tok_name, enc_name in (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2")):
        if (folder / enc_name).is_dir():
            encoders.append(_transformers_model(index, enc_name, folder, dtype, device, files))
            tokenizers.append(_tokenizer(folder / tok_name, files))
    vision = None
    if (folder / "image_encoder").is_dir() and _class_name(index, "image_encoder"):
        vision = _transformers_model(index, "image_encoder", folder, dtype, device, files)
    image_stats = None
    if (folder / "image_normalizer").is_dir() and _class_name(index, "image_normalizer"):
        from nodes.diffusion.impl.unclip import read_image_stats

        image_stats = read_image_stats(folder / "image_normalizer", files)

    return LoadedCheckpoint(
        family=make_family(family, vae.config),
        unet=unet,
        vae=vae,
        tokenizers=tokenizers,
        text_encoders=encoders,
        scheduler_config=_scheduler_config(folder, prediction, files),
        dtype=dtype,
        vision=vision,
        folder=folder,
        pad_token_ids=[t.pad_token_id for t in tokenizers],
        image_stats=image_stats,
    )


def _class_name(index: Mapping[str, Any], name: str) -> str | None:
    entry = index.get(name)
    if entry is None:
        return None
    if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(v, (str, type(None))) for v in entry)):
        raise CheckpointError(f"model_index.json: {name!r} must be [library, class name]")
    return entry[1]


def _transformers_model(
    index: Mapping[str, Any], name: str, folder: Path, dtype: torch.dtype, device: str, files: ModelFiles
) -> Any:
    """A transformers component read like the diffusers ones: config and weights through
    ``files``, the model built on the meta device (see :func:`_text_model`)."""
    import transformers

    class_name = _class_name(index, name) or "CLIPTextModel"
    cls = getattr(transformers, class_name, None)
    if cls is None or not class_name.startswith("CLIP"):
        raise CheckpointError(f"{name}: unsupported model class {class_name[:60]!r}")
    config = _read_json(folder / name / "config.json", files)
    weights = _folder_weights(folder / name, files, stem="model", pickled="pytorch_model.bin")
    return _text_model(cls, config, weights, dtype, device)


def _tokenizer(folder: Path, files: ModelFiles) -> Any:
    """The CLIP tokenizer in ``folder``. The library opens its files by name, so it is given
    a private copy of the folder made through ``files`` (every file inside the model
    folders, read once); a malformed file is an error naming it."""
    import tempfile

    from transformers import CLIPTokenizer

    for name in ("tokenizer_config.json", "special_tokens_map.json", "vocab.json", "tokenizer.json"):
        if (folder / name).is_file():
            _read_json(folder / name, files)  # a clear error for a malformed file, before the library's
    with tempfile.TemporaryDirectory(prefix="nodeflow-tokenizer-") as copy:
        try:
            files.copy_folder(folder, Path(copy))
        except ModelFileError as error:
            raise CheckpointError(str(error)) from None
        try:
            return CLIPTokenizer.from_pretrained(copy, local_files_only=True)
        except Exception as error:  # what a bogus tokenizer folder makes the library raise varies
            raise CheckpointError(f"{folder.name}/ is not a readable CLIP tokenizer ({_first_line(error)})") from None


# -- entry points --------------------------------------------------------------------------


def load_checkpoint(
    path: Path, dtype: torch.dtype, device: str, prediction: str = "auto", files: ModelFiles | None = None
) -> LoadedCheckpoint:
    """A whole model from a diffusers folder or a single checkpoint file; every file read
    through ``files`` (:func:`~nodes.diffusion.impl.paths.model_files`; by default
    confined to the model itself)."""
    if path.is_dir():
        return load_folder(path, dtype, device, prediction, files)
    return load_single_file(path, dtype, device, prediction, files)


@dataclass
class LoadedUNet:
    unet: Any
    family: ModelFamily
    scheduler_config: dict[str, Any]


def load_unet(
    path: Path, dtype: torch.dtype, device: str, prediction: str = "auto", files: ModelFiles | None = None
) -> LoadedUNet:
    """Only the UNet, from a diffusers folder (pipeline or ``unet`` folder) or a single file
    (full checkpoint or UNet-only, original layout); files read through ``files``."""
    from diffusers import UNet2DConditionModel

    files = files or ModelFiles.around(path)
    if path.is_dir():
        unet = _component(_unet_folder(path), UNet2DConditionModel, dtype, device, files)
        if (path / "model_index.json").is_file():
            family, scheduler = folder_family(path, files), _scheduler_config(path, prediction, files)
        else:
            family = folder_family(path, files)
            scheduler = _scheduler_config(_family_configs(family, prediction), prediction)
        return LoadedUNet(unet, make_family(family, None, _latent_channels(unet)), scheduler)

    state, source = read_mapped(path, device, files)
    if "conv_in.weight" in state and (path.parent / "config.json").is_file():
        # diffusers-named weights picked from inside a diffusers unet folder
        config = _read_json(path.parent / "config.json", files)
        unet = _diffusers_model(UNet2DConditionModel, config, state, dtype, device, source)
        family = folder_family(path.parent, files)
        scheduler = _scheduler_config(_family_configs(family, prediction), prediction)
        return LoadedUNet(unet, make_family(family, None, _latent_channels(unet)), scheduler)
    if "conv_in.weight" in state:  # diffusers naming without its config.json (ComfyUI's diffusion_models)
        unet, family, chosen, configs = _diffusers_named_unet(state, dtype, device, prediction, source)
        return LoadedUNet(unet, make_family(family, None, _latent_channels(unet)), _scheduler_config(configs, chosen))
    if not _ldm.has_prefix(state, _ldm.UNET):
        state = {_ldm.UNET + k: v for k, v in state.items()}  # a bare UNet in the original layout
    unet, family, chosen, configs = _original_layout_unet(state, dtype, device, prediction, source)
    return LoadedUNet(unet, make_family(family, None, _latent_channels(unet)), _scheduler_config(configs, chosen))


def _latent_channels(unet: Any) -> int:
    """An inpainting UNet's 9 inputs are 4 latent channels, a mask and a 4-channel masked image;
    an InstructPix2Pix UNet's 8 are 4 latent channels and the 4 of the image it edits."""
    channels = int(unet.config.in_channels)
    return 4 if channels in (8, 9) else channels


def _read_json(path: Path, files: ModelFiles) -> dict[str, Any]:
    """A model's JSON file through ``files``; a :class:`CheckpointError` naming it otherwise."""
    try:
        return files.read_json(path)
    except ModelFileError as error:
        raise CheckpointError(str(error)) from None


# -- split files: a UNet file in diffusers naming, text encoder files (issue 11) -----------
#
# ComfyUI's UNETLoader / CLIPLoader / DualCLIPLoader read one part of a model from its own
# file (folders ``diffusion_models``/``unet`` and ``text_encoders``/``clip``). The parts are
# built as the whole checkpoint's are: on the meta device from the shipped configs, the
# architecture read from the weights, the tensors assigned.

# The published SDXL time ids are 256 wide (the shipped config); see _pooled_width.
SDXL_TIME_ID_WIDTH = 256


def _pooled_width(added: int, cross: int, time_ids: int) -> int | None:
    """The pooled text width an SDXL UNet's added embedding was made for (its input is the
    pooled embedding and ``time_ids`` sinusoidal time ids), when no text encoder is in the
    file to tell. Published models: 256-wide ids (2816 = 1280 + 6 x 256). A narrower model
    (tiny test models, custom ones): the widest multiple of 64 (the heads' width) up to the
    cross-attention width that leaves whole, even id widths; None when nothing fits."""
    published = added - time_ids * SDXL_TIME_ID_WIDTH
    if 0 < published <= cross:
        return published
    for pooled in range(cross // 64 * 64, 0, -64):
        rest = added - pooled
        if rest > 0 and rest % time_ids == 0 and (rest // time_ids) % 2 == 0:
            return pooled
    return None


def lone_unet_family(cross: int, linear: bool, added: bool, class_embedding: bool) -> str:
    """The family of a UNet file without text encoders, from its cross-attention width, its
    attention projections (SD 1.x: 1x1 convolutions, SD 2.x and SDXL: linear layers) and
    extra embeddings (SDXL's added time/text embedding; SD 2.1 unCLIP's image class embedding).
    Published widths decide (768 SD 1.x, 1024 SD 2.x, 2048 SDXL, 1280 the SDXL refiner);
    another width (a narrower model) by the projections."""
    if added and not class_embedding:
        return "sdxl_refiner" if cross == 1280 else "sdxl"
    if class_embedding or cross == 1024:
        return "sd2"
    if cross == 768:
        return "sd1"
    return "sd2" if linear else "sd1"


def diffusers_unet_config(state: Mapping[str, Any], base: Mapping[str, Any], family: str) -> dict[str, Any]:
    """The ``UNet2DConditionModel`` config of diffusers-named UNet weights (``down_blocks.0...``)
    that came without their ``config.json``: channels, depths, attention levels and widths read
    from the weights, the rest (head counts by the family's rule, sample size) from ``base``."""
    indices = _ldm._indices
    downs = indices(state, r"down_blocks\.(\d+)\.")
    ups = indices(state, r"up_blocks\.(\d+)\.")
    if not downs or "conv_in.weight" not in state or "conv_out.weight" not in state:
        raise CheckpointError("not a diffusers UNet: no conv_in / down_blocks / conv_out weights")
    try:
        channels = [int(state[f"down_blocks.{i}.resnets.0.conv1.weight"].shape[0]) for i in downs]
    except KeyError as missing:
        raise CheckpointError(f"the UNet weights are incomplete: no {missing.args[0]}") from None
    per_block = len(indices(state, r"down_blocks\.0\.resnets\.(\d+)\."))
    attention = [_ldm.has_prefix(state, f"down_blocks.{i}.attentions.") for i in downs]
    depth = [len(indices(state, rf"down_blocks\.{i}\.attentions\.0\.transformer_blocks\.(\d+)\.")) or 1 for i in downs]
    to_k = next((k for k in state if k.endswith("attn2.to_k.weight")), None)
    proj_in = next((k for k in state if k.endswith(".proj_in.weight")), None)
    if to_k is None or proj_in is None:
        raise CheckpointError("the UNet has no cross-attention layers, so it is not a text-to-image SD UNet")
    config = {k: v for k, v in base.items() if k not in ("addition_embed_type", "addition_time_embed_dim",
                                                         "projection_class_embeddings_input_dim", "class_embed_type")}
    config.update(
        in_channels=int(state["conv_in.weight"].shape[1]),
        out_channels=int(state["conv_out.weight"].shape[0]),
        block_out_channels=channels,
        layers_per_block=per_block,
        down_block_types=["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        up_block_types=["CrossAttnUpBlock2D" if _ldm.has_prefix(state, f"up_blocks.{i}.attentions.") else "UpBlock2D"
                        for i in ups],
        cross_attention_dim=int(state[to_k].shape[1]),
        use_linear_projection=state[proj_in].ndim == 2,
        transformer_layers_per_block=depth if any(d != 1 for d in depth) else 1,
        attention_head_dim=base["attention_head_dim"] if family == "sd1" else [max(1, c // 64) for c in channels],
    )
    if "class_embedding.linear_1.weight" in state:  # SD 2.1 unCLIP
        config.update(class_embed_type="projection",
                      projection_class_embeddings_input_dim=int(state["class_embedding.linear_1.weight"].shape[1]))
    elif "add_embedding.linear_1.weight" in state:
        added = int(state["add_embedding.linear_1.weight"].shape[1])
        time_ids = 5 if family == "sdxl_refiner" else 6
        config.update(addition_embed_type="text_time", projection_class_embeddings_input_dim=added,
                      addition_time_embed_dim=SDXL_TIME_ID_WIDTH)
        pooled = _pooled_width(added, config["cross_attention_dim"], time_ids)
        if pooled is not None:
            config["addition_time_embed_dim"] = (added - pooled) // time_ids
    return config


def _diffusers_named_unet(state: Mapping[str, Any], dtype: torch.dtype, device: str, prediction: str,
                          source: MappedFile | None) -> tuple[Any, str, str, Path]:
    """A UNet file in diffusers naming without a ``config.json`` beside it (as ComfyUI's
    ``diffusion_models`` folder holds them): the family and the config read from the weights."""
    from diffusers import UNet2DConditionModel

    to_k = next((k for k in state if k.endswith("attn2.to_k.weight")), None)
    proj_in = next((k for k in state if k.endswith(".proj_in.weight")), None)
    if to_k is None or proj_in is None:
        raise CheckpointError("the UNet has no cross-attention layers, so it is not a text-to-image SD UNet")
    family = lone_unet_family(int(state[to_k].shape[1]), state[proj_in].ndim == 2,
                              "add_embedding.linear_1.weight" in state, "class_embedding.linear_1.weight" in state)
    chosen = _diffusers_prediction(state, family) if prediction == "auto" else prediction
    configs = _family_configs(family, chosen)
    config = diffusers_unet_config(state, _read_json(configs / "unet" / "config.json", SHIPPED), family)
    _refuse_inpainting(config)
    unet = _diffusers_model(UNet2DConditionModel, config, state, dtype, device, source)
    return unet, family, chosen, configs


def _diffusers_prediction(state: Mapping[str, Any], family: str) -> str:
    """:func:`detect_prediction`'s rule on diffusers names: the last decoder attention's first
    norm bias has a wide spread in SD 2.x v-models."""
    if family != "sd2":
        return "epsilon"
    if "class_embedding.linear_1.weight" in state:
        return "v_prediction"
    keys = [k for k in state if k.startswith("up_blocks.") and k.endswith("transformer_blocks.0.norm1.bias")]
    if not keys:
        return "epsilon"
    last = max(keys, key=lambda k: (int(k.split(".")[1]), int(k.split(".")[3])))
    return "v_prediction" if float(state[last].float().std(unbiased=False)) > 0.09 else "epsilon"


# Text encoders: which one a file holds, and the shipped config its missing fields come from.
ENCODERS = ("clip_l", "open_clip_h", "open_clip_g")
_ENCODER_CONFIGS = {"clip_l": ("sd1", "text_encoder"), "open_clip_h": ("sd2", "text_encoder"),
                    "open_clip_g": ("sdxl", "text_encoder_2")}
_ENCODER_FAMILY = {"clip_l": "sd1", "open_clip_h": "sd2", "open_clip_g": "sdxl_refiner"}


@dataclass
class TextEncoderFile:
    """One text encoder file's tensors, renamed to one of two layouts: ``"transformers"``
    (``text_model.*`` + ``text_projection.weight``) or ``"open_clip"`` (``token_embedding``,
    ``transformer.resblocks.*``, ``text_projection``)."""

    state: dict[str, Any]
    layout: str
    name: str
    source: MappedFile | None = None

    @property
    def width(self) -> int:
        key = "token_embedding.weight" if self.layout == "open_clip" else "text_model.embeddings.token_embedding.weight"
        return int(self.state[key].shape[1])

    @property
    def layers(self) -> int:
        pattern = r"transformer\.resblocks\.(\d+)\." if self.layout == "open_clip" else r"text_model\.encoder\.layers\.(\d+)\."
        return len(_ldm._indices(self.state, pattern))


def text_encoder_file(state: Mapping[str, Any], name: str, source: MappedFile | None = None) -> TextEncoderFile:
    """The one CLIP text encoder in ``state``, with any prefix it was saved under (a
    checkpoint's ``cond_stage_model.transformer.``, ``conditioner.embedders.1.model.``, ...)
    taken off; transformers >= 5.6 files without the ``text_model.`` level get it back."""
    embeddings = [k for k in state if k.endswith("token_embedding.weight")]
    if not embeddings:
        raise CheckpointError(f"{name} holds no CLIP text encoder (no token_embedding weights)")
    if len(embeddings) > 1:
        raise CheckpointError(f"{name} holds {len(embeddings)} text encoders (a whole checkpoint?); "
                              "a text encoder file holds one")
    key = embeddings[0]
    if key.endswith("embeddings.token_embedding.weight"):  # transformers layout
        prefix = key[: -len("embeddings.token_embedding.weight")]
        outer = prefix[: -len("text_model.")] if prefix.endswith("text_model.") else prefix
        renamed = {"text_model." + k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        for projection in (outer + "text_projection.weight", outer + "text_projection"):
            if projection in state:  # an old ComfyUI CLIPSave wrote the raw [width, dim] matrix
                value = state[projection]
                renamed["text_projection.weight"] = value if projection.endswith(".weight") else value.T.contiguous()
        return TextEncoderFile(renamed, "transformers", name, source)
    prefix = key[: -len("token_embedding.weight")]
    if not _ldm.has_prefix(state, prefix + "transformer.resblocks."):
        raise CheckpointError(f"{name}: a token embedding without CLIP's transformer layers")
    return TextEncoderFile({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, "open_clip", name, source)


def detect_encoder(file: TextEncoderFile) -> str:
    """Which encoder a file holds, by the published sizes: OpenCLIP-G (1280 wide, 32 layers),
    OpenCLIP-H (1024 wide, 23 or 24 layers), else CLIP-L (768 wide, 12 layers); a narrower
    OpenCLIP-layout file is taken for SD 2.x's H, the one family that ships it in that layout
    alone. The node's ``encoder`` choice overrides it."""
    if file.width == 1280 or file.layers >= 31:
        return "open_clip_g"
    if file.width == 1024 or file.layers >= 23 or file.layout == "open_clip":
        return "open_clip_h"
    return "clip_l"


def build_text_encoder(file: TextEncoderFile, encoder: str, dtype: torch.dtype, device: str) -> tuple[Any, Any]:
    """The transformers model and tokenizer of one text encoder file, as a checkpoint's is built:
    SD 2.x's H without the last layer (SD 2.x conditions on the penultimate one), SDXL's G with
    its projection, CLIP-L as it is."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from nodes.diffusion.impl.tokenizer import PAD_END, PAD_ZERO, clip_tokenizer

    family, sub = _ENCODER_CONFIGS[encoder]
    base = _read_json(CONFIG_DIR / family / sub / "config.json", SHIPPED)
    cls = CLIPTextModelWithProjection if encoder == "open_clip_g" else CLIPTextModel
    state = file.state
    try:
        if file.layout == "open_clip":
            config = _ldm.open_clip_config(state, "", base, drop_last=encoder == "open_clip_h")
            weights = _ldm.convert_open_clip(state, "", config, with_projection=cls is CLIPTextModelWithProjection)
        else:
            config = _ldm.clip_config(state, "text_model.", base)
            if encoder == "open_clip_h" and config["num_hidden_layers"] == 24:  # the full tower: drop the unused last layer
                config["num_hidden_layers"] = 23
                state = {k: v for k, v in state.items() if not k.startswith("text_model.encoder.layers.23.")}
            if cls is CLIPTextModelWithProjection:
                if "text_projection.weight" not in state:
                    raise CheckpointError(f"{file.name}: OpenCLIP-G needs its text projection (text_projection.weight)")
                config["projection_dim"] = int(state["text_projection.weight"].shape[0])
                weights = {k: v for k, v in state.items() if k.startswith("text_model.") or k == "text_projection.weight"}
            else:
                weights = _ldm.convert_clip(state, "text_model.")
    except KeyError as missing:
        raise CheckpointError(f"{file.name}: the text encoder weights are incomplete (no {missing.args[0]})") from None
    model = _text_model(cls, config, weights, dtype, device, file.source)
    return model, clip_tokenizer(PAD_END if encoder == "clip_l" else PAD_ZERO)


@dataclass
class LoadedTextEncoders:
    family: ModelFamily
    tokenizers: list[Any]
    encoders: list[Any]
    pad_token_ids: list[int]


def load_text_encoders(paths: list[Path], encoder: str, dtype: torch.dtype, device: str,
                       files: ModelFiles | None = None) -> LoadedTextEncoders:
    """One text encoder file (``encoder``: ``auto`` or one of :data:`ENCODERS`) gives SD 1.x's
    CLIP-L, SD 2.x's OpenCLIP-H or the SDXL refiner's OpenCLIP-G; two files give SDXL's pair,
    in either order (the narrower is CLIP-L, the wider OpenCLIP-G). Each file is read through
    ``files``."""
    _quiet_transformers()
    read = []
    for path in paths:
        state, source = read_mapped(path, device, files)
        read.append(text_encoder_file(state, path.name, source))
    try:
        if len(read) == 1:
            chosen = detect_encoder(read[0]) if encoder == "auto" else encoder
            model, tokenizer = build_text_encoder(read[0], chosen, dtype, device)
            family, models, tokenizers = _ENCODER_FAMILY[chosen], [model], [tokenizer]
        else:
            small, large = sorted(read, key=lambda f: f.width)
            if small.width == large.width:
                raise CheckpointError(f"{small.name} and {large.name} are both {small.width} wide; SDXL pairs the "
                                      "narrower CLIP-L with the wider OpenCLIP-G")
            first, second = build_text_encoder(small, "clip_l", dtype, device), build_text_encoder(large, "open_clip_g", dtype, device)
            family, models, tokenizers = "sdxl", [first[0], second[0]], [first[1], second[1]]
    finally:
        for file in read:
            if file.source is not None:
                file.source.release_all()
    return LoadedTextEncoders(make_family(family, None), tokenizers, models, [t.pad_token_id for t in tokenizers])
