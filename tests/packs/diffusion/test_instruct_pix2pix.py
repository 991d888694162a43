"""InstructPix2Pix on a tiny 8-channel model: the graph's image equals diffusers'
StableDiffusionInstructPix2PixPipeline at image guidance 1 (ComfyUI's two-pass form), as a
folder and as one original-layout file; the image to edit matters; a model that needs it
and has none is refused naming the field."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import nodes.diffusion.impl  # noqa: E402,F401  (torchvision shim before diffusers' pipelines)
from nodeflow import NodeError, RunContext, RunSettings  # noqa: E402
from nodes.diffusion.instruct_pix2pix import InstructPixToPixConditioning  # noqa: E402
from nodes.diffusion.loaders import Checkpoint  # noqa: E402
from nodes.diffusion.sampling import CFG, Noise, Sampler  # noqa: E402
from nodes.diffusion.text import TextEncoder  # noqa: E402
from nodes.diffusion.vae import VAEDecode  # noqa: E402
from tests.support.tiny_models import save_single_file, shared_tiny_sd  # noqa: E402

PROMPT, NEGATIVE, SEED, STEPS, SCALE = "make it a blue square", "blurry", 21, 4, 7.5


@pytest.fixture(scope="module")
def ip2p(tmp_path_factory):
    """The tiny SD model with an 8-channel UNet (random, seeded): a folder and a single file."""
    from diffusers import UNet2DConditionModel

    root = tmp_path_factory.mktemp("ip2p")
    folder = root / "tiny-ip2p"
    shutil.copytree(shared_tiny_sd(tmp_path_factory), folder)
    config = UNet2DConditionModel.load_config(folder / "unet")
    torch.manual_seed(3)
    UNet2DConditionModel.from_config({**config, "in_channels": 8}).save_pretrained(folder / "unet")
    single = save_single_file(folder, root / "files" / "tiny-ip2p.safetensors")
    return folder, single


@pytest.fixture(scope="module")
def picture():
    pixels = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    pixels[:, 8:24, 8:24] = (255, 51, 26)
    return torch.from_numpy(pixels.astype(np.float32) / 255.0)  # values a PNG holds exactly


def _edit(folder, name, picture, image=True):
    ctx = RunContext(device="cpu", settings=RunSettings(model_folders={"checkpoints": [folder]}))
    loaded = Checkpoint().run(ctx, checkpoint=name, dtype="fp32", prediction="auto")
    encode = TextEncoder()
    positive = encode.run(RunContext(), clip=loaded["clip"], text=PROMPT, clip_skip=1)
    negative = encode.run(RunContext(), clip=loaded["clip"], text=NEGATIVE, clip_skip=1)
    conditioned = InstructPixToPixConditioning().run(RunContext(), positive, negative, loaded["vae"], picture)
    if not image:
        conditioned["positive"], conditioned["negative"] = positive, negative
    guider = CFG().run(RunContext(), loaded["model"], conditioned["positive"], conditioned["negative"], SCALE, 0.0)
    latent = Sampler().run(RunContext(), noise=Noise().run(RunContext(), seed=SEED), guider=guider,
                           latent=conditioned["latent"], sampler="euler", schedule="normal", steps=STEPS, denoise=1.0,
                           eta=0.0)
    return VAEDecode().run(RunContext(), latent=latent, vae=loaded["vae"], tiling="off", tile_size=512).numpy()


def test_the_edit_equals_diffusers_instruct_pix2pix_pipeline(ip2p, picture):
    from diffusers import EulerDiscreteScheduler, StableDiffusionInstructPix2PixPipeline
    from PIL import Image

    folder, single = ip2p
    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(folder, local_files_only=True, safety_checker=None)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    source = Image.fromarray((picture[0].numpy() * 255).round().astype(np.uint8))
    reference = pipe(PROMPT, image=source, negative_prompt=NEGATIVE, num_inference_steps=STEPS, guidance_scale=SCALE,
                     image_guidance_scale=1.0, generator=torch.Generator("cpu").manual_seed(SEED),
                     output_type="np").images
    ours = _edit(folder.parent, folder.name, picture)
    assert ours.shape == reference.shape == (1, 32, 32, 3)
    # The pipeline runs three passes (prompt + image, negative + image, negative without it)
    # and mixes them as uncond + g (text - image) + 1 (image - uncond): the same prediction as
    # CFG over the first two, up to rounding.
    assert np.abs(ours - reference).max() <= 1e-4
    from_file = _edit(single.parent, single.name, picture)
    assert np.abs(from_file - ours).max() <= 1e-4  # the original layout loads as the folder


def test_the_image_to_edit_matters_and_without_it_the_model_is_refused(ip2p, picture):
    folder, _ = ip2p
    other = torch.flip(picture, dims=[2]) * 0.5
    assert np.abs(_edit(folder.parent, folder.name, picture) - _edit(folder.parent, folder.name, other)).max() > 1e-3
    with pytest.raises(NodeError, match="InstructPix2Pix model .8 input channels.: give it the image to edit") as error:
        _edit(folder.parent, folder.name, picture, image=False)
    assert error.value.field == "latent"


def test_a_side_that_is_not_a_multiple_of_the_factor_is_cropped_centred(ip2p):
    folder, _ = ip2p
    ctx = RunContext(device="cpu", settings=RunSettings(model_folders={"checkpoints": [folder.parent]}))
    loaded = Checkpoint().run(ctx, checkpoint=folder.name, dtype="fp32", prediction="auto")
    cond = TextEncoder().run(RunContext(), clip=loaded["clip"], text=PROMPT, clip_skip=1)
    out = InstructPixToPixConditioning().run(RunContext(), cond, cond, loaded["vae"], torch.rand(1, 35, 33, 3))
    factor = loaded["vae"].family.vae_scale_factor
    assert out["latent"].samples.shape[-2:] == (35 // factor, 33 // factor)
    assert out["positive"].extras["edited_latent"].shape[-2:] == out["latent"].samples.shape[-2:]
