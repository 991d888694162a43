"""Loading a VAE on its own (ComfyUI's VAELoader): a single file or a diffusers folder.

Single files come in the original (LDM) layout, bare (``encoder.down.0...``, as
``vae-ft-mse-840000`` and ``sdxl_vae`` are distributed) or under ``first_stage_model.``;
the architecture is read from the weights and the same converter as whole checkpoints
use renames them (diffusers' single-file converter, no hub). A file in diffusers naming
needs the ``config.json`` of its folder. The one thing the weights cannot tell is the
latent scale (SD 1.x/2.x 0.18215, SDXL 0.13025): it comes from the config, or the
node's ``family`` choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nodes.diffusion.impl import ldm as _ldm
from nodes.diffusion.impl.ldm import CheckpointError
from nodes.diffusion.impl.loading import CONFIG_DIR, SHIPPED, _component, _diffusers_model, _read_json, _vae_dtype, read_state_dict
from nodes.diffusion.impl.paths import ModelFiles

SCALING = {"sd1": 0.18215, "sdxl": 0.13025}


@dataclass
class LoadedVAE:
    vae: Any  # diffusers AutoencoderKL
    family: str  # "sd1" (also SD 2.x: same latent space) or "sdxl"


def load_vae(path: Path, family: str, dtype: torch.dtype, device: str) -> LoadedVAE:
    """``family``: "auto" (the folder's config; for a single file a name with "xl" in it
    means SDXL), "sd1" or "sdxl"."""
    from diffusers import AutoencoderKL

    if path.is_dir():
        folder = path / "vae" if (path / "vae" / "config.json").is_file() else path
        vae = _component(folder, AutoencoderKL, dtype, device, ModelFiles.around(path))
        return _with_family(vae, family, _family_of_scale(vae.config.get("scaling_factor")))

    state = read_state_dict(path, device)
    if "encoder.conv_in.weight" in state and "encoder.down_blocks.0.resnets.0.conv1.weight" in state:
        config_file = path.parent / "config.json"
        if not config_file.is_file():
            raise CheckpointError("the file is in diffusers naming but its folder has no config.json")
        config = _read_json(config_file, ModelFiles.around(path))
        vae = _diffusers_model(AutoencoderKL, config, state, _vae_dtype(config, dtype), device)
        return _with_family(vae, family, _family_of_scale(config.get("scaling_factor")))
    if _ldm.vae_prefix(state) is None:
        state = {"first_stage_model." + k: v for k, v in state.items()}
    if _ldm.vae_prefix(state) is None:
        raise CheckpointError("not a VAE: no decoder.conv_in weights in the original or diffusers layout")
    guessed = "sdxl" if "xl" in path.name.lower() else "sd1"
    chosen = guessed if family == "auto" else family
    base = _read_json(CONFIG_DIR / chosen / "vae" / "config.json", SHIPPED)
    config = _ldm.vae_config(state, base)
    vae = _diffusers_model(AutoencoderKL, config, _ldm.convert_vae(state, config), _vae_dtype(config, dtype), device)
    return LoadedVAE(vae, chosen)


def _family_of_scale(scale: Any) -> str:
    return "sdxl" if scale is not None and abs(float(scale) - SCALING["sdxl"]) < 1e-4 else "sd1"


def _with_family(vae: Any, family: str, found: str) -> LoadedVAE:
    if family != "auto" and family != found:
        vae.register_to_config(scaling_factor=SCALING[family])
    return LoadedVAE(vae, found if family == "auto" else family)
