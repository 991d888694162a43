"""Noise, guiders and the Sampler on the tiny SD model: every sampler/schedule pair, CFG
numerics and batching, seeds, previews and interruption."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from nodeflow import Interrupted, NodeError, RunContext, RunSettings  # noqa: E402
from nodes.diffusion.impl.preview import latent_preview, latent_rgb_map  # noqa: E402
from nodes.diffusion.impl.samplers import SAMPLERS, SCHEDULES, make_scheduler, schedules_for  # noqa: E402
from nodes.diffusion.types import Conditioning, Latent, NoiseSource  # noqa: E402
from nodes.diffusion.latent import EmptyLatent  # noqa: E402
from nodes.diffusion.loaders import Checkpoint  # noqa: E402
from nodes.diffusion.sampling import CFG, BasicGuider, Noise, Sampler  # noqa: E402
from nodes.diffusion.text import TextEncoder  # noqa: E402
from tests.support import host_context  # noqa: E402
from tests.support.tiny_models import shared_tiny_sd  # noqa: E402
from tests.support import WORKFLOWS

WORKFLOWS = WORKFLOWS


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return shared_tiny_sd(tmp_path_factory)


@pytest.fixture(scope="module")
def parts(tiny_sd):
    ctx = RunContext(device="cpu", settings=model_settings(tiny_sd))
    loaded = Checkpoint().run(ctx, checkpoint=tiny_sd.name, dtype="fp32", prediction="auto")
    encode = TextEncoder()
    loaded["positive"] = encode.run(RunContext(), clip=loaded["clip"], text="a red circle", clip_skip=1)
    loaded["negative"] = encode.run(RunContext(), clip=loaded["clip"], text="a blue square", clip_skip=1)
    return loaded


def model_settings(tiny_sd: Path) -> RunSettings:
    """Run settings under which the Checkpoint value ``tiny_sd.name`` finds the tiny model."""
    return RunSettings(model_folders={"checkpoints": [tiny_sd.parent]})


def latent_for(parts, side: int = 16, batch: int = 1) -> Latent:
    return EmptyLatent().run(RunContext(), width=side, height=side, batch=batch, vae=parts["vae"])


def sample(guider, latent, seed=0, sampler="euler", schedule="normal", steps=2, denoise=1.0, eta=0.0, ctx=None):
    return Sampler().run(
        ctx or RunContext(), noise=Noise().run(RunContext(), seed=seed), guider=guider, latent=latent,
        sampler=sampler, schedule=schedule, steps=steps, denoise=denoise, eta=eta,
    ).samples


def cfg(parts, scale=7.0, rescale=0.0):
    return CFG().run(RunContext(), parts["model"], parts["positive"], parts["negative"], scale, rescale)


class UNetCalls:
    """Counts the UNet's forward calls and their batch sizes."""

    def __init__(self, unet):
        self.batches: list[int] = []
        self._handle = unet.register_forward_pre_hook(lambda module, args: self.batches.append(args[0].shape[0]))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.remove()


# ------------------------------------------------------------------ samplers x schedules
def test_every_supported_sampler_and_schedule_runs(parts):
    guider = BasicGuider().run(RunContext(), parts["model"], parts["positive"])
    latent = latent_for(parts, side=8)
    ran = []
    for sampler in SAMPLERS:
        for schedule in schedules_for(sampler):
            steps: list[tuple[int, int]] = []
            ctx = RunContext(on_progress=lambda i, n, preview: steps.append((i, n)))
            out = sample(guider, latent, sampler=sampler, schedule=schedule, steps=2, ctx=ctx)
            assert out.shape == latent.samples.shape and torch.isfinite(out).all(), (sampler, schedule)
            assert steps and steps[-1][0] == steps[-1][1], (sampler, schedule)
            ran.append((sampler, schedule))
    assert len(ran) >= 45
    assert {"normal", "karras", "exponential", "simple", "linear"} <= set(schedules_for("dpmpp_2m"))


def test_schedules_change_the_noise_levels(parts):
    config = parts["model"].scheduler_config
    sigmas = {}
    for schedule in ("normal", "karras", "exponential"):
        scheduler = make_scheduler("euler", schedule, config)
        scheduler.set_timesteps(6)
        sigmas[schedule] = scheduler.sigmas
    assert not torch.allclose(sigmas["normal"], sigmas["karras"])
    assert not torch.allclose(sigmas["karras"], sigmas["exponential"])
    spacing = {}
    for schedule in ("normal", "simple", "linear"):
        scheduler = make_scheduler("ddim", schedule, config)
        scheduler.set_timesteps(4)
        spacing[schedule] = scheduler.timesteps.tolist()
    assert len({tuple(v) for v in spacing.values()}) == 3


@pytest.mark.parametrize("sampler, schedule", [("ddpm", "karras"), ("ddim", "exponential"), ("lcm", "karras")])
def test_unsupported_combinations_are_refused_naming_the_field(parts, sampler, schedule):
    assert schedule not in schedules_for(sampler)
    with pytest.raises(NodeError, match=rf'field "schedule".*{sampler}.*{schedule}'):
        sample(cfg(parts), latent_for(parts, 8), sampler=sampler, schedule=schedule)


def test_eta_is_refused_where_diffusers_has_no_eta_and_used_by_ddim(parts):
    guider, latent = cfg(parts), latent_for(parts, 8)
    with pytest.raises(NodeError, match='field "eta".*ddim'):
        sample(guider, latent, sampler="euler_ancestral", eta=0.5)
    deterministic = sample(guider, latent, sampler="ddim", steps=3, eta=0.0)
    noisy = sample(guider, latent, sampler="ddim", steps=3, eta=1.0)
    assert (deterministic - noisy).abs().max() > 1e-3


def test_sampler_lists_are_complete():
    expected = {"ddpm", "ddim", "euler", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms",
                "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_sde", "unipc", "lcm"}
    assert expected <= set(SAMPLERS)
    assert {"normal", "karras", "exponential", "simple", "linear"} <= set(SCHEDULES)
    assert set(Sampler.inputs["sampler"].choices) == set(SAMPLERS)


# ------------------------------------------------------------------ seeds
def test_seed_gives_the_same_noise_and_another_seed_another(parts):
    guider, latent = cfg(parts), latent_for(parts, 8)
    first = sample(guider, latent, seed=5, sampler="euler_ancestral")
    assert torch.equal(first, sample(guider, latent, seed=5, sampler="euler_ancestral"))
    assert (first - sample(guider, latent, seed=6, sampler="euler_ancestral")).abs().max() > 1e-3


def test_largest_seed_is_accepted_and_dpmpp_sde_is_deterministic_per_seed(parts):
    biggest = Noise.inputs["seed"].validate(2**64 - 1)
    guider, latent = cfg(parts), latent_for(parts, 8)
    first = sample(guider, latent, seed=biggest, sampler="dpmpp_sde")
    assert torch.isfinite(first).all()
    assert torch.equal(first, sample(guider, latent, seed=biggest, sampler="dpmpp_sde"))


# ------------------------------------------------------------------ guidance
def test_cfg_batches_cond_and_uncond_in_one_call_and_scale_1_skips_uncond(parts):
    unet, latent = parts["model"].unet, latent_for(parts, 8)
    with UNetCalls(unet) as calls:
        sample(cfg(parts, 7.0), latent, steps=3)
    assert calls.batches == [2, 2, 2]
    with UNetCalls(unet) as calls:
        sample(cfg(parts, 1.0), latent, steps=3)
    assert calls.batches == [1, 1, 1]


def test_cfg_prediction_is_uncond_plus_scale_times_difference(parts):
    unet = parts["model"].unet
    x, t = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor(500)
    with torch.inference_mode():
        guided = cfg(parts, 5.0).bind(x)(x, t)
        cond = unet(x, t, encoder_hidden_states=parts["positive"].embeds).sample
        uncond = unet(x, t, encoder_hidden_states=parts["negative"].embeds).sample
        plain = BasicGuider().run(RunContext(), parts["model"], parts["positive"]).bind(x)(x, t)
    # One batched call vs two single calls: equal up to float rounding.
    torch.testing.assert_close(guided, uncond + 5.0 * (cond - uncond), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(plain, cond, atol=1e-6, rtol=1e-6)


def test_guidance_rescale_matches_diffusers(parts):
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

    unet = parts["model"].unet
    x, t = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor(300)
    with torch.inference_mode():
        rescaled = cfg(parts, 9.0, 0.7).bind(x)(x, t)
        cond = unet(x, t, encoder_hidden_states=parts["positive"].embeds).sample
        uncond = unet(x, t, encoder_hidden_states=parts["negative"].embeds).sample
    expected = rescale_noise_cfg(uncond + 9.0 * (cond - uncond), cond, guidance_rescale=0.7)
    torch.testing.assert_close(rescaled, expected, atol=1e-4, rtol=1e-4)


def test_conditioning_is_broadcast_to_the_latent_batch(parts):
    out = sample(cfg(parts), latent_for(parts, 8, batch=2), steps=2)
    assert out.shape[0] == 2 and (out[0] - out[1]).abs().max() > 1e-3  # each image has its own noise
    three = Conditioning(parts["positive"].embeds.repeat(3, 1, 1))
    guider = CFG().run(RunContext(), parts["model"], three, parts["negative"], 7.0, 0.0)
    with pytest.raises(NodeError, match='field "guider".*batch of 3.*2'):
        sample(guider, latent_for(parts, 8, batch=2))


def test_different_token_lengths_fall_back_to_two_calls(parts):
    long = Conditioning(torch.cat([parts["positive"].embeds] * 2, dim=1))
    guider = CFG().run(RunContext(), parts["model"], long, parts["negative"], 7.0, 0.0)
    with UNetCalls(parts["model"].unet) as calls:
        out = sample(guider, latent_for(parts, 8), steps=2)
    assert calls.batches == [1, 1, 1, 1] and torch.isfinite(out).all()


# ------------------------------------------------------------------ img2img, previews, interrupt
def test_denoise_keeps_the_input_latent_in_proportion(parts):
    guider = cfg(parts)
    start = Latent(torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2)), parts["model"].family)
    distance = {d: (sample(guider, start, steps=10, denoise=d) - start.samples).abs().mean().item() for d in (0.2, 0.9)}
    assert distance[0.2] < distance[0.9]
    assert torch.equal(sample(guider, start, steps=10, denoise=0.0), start.samples)


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m"])
def test_progress_reports_every_step_with_a_preview_of_x0(parts, sampler):
    reports = []
    ctx = RunContext(on_progress=lambda i, n, preview: reports.append((i, n, preview)))
    out = sample(cfg(parts), latent_for(parts, 16), sampler=sampler, steps=3, ctx=ctx)
    assert [(i, n) for i, n, _ in reports] == [(1, 3), (2, 3), (3, 3)]
    assert all(preview.size == (8, 8) and preview.mode == "RGB" for _, _, preview in reports)
    # The last step lands on its own x0 estimate, so the last preview shows the result.
    final = np.asarray(latent_preview(out, latent_rgb_map(parts["model"].family, 4)), dtype=int)
    assert np.abs(np.asarray(reports[-1][2], dtype=int) - final).max() <= 1


def test_interrupt_stops_between_steps(parts):
    seen = []
    ctx = RunContext(on_progress=lambda i, n, p: seen.append(i), is_interrupted=lambda: len(seen) >= 2)
    with pytest.raises(Interrupted):
        sample(cfg(parts), latent_for(parts, 8), steps=10, ctx=ctx)
    assert seen == [1, 2]


def test_interrupt_mid_sampling_in_a_workflow_run(tiny_sd, tmp_path):
    import nodeflow.api as api
    from nodeflow.engine.events import Progress

    flow = api.open(WORKFLOWS / "txt2img.json", device="cpu")
    flow.set("1.checkpoint", tiny_sd.name).set("7.steps", 20)
    steps = []

    def on_event(event):
        if isinstance(event, Progress):
            steps.append(event.step)
            if event.step == 3:
                flow.interrupt()

    result = flow.run(output_dir=tmp_path, on_event=on_event, settings=model_settings(tiny_sd), check=False)
    assert result.status == "interrupted"
    assert steps == [1, 2, 3] and "7" not in result.executed
    assert not list(tmp_path.glob("*.png"))


def test_disable_noise_starts_from_the_input_latent_as_it_is(parts):
    from nodes.diffusion.sampling import DisableNoise

    guider = BasicGuider().run(RunContext(), parts["model"], parts["positive"])
    empty = latent_for(parts, side=8)
    noisy = Latent(torch.randn(empty.samples.shape, generator=torch.Generator().manual_seed(3)), empty.family)

    def run(latent):
        return Sampler().run(
            RunContext(), noise=DisableNoise().run(RunContext()), guider=guider, latent=latent,
            sampler="euler", schedule="normal", steps=3, denoise=1.0, eta=0.0,
        ).samples

    first, again = run(noisy), run(noisy)
    assert torch.equal(first, again)  # nothing random is drawn
    assert not torch.allclose(first, run(empty))  # the input latent is the starting point
    seeded = sample(guider, noisy, seed=0, steps=3)
    assert not torch.allclose(first, seeded)  # a seed would have replaced it with fresh noise


def test_previews_use_the_checkpoints_own_latent_rgb_map(parts):
    import dataclasses

    red = torch.zeros(parts["model"].family.latent_channels + 1, 3)
    red[-1] = torch.tensor([1.0, -1.0, -1.0])  # bias only: every latent pixel previews pure red
    model = dataclasses.replace(parts["model"], latent_rgb=red)
    previews = []
    ctx = RunContext(on_progress=lambda step, total, preview: previews.append(preview))
    sample(BasicGuider().run(RunContext(), model, parts["positive"]), latent_for(parts, side=8), steps=2, ctx=ctx)
    pixels = np.asarray(previews[-1])
    assert (pixels[..., 0] == 255).all() and (pixels[..., 1:] == 0).all()


def test_bundled_checkpoint_hands_its_fitted_preview_map_to_the_model():
    loaded = Checkpoint().run(host_context(), checkpoint="shapes", dtype="fp32", prediction="auto")
    assert loaded["model"].latent_rgb is not None
    assert torch.equal(loaded["model"].latent_rgb, loaded["vae"].latent_rgb)


def test_previews_are_skipped_when_the_host_shows_none(parts):
    guider = BasicGuider().run(RunContext(), parts["model"], parts["positive"])
    seen = []
    ctx = RunContext(settings=RunSettings(previews=False), on_progress=lambda step, total, preview: seen.append(preview))
    with_previews = sample(guider, latent_for(parts, side=8), steps=3)
    without = sample(guider, latent_for(parts, side=8), steps=3, ctx=ctx)
    assert seen == [None, None, None]  # progress still reported, step by step
    assert torch.equal(with_previews, without)  # and the image is the same


def test_declared_schedule_support_matches_the_installed_diffusers():
    """Validation reads the declaration (no diffusers import); it must match what the
    scheduler classes really accept, so a diffusers upgrade that changes it fails here."""
    from nodes.diffusion.impl.samplers import settings_accepted

    for sampler in SAMPLERS:
        for schedule in SCHEDULES:
            assert (schedule in schedules_for(sampler)) == settings_accepted(sampler, schedule), (sampler, schedule)


def test_an_unsupported_sampler_and_schedule_pair_fails_validation_not_the_run(tmp_path):
    from nodeflow.api import Flow  # noqa: F401  (the public path users take)
    from nodeflow.model.registry import default_registry
    from nodeflow.model.validation import validate
    from nodeflow.files.open import load_workflow

    workflow = load_workflow("workflows/default.json", default_registry())
    sampler = next(n for n in workflow.graph.nodes.values() if n.type == "Sampler")
    sampler.values.update(sampler="ddpm", schedule="karras", eta=0.5)
    problems = {(p.node_id, p.field): p.message for p in validate(workflow.graph)}
    assert "cannot use the karras schedule" in problems[(sampler.id, "schedule")]
    assert "eta applies only to the ddim sampler" in problems[(sampler.id, "eta")]


def test_a_sampler_that_cannot_run_a_connected_list_of_sigmas_is_refused_before_the_run():
    """SamplerCustom with DPM++ SDE (diffusers' DPMSolverSDEScheduler takes no sigma list and
    interleaves its own midpoints) and a Karras schedule: validation names the Sampler's
    field, instead of the run failing."""
    from nodeflow.files.open import workflow_from_dict
    from nodeflow.model.registry import default_registry
    from nodeflow.model.validation import validate

    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a circle", "clip": ["1", 1]}},
        "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 32, "height": 32, "batch_size": 1}},
        "4": {"class_type": "KarrasScheduler", "inputs": {"steps": 4, "sigma_max": 14.6, "sigma_min": 0.03, "rho": 7.0}},
        "5": {"class_type": "SamplerDPMPP_SDE", "inputs": {"eta": 1.0, "s_noise": 1.0, "r": 0.5, "noise_device": "gpu"}},
        "6": {"class_type": "SamplerCustom", "inputs": {"add_noise": True, "noise_seed": 1, "cfg": 5.0, "model": ["1", 0],
              "positive": ["2", 0], "negative": ["2", 0], "sampler": ["5", 0], "sigmas": ["4", 0], "latent_image": ["3", 0]}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "PreviewImage", "inputs": {"images": ["7", 0]}},
    }
    graph = workflow_from_dict(prompt, default_registry()).graph
    problems = [p for p in validate(graph) if p.node_type == "Sampler"]
    assert [p.field for p in problems] == ["sampler"]
    assert "dpmpp_sde sampler cannot run the list of sigmas" in problems[0].message and "euler" in problems[0].message
    prompt["5"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}}
    assert not [p for p in validate(workflow_from_dict(prompt, default_registry()).graph) if p.node_type == "Sampler"]
