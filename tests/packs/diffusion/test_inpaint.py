"""Inpainting on tiny models: a 9-channel inpainting UNet gives StableDiffusionInpaintPipeline's
image; the noise mask keeps the unmasked part of the image with a normal model; the mask grows."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from nodeflow.model.node import NodeError, RunContext, RunSettings  # noqa: E402
from nodes.diffusion.inpaint import InpaintModelConditioning, VAEEncodeForInpaint  # noqa: E402
from nodes.diffusion.loaders import Checkpoint  # noqa: E402
from nodes.diffusion.sampling import CFG, Noise, Sampler  # noqa: E402
from nodes.diffusion.text import TextEncoder  # noqa: E402
from nodes.diffusion.vae import VAEDecode  # noqa: E402
from tests.support.tiny_models import save_single_file, shared_tiny_sd  # noqa: E402

PROMPT, NEGATIVE, SEED, STEPS, SCALE = "a red circle", "a green background", 3, 4, 7.5


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The tiny SD model and its inpainting twin (a 9-channel UNet), as folders and as a single file."""
    from diffusers import UNet2DConditionModel

    tiny = shared_tiny_sd(tmp_path_factory)
    inpaint = tmp_path_factory.mktemp("models") / "tiny_inpaint"
    shutil.copytree(tiny, inpaint)
    config = dict(UNet2DConditionModel.load_config(tiny / "unet"))
    config["in_channels"] = 9
    torch.manual_seed(2)
    UNet2DConditionModel.from_config(config).save_pretrained(inpaint / "unet")
    index = json.loads((inpaint / "model_index.json").read_text())
    (inpaint / "model_index.json").write_text(json.dumps({**index, "_class_name": "StableDiffusionInpaintPipeline"}))
    save_single_file(inpaint, inpaint.parent / "tiny_inpaint.safetensors")
    return tiny, inpaint


def _ctx(models):
    tiny, inpaint = models
    return RunContext(device="cpu", settings=RunSettings(model_folders={"checkpoints": [tiny.parent, inpaint.parent]}))


@pytest.fixture(scope="module")
def picture():
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.integers(0, 256, (1, 32, 32, 3)).astype(np.float32) / 255.0)
    mask = torch.zeros(1, 32, 32)
    mask[:, 8:24, 10:26] = 1.0  # on the tiny VAE's 2-pixel grid
    return image, mask


def _sample(ctx, loaded, positive, negative, latent):
    guider = CFG().run(ctx, loaded["model"], positive, negative, SCALE, 0.0)
    out = Sampler().run(ctx, Noise().run(ctx, SEED), guider, latent, "euler", "normal", STEPS, 1.0, 0.0)
    return VAEDecode().run(ctx, loaded["vae"], out, "off", 512)


def _prompts(ctx, loaded):
    return (TextEncoder().run(ctx, loaded["clip"], PROMPT, 1), TextEncoder().run(ctx, loaded["clip"], NEGATIVE, 1))


@pytest.mark.slow
def test_inpainting_model_image_equals_the_inpaint_pipeline(models, picture):
    from diffusers import EulerDiscreteScheduler, StableDiffusionInpaintPipeline
    from PIL import Image

    _, inpaint = models
    image, mask = picture
    ctx = _ctx(models)
    loaded = Checkpoint().run(ctx, inpaint.name, "fp32", "auto")
    assert loaded["model"].unet.config.in_channels == 9
    positive, negative = _prompts(ctx, loaded)
    conditioned = InpaintModelConditioning().run(ctx, positive, negative, loaded["vae"], image, mask, noise_mask=False)
    ours = _sample(ctx, loaded, conditioned["positive"], conditioned["negative"], conditioned["latent"]).numpy()

    pipe = StableDiffusionInpaintPipeline.from_pretrained(inpaint, local_files_only=True, safety_checker=None)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    init = Image.fromarray((image[0].numpy() * 255).round().astype(np.uint8))
    mask_image = Image.fromarray((mask[0].numpy() * 255).astype(np.uint8))
    # The masked image as the pipeline masks it, encoded with the distribution's mean
    # (the pipeline would draw a sample from the generator; nodeflow's encode is deterministic).
    with torch.no_grad():
        pixels = pipe.image_processor.preprocess(init)
        masked = pixels * (pipe.mask_processor.preprocess(mask_image) < 0.5)
        masked_latents = pipe.vae.encode(masked).latent_dist.mode() * pipe.vae.config.scaling_factor
    assert torch.allclose(conditioned["positive"].extras["inpaint"].masked_latent, masked_latents, atol=1e-5)
    reference = pipe(
        PROMPT, image=init, mask_image=mask_image, masked_image_latents=masked_latents, negative_prompt=NEGATIVE,
        num_inference_steps=STEPS, guidance_scale=SCALE, strength=1.0, height=32, width=32,
        generator=torch.Generator("cpu").manual_seed(SEED), output_type="np",
    ).images
    assert np.abs(ours - reference).max() <= 1e-4


def test_a_single_file_inpainting_checkpoint_loads_as_the_folder(models, picture):
    _, inpaint = models
    ctx = _ctx(models)
    folder = Checkpoint().run(ctx, inpaint.name, "fp32", "auto")["model"].unet
    single = Checkpoint().run(ctx, "tiny_inpaint.safetensors", "fp32", "auto")["model"].unet
    assert single.config.in_channels == 9
    x, text = torch.randn(1, 9, 16, 16), torch.randn(1, 77, 32)
    with torch.no_grad():
        assert torch.allclose(folder(x, 10, text).sample, single(x, 10, text).sample, atol=1e-5)


def test_the_noise_mask_keeps_the_unmasked_part_with_a_normal_model(models, picture):
    tiny, _ = models
    image, mask = picture
    ctx = _ctx(models)
    loaded = Checkpoint().run(ctx, tiny.name, "fp32", "auto")
    positive, negative = _prompts(ctx, loaded)
    latent = VAEEncodeForInpaint().run(ctx, loaded["vae"], image, mask, grow_mask_by=0)
    guider = CFG().run(ctx, loaded["model"], positive, negative, SCALE, 0.0)
    out = Sampler().run(ctx, Noise().run(ctx, SEED), guider, latent, "euler", "normal", STEPS, 1.0, 0.0)
    cells = torch.nn.functional.interpolate(mask[:, None], size=(16, 16), mode="bilinear")[0, 0]
    # (The decoder's attention mixes all cells, so this is seen in the latent.)
    assert torch.equal(out.samples[..., cells == 0], latent.samples[..., cells == 0])  # kept exactly
    assert (out.samples[..., cells == 1] - latent.samples[..., cells == 1]).abs().mean() > 0.1  # redrawn
    assert out.noise_mask is latent.noise_mask  # passed on, for a second sampler


def test_grow_mask_by_widens_the_redrawn_area(models, picture):
    tiny, _ = models
    image, mask = picture
    ctx = _ctx(models)
    vae = Checkpoint().run(ctx, tiny.name, "fp32", "auto")["vae"]
    grown = VAEEncodeForInpaint().run(ctx, vae, image, mask, grow_mask_by=2).noise_mask
    assert grown.sum() == (16 + 4) * (16 + 4)
    assert grown[0, 6, 8] == 1 and grown[0, 5, 8] == 0


def test_an_inpainting_model_without_a_mask_is_refused_naming_the_latent(models):
    from nodes.diffusion.latent import EmptyLatent

    _, inpaint = models
    ctx = _ctx(models)
    loaded = Checkpoint().run(ctx, inpaint.name, "fp32", "auto")
    positive, negative = _prompts(ctx, loaded)
    latent = EmptyLatent().run(ctx, width=32, height=32, batch=1, vae=loaded["vae"])
    guider = CFG().run(ctx, loaded["model"], positive, negative, SCALE, 0.0)
    with pytest.raises(NodeError, match="inpainting model") as error:
        Sampler().run(ctx, Noise().run(ctx, SEED), guider, latent, "euler", "normal", STEPS, 1.0, 0.0)
    assert error.value.field == "latent"
