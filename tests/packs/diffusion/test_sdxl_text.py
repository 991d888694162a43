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


# ------------------------------------------------------------------ the SDXL refiner
@pytest.fixture(scope="module")
def refiner(sdxl, tmp_path_factory):
    """A tiny SDXL refiner: the base's VAE and second text encoder, a UNet that
    cross-attends to that encoder alone and takes 5 time ids (with the aesthetic score);
    as a diffusers folder and as a single file in the original layout."""
    import json
    import shutil

    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file, save_file

    from tests.support.tiny_models import (
        TEXT2_HIDDEN, TIME_EMBED_DIM, _vae_blocks, _vae_value_to_ldm, open_clip_state, unet_key_to_ldm, vae_key_to_ldm,
    )

    folder = tmp_path_factory.mktemp("refiner") / "tiny_refiner"
    folder.mkdir()
    for part in ("vae", "text_encoder_2", "tokenizer_2", "scheduler"):
        shutil.copytree(sdxl / part, folder / part)
    config = dict(UNet2DConditionModel.load_config(sdxl / "unet"))
    config.update(cross_attention_dim=TEXT2_HIDDEN, projection_class_embeddings_input_dim=TEXT2_HIDDEN + 5 * TIME_EMBED_DIM)
    torch.manual_seed(8)
    UNet2DConditionModel.from_config(config).save_pretrained(folder / "unet")
    index = json.loads((sdxl / "model_index.json").read_text())
    index.update(_class_name="StableDiffusionXLImg2ImgPipeline", text_encoder=[None, None], tokenizer=[None, None],
                 requires_aesthetics_score=True, force_zeros_for_empty_prompt=False)
    (folder / "model_index.json").write_text(json.dumps(index))

    unet_config = json.loads((folder / "unet" / "config.json").read_text())
    state = {"model.diffusion_model." + unet_key_to_ldm(k, unet_config): v
             for k, v in load_file(folder / "unet" / "diffusion_pytorch_model.safetensors").items()}
    blocks = len(_vae_blocks(folder))
    for k, v in load_file(folder / "vae" / "diffusion_pytorch_model.safetensors").items():
        state["first_stage_model." + vae_key_to_ldm(k, blocks)] = _vae_value_to_ldm(k, v)
    for k, v in open_clip_state(load_file(folder / "text_encoder_2" / "model.safetensors")).items():
        state["conditioner.embedders.0.model." + k] = v
    save_file({k: v.contiguous() for k, v in state.items()}, folder.parent / "tiny_refiner.safetensors")
    return folder


def _refine(refiner, name, latents, strength=0.5):
    from nodes.diffusion.sdxl_text import TextEncoderSDXLRefiner

    ctx = _ctx(refiner)
    loaded = Checkpoint().run(ctx, name, "fp32", "auto")
    assert loaded["model"].family.name == "sdxl_refiner" and len(loaded["clip"].encoders) == 1
    encode = TextEncoderSDXLRefiner()
    positive = encode.run(ctx, loaded["clip"], "a red circle", 6.0, 32, 32)
    negative = encode.run(ctx, loaded["clip"], "a blue square", 2.5, 32, 32)
    guider = CFG().run(ctx, loaded["model"], positive, negative, SCALE, 0.0)
    from nodes.diffusion.types import Latent

    out = Sampler().run(ctx, Noise().run(ctx, SEED), guider, Latent(latents), "euler", "normal", 4, strength, 0.0)
    return VAEDecode().run(ctx, loaded["vae"], out, "off", 512).numpy()


@pytest.mark.slow
def test_refiner_equals_the_sdxl_refiner_pipeline_and_its_single_file(refiner):
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline

    latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1)) * 0.5
    ours = _refine(refiner, refiner.name, latents)
    pipe = StableDiffusionXLImg2ImgPipeline.from_pretrained(refiner, local_files_only=True)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    reference = pipe(
        prompt="a red circle", negative_prompt="a blue square", image=latents, strength=0.5, num_inference_steps=4,
        guidance_scale=SCALE, aesthetic_score=6.0, negative_aesthetic_score=2.5, original_size=(32, 32),
        target_size=(32, 32), generator=torch.Generator("cpu").manual_seed(SEED), output_type="np",
    ).images
    assert np.abs(ours - reference).max() <= 1e-4
    single = _refine(refiner, "tiny_refiner.safetensors", latents)
    assert np.abs(single - ours).max() <= 1e-4
