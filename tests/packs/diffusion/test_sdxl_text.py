"""SDXL text encoding with size/crop conditioning, on the tiny SDXL model: the image equals
StableDiffusionXLPipeline's with the same prompts, original size, crop and target size."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from nodeflow.model.node import NodeError, RunContext, RunSettings  # noqa: E402
from nodes.diffusion.latent import EmptyLatent  # noqa: E402
from nodes.diffusion.loaders import Checkpoint  # noqa: E402
from nodes.diffusion.sampling import CFG, Noise, Sampler  # noqa: E402
from nodes.diffusion.sdxl_text import TextEncoderSDXL, TextEncoderSDXLRefiner  # noqa: E402
from nodes.diffusion.vae import VAEDecode  # noqa: E402
from tests.support.tiny_models import shared_tiny_sd, shared_tiny_sdxl  # noqa: E402

SEED, STEPS, SCALE = 5, 3, 6.0
SIZES = dict(width=1024, height=768, crop_w=64, crop_h=32, target_width=512, target_height=512)


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory):
    return shared_tiny_sdxl(tmp_path_factory)


def _ctx(folder):
    return RunContext(device="cpu", settings=RunSettings(model_folders={"checkpoints": [folder.parent]}))


def _graph_image(sdxl, text_g, text_l, negative, sizes):
    ctx = _ctx(sdxl)
    loaded = Checkpoint().run(ctx, sdxl.name, "fp32", "auto")
    encode = TextEncoderSDXL()
    positive = encode.run(ctx, loaded["clip"], text_g, text_l, **sizes)
    negative = encode.run(ctx, loaded["clip"], negative, negative, **sizes)
    latent = EmptyLatent().run(ctx, width=32, height=32, batch=1, vae=loaded["vae"])
    guider = CFG().run(ctx, loaded["model"], positive, negative, SCALE, 0.0)
    out = Sampler().run(ctx, Noise().run(ctx, SEED), guider, latent, "euler", "normal", STEPS, 1.0, 0.0)
    return VAEDecode().run(ctx, loaded["vae"], out, "off", 512).numpy()


def _pipeline_image(sdxl, text_g, text_l, negative, sizes):
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(sdxl, local_files_only=True)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        prompt=text_l, prompt_2=text_g, negative_prompt=negative, negative_prompt_2=negative,
        original_size=(sizes["height"], sizes["width"]), crops_coords_top_left=(sizes["crop_h"], sizes["crop_w"]),
        target_size=(sizes["target_height"], sizes["target_width"]), num_inference_steps=STEPS, guidance_scale=SCALE,
        height=32, width=32, generator=torch.Generator("cpu").manual_seed(SEED), output_type="np",
    ).images


@pytest.mark.slow
def test_sdxl_text_encode_equals_the_sdxl_pipeline(sdxl):
    args = ("a red circle", "a drawing of a circle", "a blue square")
    ours = _graph_image(sdxl, *args, SIZES)
    reference = _pipeline_image(sdxl, *args, SIZES)
    assert np.abs(ours - reference).max() <= 1e-4


def test_size_conditioning_changes_the_image(sdxl):
    args = ("a red circle", "a red circle", "a blue square")
    plain = _graph_image(sdxl, *args, dict(SIZES, crop_w=0, crop_h=0))
    cropped = _graph_image(sdxl, *args, SIZES)
    assert np.abs(plain - cropped).max() > 1e-3


def test_sdxl_text_encode_refuses_other_families(tmp_path_factory):
    tiny = shared_tiny_sd(tmp_path_factory)
    ctx = _ctx(tiny)
    clip = Checkpoint().run(ctx, tiny.name, "fp32", "auto")["clip"]
    with pytest.raises(NodeError, match="SDXL") as error:
        TextEncoderSDXL().run(ctx, clip, "a", "a", **SIZES)
    assert error.value.field == "clip"
    with pytest.raises(NodeError, match="refiner") as error:
        TextEncoderSDXLRefiner().run(ctx, clip, "a", 6.0, 1024, 1024)
    assert error.value.field == "clip"
