"""ControlNets and T2I-Adapters: loading them offline, and the residuals they add to the UNet.

Loading: a diffusers folder (``config.json`` naming ``ControlNetModel`` or
``T2IAdapter``) or a ControlNet single file in the original layout (``control_model.*``
or bare ``input_blocks.*`` / ``zero_convs.*`` / ``input_hint_block.*``). A single file
carries no config: the architecture is read from the weights, with the family's shipped
UNet config for what weights cannot tell (as for checkpoints, see loading.py), and
diffusers' single-file converter renames the weights. Nothing is fetched.

Applying: a :class:`ControlHint` (model, hint image, strength, start/end) travels in a
conditioning's ``extras["control"]``; at each step the guider asks
:func:`residual_function` for the UNet's extra inputs: the sum of every active
ControlNet's down/mid residuals (as diffusers' multi-ControlNet sums them), and the
T2I-Adapters' features. A hint is active while the step's timestep lies within
[start, end] of the schedule, with percent p meaning timestep (1 - p) x (T - 1), as
ComfyUI's start/end percent do.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from nodes.diffusion.impl import ldm as _ldm
from nodes.diffusion.impl.ldm import CheckpointError
from nodes.diffusion.impl.loading import CONFIG_DIR, SHIPPED, _diffusers_model, _folder_weights, _read_json, read_state_dict
from nodes.diffusion.impl.paths import ModelFiles
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
        config = _read_json(path / "config.json", files)
        name = config.get("_class_name", "ControlNetModel")
        classes = {"ControlNetModel": (ControlNetModel, "controlnet"), "T2IAdapter": (T2IAdapter, "t2i_adapter")}
        if name not in classes:
            raise CheckpointError(f"unsupported control model class {name!r} (ControlNetModel or T2IAdapter)")
        cls, kind = classes[name]
        return ControlModel(_diffusers_model(cls, config, _folder_weights(path, files), dtype, device), kind, str(path))

    state = read_state_dict(path, device)
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
            d, m = model(
                x[:, : model.config.in_channels].to(model.dtype), t, encoder_hidden_states=embeds.to(model.dtype), controlnet_cond=image,
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
