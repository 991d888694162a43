"""Latent, VAE, image and conditioning-arithmetic nodes on real tiny models and real files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from nodeflow import NodeError, RunContext, RunSettings  # noqa: E402
from nodes.diffusion.types import Autoencoder, Conditioning, Latent, ModelFamily  # noqa: E402
from nodes.diffusion.conditioning import ConditioningAverage, ConditioningCombine, ConditioningDirection  # noqa: E402
from nodes.diffusion.images import LoadImage, PreviewImage, SaveImage  # noqa: E402
from nodes.diffusion.latent import EmptyLatent, LatentUpscale  # noqa: E402
from nodes.diffusion.vae import VAEDecode, VAEEncode  # noqa: E402
from tests.support.tiny_models import shared_tiny_sd  # noqa: E402


@pytest.fixture(scope="module")
def vae(tmp_path_factory) -> Autoencoder:
    from nodes.diffusion.loaders import Checkpoint

    tiny = shared_tiny_sd(tmp_path_factory)
    ctx = RunContext(device="cpu", settings=RunSettings(model_folders={"checkpoints": [str(tiny.parent)]}))
    return Checkpoint().run(ctx, checkpoint=tiny.name, dtype="fp32", prediction="auto")["vae"]


def random_latent(shape, seed=0, family=None) -> Latent:
    return Latent(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), family)


# ------------------------------------------------------------------ EmptyLatent
def test_empty_latent_takes_its_shape_from_the_vae(vae):
    latent = EmptyLatent().run(RunContext(), width=48, height=32, batch=3, vae=vae)
    assert latent.samples.shape == (3, 4, 16, 24)  # the tiny VAE scales by 2
    assert latent.family == vae.family and not latent.samples.any()


def test_empty_latent_defaults_to_stable_diffusion_and_follows_other_families():
    assert EmptyLatent().run(RunContext(), width=512, height=768, batch=1).samples.shape == (1, 4, 96, 64)
    wide = Autoencoder(vae=None, family=ModelFamily("sd3", latent_channels=16, vae_scale_factor=8))
    assert EmptyLatent().run(RunContext(), width=64, height=64, batch=1, vae=wide).samples.shape == (1, 16, 8, 8)


def test_empty_latent_refuses_sizes_off_the_vae_grid():
    with pytest.raises(NodeError, match=r'field "width": 100 is not a multiple of 8'):
        EmptyLatent().run(RunContext(), width=100, height=64, batch=1)


# ------------------------------------------------------------------ LatentUpscale
def test_latent_upscale_to_a_size_one_side_or_a_factor():
    latent = random_latent((1, 4, 8, 12), family=ModelFamily("sd1"))
    up = LatentUpscale()
    assert up.run(RunContext(), latent, "bilinear", 192, 128, 1.5).samples.shape == (1, 4, 16, 24)
    assert up.run(RunContext(), latent, "bicubic", 0, 128, 1.5).samples.shape == (1, 4, 16, 24)  # aspect kept
    assert up.run(RunContext(), latent, "nearest", 0, 0, 1.5).samples.shape == (1, 4, 12, 18)
    doubled = up.run(RunContext(), latent, "nearest", 0, 0, 2.0).samples
    assert torch.equal(doubled[..., ::2, ::2], latent.samples)  # nearest copies each latent pixel
    with pytest.raises(NodeError, match='field "height": 100 is not a multiple of 8'):
        up.run(RunContext(), latent, "bilinear", 0, 100, 1.0)


# ------------------------------------------------------------------ VAE
def test_vae_decode_gives_images_in_unit_range(vae):
    image = VAEDecode().run(RunContext(), vae, random_latent((2, 4, 8, 12)), "auto", 512)
    assert image.shape == (2, 16, 24, 3) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0


def test_tiled_decode_matches_whole_decode(vae):
    latent = random_latent((1, 4, 48, 40), seed=3)
    whole = VAEDecode().run(RunContext(), vae, latent, "off", 64)
    tiled = VAEDecode().run(RunContext(), vae, latent, "on", 64)  # 32-latent tiles, 8 of overlap
    assert tiled.shape == whole.shape == (1, 96, 80, 3)
    difference = (tiled - whole).abs()
    assert difference.mean() < 0.01 and difference.max() < 0.1
    assert torch.equal(VAEDecode().run(RunContext(), vae, latent, "auto", 64), whole)  # small: not tiled


def test_vae_encode_is_the_latent_mean_in_model_space(vae):
    pixels = torch.rand(1, 16, 16, 3, generator=torch.Generator().manual_seed(4))
    latent = VAEEncode().run(RunContext(), vae, pixels)
    with torch.no_grad():
        expected = vae.vae.encode(pixels.permute(0, 3, 1, 2) * 2 - 1).latent_dist.mean * vae.scaling_factor
    assert latent.samples.shape == (1, 4, 8, 8) and latent.family == vae.family
    torch.testing.assert_close(latent.samples, expected)
    assert torch.equal(VAEEncode().run(RunContext(), vae, pixels).samples, latent.samples)


def test_vae_encode_refuses_sizes_off_the_grid_unless_told_to_crop_their_centre(vae):
    with pytest.raises(NodeError, match='field "image".*15x16.*multiples of 2.*crop_to_fit'):
        VAEEncode().run(RunContext(), vae, torch.rand(1, 16, 15, 3))
    pixels = torch.rand(1, 19, 17, 3, generator=torch.Generator().manual_seed(2))
    cropped = VAEEncode().run(RunContext(), vae, pixels, crop_to_fit=True)
    # ComfyUI's cut: the centre, the odd pixel left off the far side (offsets (19 % 2) // 2 = 0)
    assert torch.equal(cropped.samples, VAEEncode().run(RunContext(), vae, pixels[:, 0:18, 0:16]).samples)


def test_inpaint_encoders_crop_image_and_mask_alike(vae):
    from nodes.diffusion.inpaint import VAEEncodeForInpaint

    pixels = torch.rand(1, 21, 18, 3, generator=torch.Generator().manual_seed(3))
    mask = torch.zeros(1, 21, 18)
    mask[:, :10] = 1.0
    latent = VAEEncodeForInpaint().run(RunContext(), vae, pixels, mask, 0, crop_to_fit=True)
    assert latent.samples.shape[-2:] == (10, 9) and latent.noise_mask.shape[-2:] == (20, 18)
    assert torch.equal(latent.noise_mask, mask[:, 0:20])
    with pytest.raises(NodeError, match="crop_to_fit") as refused:
        VAEEncodeForInpaint().run(RunContext(), vae, pixels, mask, 0)
    assert refused.value.field == "image"


# ------------------------------------------------------------------ images
def test_load_image_reads_rgb_in_unit_range(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (6, 5, 4), dtype=np.uint8)
    Image.fromarray(pixels, "RGBA").save(tmp_path / "in.png")
    image, mask = LoadImage().run(RunContext(input_dir=tmp_path), image="in.png")
    assert image.shape == (1, 6, 5, 3) and image.dtype == torch.float32
    assert np.array_equal((image[0].numpy() * 255).round().astype(np.uint8), pixels[..., :3])
    # the mask is 1 - alpha: transparent is masked
    assert np.array_equal(((1 - mask[0].numpy()) * 255).round().astype(np.uint8), pixels[..., 3])


@pytest.mark.parametrize("name", ["../secret.png", "/etc/passwd", "sub/../../x.png"])
def test_load_image_refuses_paths_outside_the_input_folder(tmp_path, name):
    inputs = tmp_path / "input"
    inputs.mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "secret.png")
    with pytest.raises(NodeError, match='field "image".*folder'):
        LoadImage().run(RunContext(input_dir=inputs), image=name)


def test_load_image_reports_a_missing_file(tmp_path):
    with pytest.raises(NodeError, match='field "image".*nothere.png'):
        LoadImage().run(RunContext(input_dir=tmp_path), image="nothere.png")


def test_save_image_numbers_files_and_never_overwrites(tmp_path):
    (tmp_path / "shot_00001.png").write_bytes(b"precious")
    written: list[Path] = []
    ctx = RunContext(output_dir=tmp_path, on_file_written=written.append)
    batch = torch.rand(2, 4, 6, 3, generator=torch.Generator().manual_seed(5))
    returned = SaveImage().run(ctx, images=batch, filename_prefix="shot", embed_workflow=True)
    SaveImage().run(ctx, images=batch[:1], filename_prefix="shot", embed_workflow=True)
    assert [p.name for p in written] == ["shot_00002.png", "shot_00003.png", "shot_00004.png"]
    assert (tmp_path / "shot_00001.png").read_bytes() == b"precious"
    saved = np.asarray(Image.open(tmp_path / "shot_00003.png"))
    assert np.abs(saved.astype(int) - (batch[1].numpy() * 255).round().astype(int)).max() <= 1
    assert returned is batch  # passed on, so the run's result shows it


@pytest.mark.parametrize("prefix", ["../up", "a/b", "a\\b", "..", ""])
def test_save_image_refuses_prefixes_that_leave_the_output_folder(tmp_path, prefix):
    with pytest.raises(NodeError, match='field "filename_prefix"'):
        SaveImage().run(RunContext(output_dir=tmp_path / "out"), images=torch.rand(1, 2, 2, 3), filename_prefix=prefix, embed_workflow=True)
    assert not list(tmp_path.rglob("*.png"))


def test_preview_image_shows_without_saving(tmp_path):
    batch = torch.rand(1, 4, 4, 3)
    assert PreviewImage().run(RunContext(output_dir=tmp_path), images=batch) is batch
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------ conditioning arithmetic
def cond(*shape, seed=0, pooled=False) -> Conditioning:
    g = torch.Generator().manual_seed(seed)
    return Conditioning(torch.randn(*shape, generator=g), torch.randn(shape[0], shape[-1], generator=g) if pooled else None)


def test_combine_concatenates_tokens_so_both_prompts_are_attended():
    a, b = cond(1, 77, 8, seed=1), cond(2, 77, 8, seed=2)
    combined = ConditioningCombine().run(RunContext(), a, b)
    assert combined.embeds.shape == (2, 154, 8)
    assert torch.equal(combined.embeds[1, :77], a.embeds[0]) and torch.equal(combined.embeds[1, 77:], b.embeds[1])


def test_average_blends_by_weight_and_pads_shorter_prompts_with_empty_tokens():
    a, b = cond(1, 154, 8, seed=1, pooled=True), cond(1, 77, 8, seed=2, pooled=True)
    mixed = ConditioningAverage().run(RunContext(), a, b, 0.25)
    assert mixed.embeds.shape == (1, 154, 8)
    torch.testing.assert_close(mixed.embeds[:, :77], 0.25 * a.embeds[:, :77] + 0.75 * b.embeds)
    torch.testing.assert_close(mixed.embeds[:, 77:], 0.25 * a.embeds[:, 77:])
    torch.testing.assert_close(mixed.pooled, 0.25 * a.pooled + 0.75 * b.pooled)
    assert torch.equal(ConditioningAverage().run(RunContext(), a, b, 1.0).embeds, a.embeds)


def test_direction_moves_base_along_a_minus_b():
    base, a, b = cond(1, 77, 8, seed=1), cond(1, 77, 8, seed=2), cond(1, 77, 8, seed=3)
    moved = ConditioningDirection().run(RunContext(), base, a, b, 0.5)
    torch.testing.assert_close(moved.embeds, base.embeds + 0.5 * (a.embeds - b.embeds))
    # "a man" + ("a man wearing a hat" - "a man") is "a man wearing a hat".
    torch.testing.assert_close(ConditioningDirection().run(RunContext(), b, a, b, 1.0).embeds, a.embeds)


def test_conditionings_from_different_encoders_are_refused():
    with pytest.raises(NodeError, match="embedding sizes 8, 16"):
        ConditioningAverage().run(RunContext(), cond(1, 77, 8), cond(1, 77, 16), 0.5)
