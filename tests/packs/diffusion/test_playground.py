"""Playground v2.5 (ComfyUI's ModelSamplingContinuousEDM edm_playground_v2.5) on the tiny
SDXL model: EDM sampling in the model's own per-channel latent space, converted in and out
by the Sampler; the image equals diffusers' SDXL pipeline with an EDM scheduler and a VAE
that carries Playground's latent statistics."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from nodeflow import RunContext, RunSettings  # noqa: E402
from nodes.diffusion.impl.edm import PLAYGROUND_V2_5  # noqa: E402
from nodes.diffusion.latent import EmptyLatent  # noqa: E402
from nodes.diffusion.loaders import Checkpoint  # noqa: E402
from nodes.diffusion.model_edm import ModelSamplingEDM  # noqa: E402
from nodes.diffusion.sampling import CFG, Noise, Sampler  # noqa: E402
from nodes.diffusion.text import TextEncoder  # noqa: E402
from nodes.diffusion.vae import VAEDecode  # noqa: E402
from tests.support.tiny_models import shared_tiny_sdxl  # noqa: E402

PROMPT, NEGATIVE, SEED, STEPS, SCALE = "a fox in the snow", "blurry", 9, 4, 3.0


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory):
    return shared_tiny_sdxl(tmp_path_factory)


def _graph(sdxl, prediction="edm_playground_v2.5"):
    ctx = RunContext(device="cpu", settings=RunSettings(model_folders={"checkpoints": [sdxl.parent]}))
    loaded = Checkpoint().run(ctx, sdxl.name, "fp32", "auto")
    model = ModelSamplingEDM().run(ctx, loaded["model"], prediction, 80.0, 0.002)
    encode = TextEncoder()
    positive = encode.run(ctx, clip=loaded["clip"], text=PROMPT, clip_skip=1)
    negative = encode.run(ctx, clip=loaded["clip"], text=NEGATIVE, clip_skip=1)
    latent = EmptyLatent().run(ctx, width=32, height=32, batch=1, vae=loaded["vae"])
    out = Sampler().run(ctx, Noise().run(ctx, SEED), CFG().run(ctx, model, positive, negative, SCALE, 0.0), latent,
                        "dpmpp_2m", "karras", STEPS, 1.0, 0.0)
    return VAEDecode().run(ctx, loaded["vae"], out, "off", 512).numpy()


def test_playground_image_equals_the_sdxl_pipeline_with_its_latent_statistics(sdxl):
    from diffusers import EDMDPMSolverMultistepScheduler, StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(sdxl, local_files_only=True)
    pipe.scheduler = EDMDPMSolverMultistepScheduler(sigma_min=0.002, sigma_max=80.0, sigma_data=0.5,
                                                    prediction_type="epsilon", sigma_schedule="karras",
                                                    algorithm_type="dpmsolver++", solver_order=2,
                                                    final_sigmas_type="zero")
    pipe.vae.register_to_config(latents_mean=list(PLAYGROUND_V2_5["mean"]), latents_std=list(PLAYGROUND_V2_5["std"]),
                                scaling_factor=PLAYGROUND_V2_5["scale"])
    pipe.set_progress_bar_config(disable=True)
    reference = pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=STEPS, guidance_scale=SCALE, height=32,
                     width=32, generator=torch.Generator("cpu").manual_seed(SEED), output_type="np").images
    ours = _graph(sdxl)
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).max() <= 1e-4
    assert np.abs(ours - _graph(sdxl, "edm")).max() > 1e-3  # the latent space matters


def test_comfyuis_playground_sampling_imports(tmp_path):
    import nodeflow.api as api

    data = {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "playground-v2.5-1024px-aesthetic.fp16.safetensors"}},
            "40": {"class_type": "ModelSamplingContinuousEDM",
                   "inputs": {"model": ["4", 0], "sampling": "edm_playground_v2.5", "sigma_max": 120.0, "sigma_min": 0.002}}}
    path = tmp_path / "playground.json"
    path.write_text(json.dumps(data))
    node = api.open(path, device="cpu").graph.nodes["40"]
    assert (node.type, node.values["prediction"]) == ("ModelSamplingEDM", "edm_playground_v2.5")
