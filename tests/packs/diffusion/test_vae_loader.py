"""VAELoader: a VAE file or folder decodes exactly as the checkpoint's own autoencoder,
and another VAE file really changes the image."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from nodeflow.model.node import NodeError, RunContext, RunSettings  # noqa: E402
from nodes.diffusion.loaders import Checkpoint  # noqa: E402
from nodes.diffusion.types import Latent  # noqa: E402
from nodes.diffusion.vae import VAEDecode  # noqa: E402
from nodes.diffusion.vae_loader import VAELoader  # noqa: E402
from tests.support.standins import vae_original_state  # noqa: E402
from tests.support.tiny_models import shared_tiny_sd  # noqa: E402


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """The tiny model, and a vae folder holding its VAE three ways plus a retrained one."""
    from safetensors.torch import save_file

    tiny = shared_tiny_sd(tmp_path_factory)
    vae_dir = tmp_path_factory.mktemp("vae")
    original = vae_original_state(tiny)
    save_file(original, vae_dir / "bare.safetensors")  # as vae-ft-mse-840000 ships
    save_file({"first_stage_model." + k: v for k, v in original.items()}, vae_dir / "prefixed.safetensors")
    shutil.copytree(tiny / "vae", vae_dir / "diffusers_vae")
    other = {k: v + 0.05 * torch.randn(v.shape, generator=torch.Generator().manual_seed(3)) for k, v in original.items()}
    save_file(other, vae_dir / "other.safetensors")
    return tiny, vae_dir


def _ctx(folders) -> RunContext:
    tiny, vae_dir = folders
    return RunContext(device="cpu", settings=RunSettings(model_folders={"checkpoints": [tiny.parent], "vae": [vae_dir]}))


def _decode(vae, latent):
    return VAEDecode().run(RunContext(), vae=vae, latent=latent, tiling="off", tile_size=512)


@pytest.mark.parametrize("name", ["bare.safetensors", "prefixed.safetensors", "diffusers_vae"])
def test_a_vae_file_or_folder_decodes_like_the_checkpoints_own(folders, name):
    tiny, _ = folders
    ctx = _ctx(folders)
    own = Checkpoint().run(ctx, checkpoint=tiny.name, dtype="fp32", prediction="auto")["vae"]
    loaded = VAELoader().run(ctx, vae_name=name, family="auto", dtype="fp32")
    assert loaded.scaling_factor == pytest.approx(0.18215)
    latent = Latent(torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)))
    assert torch.allclose(_decode(loaded, latent), _decode(own, latent), atol=1e-5)


def test_another_vae_file_changes_the_image(folders):
    ctx = _ctx(folders)
    latent = Latent(torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)))
    base = _decode(VAELoader().run(ctx, vae_name="bare.safetensors", family="auto", dtype="fp32"), latent)
    other = _decode(VAELoader().run(ctx, vae_name="other.safetensors", family="auto", dtype="fp32"), latent)
    assert (base - other).abs().max() > 1e-2


def test_the_sdxl_family_choice_sets_the_sdxl_latent_scale(folders):
    vae = VAELoader().run(_ctx(folders), vae_name="bare.safetensors", family="sdxl", dtype="fp32")
    assert vae.scaling_factor == pytest.approx(0.13025) and vae.family.name == "sdxl"


def test_a_missing_or_foreign_file_names_the_field(folders, tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(NodeError, match=r"'nope.safetensors' not found") as missing:
        VAELoader().run(_ctx(folders), vae_name="nope.safetensors", family="auto", dtype="fp32")
    assert missing.value.field == "vae_name"
    save_file({"lora_unet_x.lora_up.weight": torch.zeros(2, 2)}, tmp_path / "lora.safetensors")
    ctx = RunContext(device="cpu", settings=RunSettings(model_folders={"vae": [tmp_path]}))
    with pytest.raises(NodeError, match="not a VAE") as foreign:
        VAELoader().run(ctx, vae_name="lora.safetensors", family="auto", dtype="fp32")
    assert foreign.value.field == "vae_name"
