"""ControlNets and T2I-Adapters: loading them offline, and the residuals they add to the UNet.

Loading: a diffusers folder (``config.json`` naming ``ControlNetModel``,
``ControlNetUnionModel`` or ``T2IAdapter``, or only xinsir's ProMax pair
``config_promax.json`` + ``diffusion_pytorch_model_promax.safetensors``) or a ControlNet single file in the original
layout (``control_model.*`` or bare ``input_blocks.*`` / ``zero_convs.*`` /
``input_hint_block.*``). A single file carries no config: the architecture is read from
the weights, with the family's shipped UNet config for what weights cannot tell (as for
checkpoints, see loading.py), and diffusers' single-file converter renames the weights.
A ControlNet Union (xinsir's ``controlnet-union-sdxl-1.0`` and its ProMax file) is
published as one file in diffusers' own key names; it is told by its task embeddings
(``task_embedding``, one row per control type) and built as ``ControlNetUnionModel``
with the config read from those names (:func:`diffusers_layout_config`); diffusers'
``from_single_file`` does not know that class. A plain ControlNet single file under
diffusers' names (``diffusers_xl_*_full``) is read the same way. Nothing is fetched.

Applying: a :class:`ControlHint` (model, hint image, strength, start/end) travels in a
conditioning's ``extras["control"]``; at each step the guider asks
:func:`residual_function` for the UNet's extra inputs: the sum of every active
ControlNet's down/mid residuals (as diffusers' multi-ControlNet sums them), and the
T2I-Adapters' features. A union ControlNet is called as diffusers'
StableDiffusionXLControlNetUnionPipeline calls it (one hint, its type as
``control_type_idx`` and as a one-hot ``control_type``); "auto" is ComfyUI's: no type,
an all-zero ``control_type``, and the hint's encoding added to the latent's as a plain
ControlNet adds it (:func:`_union_residuals`). A hint is active while the step's timestep
lies within [start, end] of the schedule, with percent p meaning timestep (1 - p) x (T - 1), as
ComfyUI's start/end percent do.
"""

from __future__ import annotations

import inspect
import re
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from nodes.diffusion.impl import ldm as _ldm
from nodes.diffusion.impl.ldm import CheckpointError
from nodes.diffusion.impl.loading import CONFIG_DIR, SHIPPED, _diffusers_model, _folder_weights, _read_json, read_state_dict
from nodes.diffusion.impl.paths import ModelFiles, lone_model_layout
from nodes.diffusion.types import ControlModel

_LDM_PREFIX = "control_model."


@dataclass(frozen=True, eq=False)
class ControlHint:
    control: ControlModel
    image: torch.Tensor  # IMAGE [B, H, W, 3] in [0, 1] on the CPU
    strength: float = 1.0
    start: float = 0.0  # fraction of the schedule
    end: float = 1.0


# -- loading -------------------------------------------------------------------------------


def load_control(path: Path, dtype: torch.dtype, device: str) -> ControlModel:
    from diffusers import ControlNetModel, T2IAdapter

    if path.is_dir():
        files = ModelFiles.around(path)
        config_name, stem = lone_model_layout(path, "controlnet") or ("config.json", "diffusion_pytorch_model")
        config = _read_json(path / config_name, files)
        name = config.get("_class_name", "ControlNetModel")
        classes = {"ControlNetModel": (ControlNetModel, "controlnet"), "T2IAdapter": (T2IAdapter, "t2i_adapter"),
                   "ControlNetUnionModel": (None, "controlnet_union")}
        if name not in classes:
            raise CheckpointError(
                f"unsupported control model class {name!r} (ControlNetModel, ControlNetUnionModel or T2IAdapter)")
        cls, kind = classes[name]
        weights = _folder_weights(path, files, stem, f"{stem}.bin")
        if kind == "controlnet_union" or _UNION_KEY in weights:  # told by the weights, whatever the config says
            return _union(weights, {**config, **_union_fields(weights)}, dtype, device, str(path))
        return ControlModel(_diffusers_model(cls, config, weights, dtype, device), kind, str(path))

    state = read_state_dict(path, device)
    if _UNION_KEY in state:
        return _union(state, diffusers_layout_config(state), dtype, device, str(path))
    if _DIFFUSERS_KEY in state:  # a plain ControlNet saved under diffusers' names (e.g. diffusers_xl_canny_full)
        config = {**diffusers_layout_config(state), "_class_name": "ControlNetModel"}
        return ControlModel(_diffusers_model(ControlNetModel, config, state, dtype, device), "controlnet", str(path))
    if "difference" in state:
        raise CheckpointError("a 'difference' ControlNet (stored as changes to a UNet) is not supported")
    if any(k.startswith(("adapter.", "body.")) for k in state) and not any("zero_convs" in k for k in state):
        raise CheckpointError("T2I-Adapter single files are not supported (diffusers reads T2I-Adapters from folders only)")
    if not any(k.startswith(_LDM_PREFIX) for k in state):
        state = {_LDM_PREFIX + k: v for k, v in state.items()}
    if _LDM_PREFIX + "input_hint_block.0.weight" not in state:
        raise CheckpointError("not a ControlNet: no input_hint_block weights in the original layout")
    config = controlnet_config(state)
    weights = _convert(state, config)
    return ControlModel(_diffusers_model(ControlNetModel, config, weights, dtype, device), "controlnet", str(path))


_UNION_KEY = "task_embedding"  # [control types, transformer width]: only union ControlNets have it
_DIFFUSERS_KEY = "controlnet_cond_embedding.conv_in.weight"  # a ControlNet under diffusers' key names
_SDXL_TIME_ID_WIDTH = 256  # each SDXL time id's embedding width, which a plain ControlNet's weights do not tell
_UNION_HEADS = 8  # the fusing transformer's heads: not in the weights; every published union model has 8


def _union(weights: Mapping[str, torch.Tensor], config: Mapping[str, Any], dtype: torch.dtype, device: str,
           source: str) -> ControlModel:
    from diffusers import ControlNetUnionModel

    config = {**config, "_class_name": "ControlNetUnionModel"}
    return ControlModel(_diffusers_model(ControlNetUnionModel, config, weights, dtype, device), "controlnet_union", source)


def _union_fields(state: Mapping[str, Any]) -> dict[str, Any]:
    """What a union ControlNet's weights tell beyond a plain ControlNet's: how many control
    types it was trained on (6, or 8 for ProMax) and its fusing transformer's size."""
    types, width = (int(n) for n in state[_UNION_KEY].shape)
    layers = _ldm._indices(state, r"transformer_layes\.(\d+)\.")
    fields: dict[str, Any] = {
        "num_control_type": types, "num_trans_channel": width, "num_trans_head": _UNION_HEADS,
        "num_trans_layer": len(layers),
    }
    if "spatial_ch_projs.weight" in state:
        fields["num_proj_channel"] = int(state["spatial_ch_projs.weight"].shape[0])
    if "control_add_embedding.linear_1.weight" in state:  # one time-id-wide embedding per control type
        fields["addition_time_embed_dim"] = int(state["control_add_embedding.linear_1.weight"].shape[1]) // types
    return fields


def diffusers_layout_config(state: Mapping[str, Any]) -> dict[str, Any]:
    """The config of a ControlNet stored under diffusers' own key names (``ControlNetModel``,
    or ``ControlNetUnionModel`` when it has task embeddings), read from the weights' names
    and shapes. Attention head counts, which the weights do not hold, follow the family's
    rule (64-wide heads for SD 2.x and SDXL, 8 heads for SD 1.x)."""
    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise CheckpointError(f"not a ControlNet in diffusers' layout: no {key!r} weights")
        return tuple(int(n) for n in state[key].shape)

    levels = sorted(_ldm._indices(state, r"down_blocks\.(\d+)\."))
    if not levels:
        raise CheckpointError("not a ControlNet in diffusers' layout: no down_blocks weights")
    channels, attention, depth = [], [], []
    for level in levels:
        channels.append(shape(f"down_blocks.{level}.resnets.0.conv1.weight")[0])
        blocks = _ldm._indices(state, re.escape(f"down_blocks.{level}.attentions.0.transformer_blocks.") + r"(\d+)\.")
        attention.append(bool(blocks))
        depth.append(len(blocks) or 1)
    to_k = next((k for k in state if k.endswith("attn2.to_k.weight")), None)
    if to_k is None:
        raise CheckpointError("the ControlNet has no cross-attention layers")
    proj_in = next((k for k in state if k.endswith(".proj_in.weight")), None)
    if proj_in is None:
        raise CheckpointError("the ControlNet's attention layers have no proj_in weights")
    cross = shape(to_k)[1]
    # The hint encoder: conv_in, then per level a same-width conv and a 2x-down conv (the odd blocks).
    downs = sorted(_ldm._indices(state, r"controlnet_cond_embedding\.blocks\.(\d+)\.weight"))[1::2]
    hint_channels = [shape("controlnet_cond_embedding.conv_in.weight")[0]]
    hint_channels += [shape(f"controlnet_cond_embedding.blocks.{j}.weight")[0] for j in downs]
    config: dict[str, Any] = {
        "in_channels": shape("conv_in.weight")[1],
        "conditioning_channels": shape("controlnet_cond_embedding.conv_in.weight")[1],
        "conditioning_embedding_out_channels": hint_channels,
        "block_out_channels": channels,
        "layers_per_block": len(_ldm._indices(state, r"down_blocks\.0\.resnets\.(\d+)\.conv1\.weight")),
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        "transformer_layers_per_block": depth,
        "cross_attention_dim": cross,
        "use_linear_projection": len(shape(proj_in)) == 2,
        # As detect_family tells a lone UNet: SD 2.x and SDXL (added embedding) 64-wide heads, else SD 1.x's 8.
        "attention_head_dim": ([max(1, c // 64) for c in channels]
                               if cross in (1024, 2048) or "add_embedding.linear_1.weight" in state else 8),
    }
    if "add_embedding.linear_1.weight" in state:  # SDXL: pooled text embedding and time ids
        config.update(addition_embed_type="text_time", addition_time_embed_dim=_SDXL_TIME_ID_WIDTH,
                      projection_class_embeddings_input_dim=shape("add_embedding.linear_1.weight")[1])
    if _UNION_KEY in state:
        config.update(_union_fields(state))  # (its time id width is read from the control-type embedding)
    return config


def controlnet_config(state: Mapping[str, Any]) -> dict[str, Any]:
    """The diffusers ``ControlNetModel`` config of an original-layout ControlNet: its UNet
    half read like a checkpoint's UNet, plus the hint encoder's channels."""
    from diffusers import ControlNetModel

    from nodes.diffusion.impl.loading import detect_family

    view = {_ldm.UNET + k[len(_LDM_PREFIX):]: v for k, v in state.items() if k.startswith(_LDM_PREFIX)}
    family = detect_family(view)
    base = _read_json(CONFIG_DIR / family / "unet" / "config.json", SHIPPED)
    unet = _ldm.unet_config(view, base, family)
    accepted = set(inspect.signature(ControlNetModel.__init__).parameters) - {"self"}
    config = {k: v for k, v in unet.items() if k in accepted}
    hint = sorted(_ldm._indices(state, re.escape(_LDM_PREFIX) + r"input_hint_block\.(\d+)\.weight"))
    if hint != [0, 2, 4, 6, 8, 10, 12, 14]:
        raise CheckpointError("the ControlNet's hint encoder does not have the standard 8 convolutions")
    config.update(
        _class_name="ControlNetModel",
        conditioning_channels=int(state[_LDM_PREFIX + "input_hint_block.0.weight"].shape[1]),
        conditioning_embedding_out_channels=[
            int(state[_LDM_PREFIX + f"input_hint_block.{i}.weight"].shape[0]) for i in (0, 4, 8, 12)
        ],
    )
    return config


def _convert(state: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    weights = convert_controlnet_checkpoint(dict(state), dict(config))
    return {k: v for k, v in weights.items() if v is not None}


# -- applying ------------------------------------------------------------------------------


def downscale(control: ControlModel) -> int:
    """Pixels per latent cell of the hint the model takes."""
    model = control.model
    if control.kind == "t2i_adapter":  # its first feature map is at latent resolution
        return int(model.config.downscale_factor)
    return 2 ** (len(model.config.conditioning_embedding_out_channels) - 1)


Residuals = Callable[[torch.Tensor, torch.Tensor], dict[str, Any]]


def residual_function(
    hints: tuple[ControlHint, ...], embeds: torch.Tensor, added: dict[str, torch.Tensor] | None,
    latent_shape: tuple[int, ...], train_steps: int,
) -> Residuals | None:
    """The per-step extra UNet inputs of ``hints`` for latents shaped ``latent_shape``; None when there are no hints."""
    if not hints:
        return None
    batch, _, h, w = latent_shape
    prepared = []
    for hint in hints:
        model = hint.control.model
        factor = downscale(hint.control)
        image = _hint_pixels(hint.image, batch, (h * factor, w * factor)).to(device=model.device, dtype=model.dtype)
        window = ((1.0 - hint.end) * (train_steps - 1), (1.0 - hint.start) * (train_steps - 1))
        features = None
        if hint.control.kind == "t2i_adapter":
            with torch.inference_mode():
                features = [f * hint.strength for f in model(image)]
        elif hint.control.kind == "controlnet_union" and hint.control.union_type is None:
            with torch.inference_mode():  # "auto": the hint's encoding does not change from step to step
                image = model.controlnet_cond_embedding(image)
        prepared.append((hint, image, window, features))

    def residuals(x: torch.Tensor, t: torch.Tensor) -> dict[str, Any]:
        level = float(t)
        down: list[torch.Tensor] | None = None
        mid: torch.Tensor | None = None
        intrablock: list[torch.Tensor] | None = None
        for hint, image, (low, high), features in prepared:
            if not low - 1e-6 <= level <= high + 1e-6:
                continue
            if features is not None:
                intrablock = list(features) if intrablock is None else [a + b for a, b in zip(intrablock, features)]
                continue
            model = hint.control.model
            # An inpainting UNet's x carries mask + masked-image channels after the latent's.
            x_in, text = x[:, : model.config.in_channels].to(model.dtype), embeds.to(model.dtype)
            if hint.control.kind == "controlnet_union":
                d, m = _union_residuals(hint, x_in, t, text, image, added)
            else:
                d, m = model(
                    x_in, t, encoder_hidden_states=text, controlnet_cond=image,
                    conditioning_scale=hint.strength, added_cond_kwargs=added, return_dict=False,
                )
            down = list(d) if down is None else [a + b for a, b in zip(down, d)]
            mid = m if mid is None else mid + m
        out: dict[str, Any] = {}
        if down is not None:
            out["down_block_additional_residuals"] = down
            out["mid_block_additional_residual"] = mid
        if intrablock is not None:
            out["down_intrablock_additional_residuals"] = intrablock
        return out

    return residuals


# The encoded hint an "auto" union call adds to the latent's first features (per thread:
# a model shared between workers may run two calls at once).
_AUTO_HINT: ContextVar[torch.Tensor | None] = ContextVar("auto_hint", default=None)


def _union_residuals(
    hint: ControlHint, x: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor, image: torch.Tensor,
    added: dict[str, torch.Tensor] | None,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """A union ControlNet's residuals. With a type: called as diffusers' union pipeline calls
    it, the hint and its type index, a one-hot type vector. "auto" (``image`` is then the
    encoded hint): no type index and an all-zero type vector, so the model's fusing
    transformer sees no hint, and the encoding is added after ``conv_in`` as a plain
    ControlNet adds it (diffusers' forward has no such mode; a hook on ``conv_in`` does it),
    the residuals scaled by strength."""
    model = hint.control.model
    index = hint.control.union_type
    control_type = torch.zeros(x.shape[0], model.config.num_control_type, dtype=model.dtype, device=x.device)
    if index is not None:
        control_type[:, index] = 1.0
        d, m = model(
            x, t, encoder_hidden_states=embeds, controlnet_cond=[image], control_type=control_type,
            control_type_idx=[index], conditioning_scale=hint.strength, added_cond_kwargs=added, return_dict=False,
        )
        return list(d), m
    if not getattr(model, "_nodeflow_auto_hint", False):
        model.conv_in.register_forward_hook(_add_auto_hint)
        model._nodeflow_auto_hint = True
    token = _AUTO_HINT.set(image)
    try:
        d, m = model(
            x, t, encoder_hidden_states=embeds, controlnet_cond=[], control_type=control_type, control_type_idx=[],
            added_cond_kwargs=added, return_dict=False,
        )
    finally:
        _AUTO_HINT.reset(token)
    return [r * hint.strength for r in d], m * hint.strength


def _add_auto_hint(module: torch.nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor | None:
    encoded = _AUTO_HINT.get()
    return None if encoded is None else output + encoded


def combine(uncond: dict[str, Any], cond: dict[str, Any]) -> dict[str, Any]:
    """Residuals for a batch [uncond, cond]; a half without a hint gets zeros."""
    out: dict[str, Any] = {}
    for key in {*uncond, *cond}:
        a, b = uncond.get(key), cond.get(key)
        if isinstance(a if a is not None else b, list):
            a = a if a is not None else [torch.zeros_like(r) for r in b]
            b = b if b is not None else [torch.zeros_like(r) for r in a]
            out[key] = [torch.cat([p, q]) for p, q in zip(a, b)]
        else:
            a = a if a is not None else torch.zeros_like(b)
            b = b if b is not None else torch.zeros_like(a)
            out[key] = torch.cat([a, b])
    return out


def _hint_pixels(image: torch.Tensor, batch: int, size: tuple[int, int]) -> torch.Tensor:
    """IMAGE [b, H, W, 3] -> [batch, 3, *size] in [0, 1] (resized when the sizes differ,
    repeated to the latent batch)."""
    pixels = image.permute(0, 3, 1, 2).float()
    if tuple(pixels.shape[-2:]) != size:
        pixels = torch.nn.functional.interpolate(pixels, size=size, mode="bilinear", align_corners=False).clamp(0, 1)
    have = pixels.shape[0]
    if have != batch:
        if batch % have:
            raise ValueError(f"the hint image batch of {have} does not divide the latent batch of {batch}")
        pixels = pixels.repeat_interleave(batch // have, dim=0)
    return pixels
