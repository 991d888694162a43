"""The correctness anchor: a nodeflow graph and diffusers' pipelines give the same image.

The shipped workflows are run with their Checkpoint pointed at the tiny SD-1.x model;
the reference is StableDiffusionPipeline / StableDiffusionImg2ImgPipeline on the same
weights, with a CPU generator of the same seed and output_type="np".
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import nodeflow.api as api  # noqa: E402
from nodeflow import RunSettings  # noqa: E402
from tests.support.tiny_models import save_single_file, shared_tiny_sd  # noqa: E402
from tests.support import WORKFLOWS

WORKFLOWS = WORKFLOWS
PROMPT = "a red circle on a blue background"
NEGATIVE = "a green background"
SEED = 1234
STEPS = 4
SCALE = 7.5
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return shared_tiny_sd(tmp_path_factory)


@pytest.fixture(scope="module")
def pipe(tiny_sd):
    import torch
    from diffusers import StableDiffusionPipeline

    torch.manual_seed(0)
    pipeline = StableDiffusionPipeline.from_pretrained(tiny_sd, local_files_only=True, safety_checker=None)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture(scope="module")
def txt2img(tiny_sd):
    """The shipped txt2img workflow on the tiny model; one Flow, so its cache carries over."""
    flow = api.open(WORKFLOWS / "txt2img.json", device="cpu")
    flow.set("1.checkpoint", tiny_sd.name).set("Prompt.text", PROMPT).set("Negative prompt.text", NEGATIVE)
    flow.set("5.seed", SEED).set("6.scale", SCALE).set("7.steps", STEPS)
    return flow


def _settings(tiny_sd: Path, *more_folders: Path) -> RunSettings:
    """Run settings under which Checkpoint values name files next to the tiny model."""
    return RunSettings(model_folders={"checkpoints": [tiny_sd.parent, *more_folders]})


def _reference(pipe, scheduler_class: str, steps: int = STEPS, **scheduler_settings) -> np.ndarray:
    import diffusers
    import torch

    original = pipe.scheduler
    pipe.scheduler = getattr(diffusers, scheduler_class).from_config(original.config, **scheduler_settings)
    try:
        return pipe(
            PROMPT, negative_prompt=NEGATIVE, num_inference_steps=steps, guidance_scale=SCALE,
            generator=torch.Generator("cpu").manual_seed(SEED), height=32, width=32, output_type="np",
        ).images
    finally:
        pipe.scheduler = original


def _image(result, node_id: str = "9") -> np.ndarray:
    return result.outputs[node_id]["images"].numpy()


@pytest.mark.parametrize(
    "sampler, schedule, scheduler_class, settings",
    [
        ("ddim", "normal", "DDIMScheduler", {}),
        ("euler", "normal", "EulerDiscreteScheduler", {}),
        ("euler_ancestral", "normal", "EulerAncestralDiscreteScheduler", {}),
        ("dpmpp_2m", "normal", "DPMSolverMultistepScheduler", {}),
        ("dpmpp_2m", "karras", "DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    ],
)
def test_txt2img_equals_stable_diffusion_pipeline(txt2img, tiny_sd, pipe, tmp_path, sampler, schedule, scheduler_class, settings):
    txt2img.set("7.sampler", sampler).set("7.schedule", schedule)
    ours = _image(txt2img.run(output_dir=tmp_path, settings=_settings(tiny_sd)))
    reference = _reference(pipe, scheduler_class, **settings)
    assert ours.shape == reference.shape == (1, 32, 32, 3)
    assert ours.dtype == np.float32
    assert np.abs(ours - reference).max() <= TOLERANCE


UNIPC_STEPS = 8  # third order is used from the third of 5+ steps; at 4 it is never reached


def test_comfyuis_unipc_variants_equal_diffusers_unipc_so_configured_and_differ(txt2img, tiny_sd, pipe, tmp_path):
    """unipc_bh1 / unipc_bh2 (what ComfyUI's uni_pc / uni_pc_bh2 import as) run as diffusers'
    UniPCMultistepScheduler with that variant at third order; the two are different solvers,
    and both differ from diffusers' default UniPC (bh2, second order)."""
    configs = {"unipc_bh1": {"solver_type": "bh1", "solver_order": 3, "final_sigmas_type": "sigma_min"},
               "unipc_bh2": {"solver_type": "bh2", "solver_order": 3}, "unipc": {}}
    images = {}
    try:
        txt2img.set("7.steps", UNIPC_STEPS)
        for sampler, settings in configs.items():
            txt2img.set("7.sampler", sampler).set("7.schedule", "normal")
            images[sampler] = _image(txt2img.run(output_dir=tmp_path / sampler, settings=_settings(tiny_sd)))
            reference = _reference(pipe, "UniPCMultistepScheduler", steps=UNIPC_STEPS, **settings)
            assert np.isfinite(images[sampler]).all()
            assert np.abs(images[sampler] - reference).max() <= TOLERANCE, sampler
    finally:
        txt2img.set("7.steps", STEPS)
    assert np.abs(images["unipc_bh1"] - images["unipc_bh2"]).max() > 1e-3
    assert np.abs(images["unipc"] - images["unipc_bh2"]).max() > 1e-3


@pytest.mark.parametrize("steps", [UNIPC_STEPS, 16])  # 16: past diffusers' lower_order_final (under 15 steps)
def test_comfyuis_deis_equals_diffusers_deis_at_third_order(txt2img, tiny_sd, pipe, tmp_path, steps):
    """deis (ComfyUI's deis, max order 3) runs as diffusers' DEISMultistepScheduler at
    solver_order 3, which differs from its default second order."""
    try:
        txt2img.set("7.steps", steps).set("7.sampler", "deis").set("7.schedule", "normal")
        ours = _image(txt2img.run(output_dir=tmp_path, settings=_settings(tiny_sd)))
    finally:
        txt2img.set("7.steps", STEPS)
    assert np.isfinite(ours).all()
    assert np.abs(ours - _reference(pipe, "DEISMultistepScheduler", steps=steps, solver_order=3)).max() <= TOLERANCE
    assert np.abs(ours - _reference(pipe, "DEISMultistepScheduler", steps=steps)).max() > 1e-3


def test_comfyuis_dpmpp_2m_sde_heun_is_diffusers_sde_solver_with_heuns_correction(txt2img, tiny_sd, pipe, tmp_path):
    txt2img.set("7.sampler", "dpmpp_2m_sde_heun").set("7.schedule", "normal")
    ours = _image(txt2img.run(output_dir=tmp_path, settings=_settings(tiny_sd)))
    reference = _reference(pipe, "DPMSolverMultistepScheduler", algorithm_type="sde-dpmsolver++", solver_type="heun")
    assert np.abs(ours - reference).max() <= TOLERANCE
    midpoint = _reference(pipe, "DPMSolverMultistepScheduler", algorithm_type="sde-dpmsolver++")
    assert np.abs(ours - midpoint).max() > 1e-3


def test_img2img_equals_img2img_pipeline(tiny_sd, pipe, tmp_path):
    """VAEEncode uses the latent distribution's mean (deterministic); the pipeline is
    given that same latent, so what is compared is everything after encoding: the
    strength/denoise schedule cut, the noising of the start and every step."""
    import torch
    from diffusers import StableDiffusionImg2ImgPipeline
    from PIL import Image

    inputs = tmp_path / "input"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(inputs / "example.png")

    flow = api.open(WORKFLOWS / "img2img.json", device="cpu")
    flow.set("1.checkpoint", tiny_sd.name).set("Prompt.text", PROMPT).set("Negative prompt.text", NEGATIVE)
    flow.set("6.seed", SEED).set("7.scale", SCALE).set("8.steps", 5).set("8.sampler", "euler")
    assert flow.get("8.denoise") == 0.6
    ours = _image(flow.run(output_dir=tmp_path / "out", input_dir=inputs, settings=_settings(tiny_sd)), "10")

    img2img = StableDiffusionImg2ImgPipeline(**pipe.components)
    img2img.scheduler = __import__("diffusers").EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    img2img.set_progress_bar_config(disable=True)
    with torch.no_grad():
        pixels = img2img.image_processor.preprocess(Image.open(inputs / "example.png"))
        latents = pipe.vae.encode(pixels).latent_dist.mode() * pipe.vae.config.scaling_factor
    reference = img2img(
        PROMPT, image=latents, strength=0.6, negative_prompt=NEGATIVE, num_inference_steps=5,
        guidance_scale=SCALE, generator=torch.Generator("cpu").manual_seed(SEED), output_type="np",
    ).images
    assert np.abs(ours - reference).max() <= TOLERANCE
    # Denoise 0.6 starts from the input image: another image gives another result.
    Image.fromarray(255 - np.asarray(Image.open(inputs / "example.png"))).save(inputs / "other.png")
    flow.set("2.image", "other.png")
    assert np.abs(_image(flow.run(output_dir=tmp_path / "out", input_dir=inputs, settings=_settings(tiny_sd)), "10") - ours).max() > 1e-3


def test_single_file_checkpoint_gives_the_same_image(txt2img, tiny_sd, pipe, tmp_path):
    txt2img.set("7.sampler", "euler").set("7.schedule", "normal")
    from_folder = _image(txt2img.run(output_dir=tmp_path / "a", settings=_settings(tiny_sd)))
    single = save_single_file(tiny_sd, tmp_path / "tiny.safetensors")
    txt2img.set("1.checkpoint", single.name)
    try:
        from_file = _image(txt2img.run(output_dir=tmp_path / "b", settings=_settings(tiny_sd, tmp_path)))
    finally:
        txt2img.set("1.checkpoint", tiny_sd.name)
    assert np.abs(from_file - from_folder).max() <= TOLERANCE
    assert np.abs(from_file - _reference(pipe, "EulerDiscreteScheduler")).max() <= TOLERANCE


def test_changing_the_seed_reruns_only_noise_sampler_decode_and_save(txt2img, tiny_sd, tmp_path):
    txt2img.set("7.sampler", "euler").set("7.schedule", "normal")
    first = txt2img.run(output_dir=tmp_path, settings=_settings(tiny_sd))
    txt2img.set("5.seed", SEED + 1)
    try:
        second = txt2img.run(output_dir=tmp_path, settings=_settings(tiny_sd))
    finally:
        txt2img.set("5.seed", SEED)
    assert set(second.executed) == {"5", "7", "8", "9"}  # Noise, Sampler, VAEDecode, SaveImage
    assert {"1", "2", "3", "4", "6"} <= set(second.cached)  # models and text encodings from the cache
    assert np.abs(_image(first) - _image(second)).max() > 1e-3
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["txt2img_00001.png", "txt2img_00002.png"]


def test_same_seed_gives_the_same_image_in_a_fresh_executor(txt2img, tiny_sd, tmp_path):
    txt2img.set("7.sampler", "euler_ancestral").set("7.schedule", "normal")
    ours = _image(txt2img.run(output_dir=tmp_path / "a", settings=_settings(tiny_sd)))
    again = api.open(WORKFLOWS / "txt2img.json", device="cpu")
    again.set("1.checkpoint", tiny_sd.name).set("Prompt.text", PROMPT).set("Negative prompt.text", NEGATIVE)
    again.set("5.seed", SEED).set("6.scale", SCALE).set("7.steps", STEPS).set("7.sampler", "euler_ancestral")
    assert np.array_equal(_image(again.run(output_dir=tmp_path / "b", settings=_settings(tiny_sd))), ours)


def test_default_workflow_settings_and_run(tiny_sd, tmp_path):
    flow = api.open(WORKFLOWS / "default.json", device="cpu")
    assert flow.get("1.checkpoint") == "shapes"
    assert flow.get("Prompt.text") == "a red circle on a blue background"
    assert flow.get("Negative prompt.text")
    assert (flow.get("4.width"), flow.get("4.height"), flow.get("7.steps")) == (32, 32, 20)
    assert (flow.get("7.sampler"), flow.get("9.filename_prefix")) == ("dpmpp_2m", "nodeflow")
    flow.set("1.checkpoint", tiny_sd.name).set("7.steps", 2)
    result = flow.run(output_dir=tmp_path, settings=_settings(tiny_sd))
    assert [p.name for p in result.files] == ["nodeflow_00001.png"]


def test_sdxl_added_conditions_match_the_sdxl_pipeline(pipe):
    """SDXL-family models also get pooled text embeddings and size/crop time ids; with
    the same embeddings the Sampler's latents equal StableDiffusionXLPipeline's."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    from nodeflow import NodeError, RunContext
    from nodes.diffusion.types import Conditioning, DiffusionModel, Latent, ModelFamily, NoiseSource
    from nodes.diffusion.sampling import CFG, Sampler

    torch.manual_seed(0)
    text_dim, pooled_dim, time_dim = 32, 16, 8
    unet = UNet2DConditionModel(
        sample_size=8, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=text_dim, attention_head_dim=8, addition_embed_type="text_time",
        addition_time_embed_dim=time_dim, projection_class_embeddings_input_dim=pooled_dim + 6 * time_dim,
    ).eval()
    scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    g = torch.Generator().manual_seed(3)
    embeds, negative_embeds = torch.randn(2, 1, 77, text_dim, generator=g)
    pooled, negative_pooled = torch.randn(2, 1, pooled_dim, generator=g)

    xl = StableDiffusionXLPipeline(
        vae=pipe.vae, text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None,
        unet=unet, scheduler=scheduler, add_watermarker=False,
    )
    xl.set_progress_bar_config(disable=True)
    reference = xl(
        prompt_embeds=embeds, negative_prompt_embeds=negative_embeds, pooled_prompt_embeds=pooled,
        negative_pooled_prompt_embeds=negative_pooled, num_inference_steps=3, guidance_scale=5.0,
        generator=torch.Generator("cpu").manual_seed(SEED), height=24, width=16, output_type="latent",
    ).images

    family = ModelFamily("sdxl", 4, 2, uses_pooled=True)
    model = DiffusionModel(unet, family, dict(scheduler.config))
    guider = CFG().run(RunContext(), model, Conditioning(embeds, pooled), Conditioning(negative_embeds, negative_pooled), 5.0, 0.0)
    ours = Sampler().run(
        RunContext(), NoiseSource(SEED), guider, Latent(torch.zeros(1, 4, 12, 8), family), "euler", "normal", 3, 1.0, 0.0
    ).samples
    assert (ours - reference).abs().max() <= TOLERANCE

    unpooled = CFG().run(RunContext(), model, Conditioning(embeds), Conditioning(negative_embeds, negative_pooled), 5.0, 0.0)
    with pytest.raises(NodeError, match='field "guider".*positive conditioning has no pooled'):
        Sampler().run(RunContext(), NoiseSource(SEED), unpooled, Latent(torch.zeros(1, 4, 12, 8), family),
                      "euler", "normal", 3, 1.0, 0.0)
