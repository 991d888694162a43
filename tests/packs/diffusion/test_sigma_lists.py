"""Explicit noise schedules (SIGMAS) on the tiny SD model.

A list of sigmas equal to a scheduler's own schedule gives that schedule's image (exactly
for the samplers that take timesteps, to float rounding for euler, which recomputes
timesteps from float32 sigmas); Align Your Steps runs the published levels; a split
schedule run in two samplers equals the whole; a sampler that cannot take a list is
refused naming the ones that can; and the ComfyUI scheduler nodes that used to be
refused for their own sigma range import onto these nodes and run.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from nodeflow import NodeError, RunContext, RunSettings  # noqa: E402
from nodes.diffusion.impl.sample import sample as run_sample  # noqa: E402
from nodes.diffusion.impl.samplers import SAMPLERS, make_scheduler, sigma_list_samplers  # noqa: E402
from nodes.diffusion.impl.sigmas import AYS_SIGMAS, karras  # noqa: E402
from nodes.diffusion.sampling import CFG, DisableNoise, Noise, Sampler  # noqa: E402
from nodes.diffusion.sigmas import AlignYourStepsScheduler, ExponentialScheduler, KarrasScheduler, SplitSigmas  # noqa: E402
from nodes.diffusion.types import Sigmas  # noqa: E402
from tests.packs.diffusion.test_sampling import cfg, latent_for, parts, tiny_sd  # noqa: E402,F401  (fixtures)
from tests.support import FIXTURES  # noqa: E402

CTX = RunContext()


def _run(guider, latent, sampler="euler", schedule="normal", steps=4, sigmas=None, seed=3, noise=None, **kw):
    noise = noise if noise is not None else Noise().run(CTX, seed)
    return Sampler().run(CTX, noise, guider, latent, sampler, schedule, steps, 1.0, 0.0, sigmas=sigmas, **kw).samples


def _own_sigmas(parts, sampler, schedule, steps):
    scheduler = make_scheduler(sampler, schedule, parts["model"].scheduler_config)
    scheduler.set_timesteps(steps)
    return Sigmas(tuple(float(s) for s in scheduler.sigmas))


def test_the_samplers_that_take_lists_are_declared_as_diffusers_has_them():
    for name, spec in SAMPLERS.items():
        accepted = set(inspect.signature(make_scheduler(name, "normal", {}).set_timesteps).parameters)
        if spec.sigma_list == "assigned":  # set on the scheduler: its step reads only sigmas and timesteps
            assert "sigmas" not in accepted and hasattr(make_scheduler(name, "normal", {}), "sigmas"), name
        elif spec.sigma_list:
            assert spec.sigma_list in accepted, name
    assert set(sigma_list_samplers()) == {"euler", "euler_ancestral", "heun", "ddpm", "lms", "dpmpp_2m", "dpmpp_2m_sde",
                                          "dpmpp_2m_sde_heun", "dpmpp_3m_sde"}


@pytest.mark.parametrize("sampler,schedule", [("dpmpp_2m", "normal"), ("dpmpp_2m", "simple"), ("heun", "normal"),
                                              ("ddpm", "normal")])
def test_a_list_of_the_schedulers_own_sigmas_gives_its_image_exactly(parts, sampler, schedule):
    guider, latent = cfg(parts), latent_for(parts)
    own = _own_sigmas(parts, sampler, schedule, 4) if sampler != "ddpm" else None
    if own is None:  # DDPM keeps alphas: its steps' sigmas from its timesteps
        scheduler = make_scheduler(sampler, schedule, parts["model"].scheduler_config)
        scheduler.set_timesteps(4)
        bar = scheduler.alphas_cumprod
        own = Sigmas(tuple(float(((1 - bar[t]) / bar[t]) ** 0.5) for t in scheduler.timesteps) + (0.0,))
    if sampler == "heun":  # Heun keeps each sigma twice (its second-order half steps)
        own = Sigmas(own.values[::2] + (0.0,))
    expected = _run(guider, latent, sampler, schedule)
    assert torch.equal(_run(guider, latent, sampler, sigmas=own), expected)


def test_a_list_of_eulers_own_karras_sigmas_gives_its_image(parts):
    # The karras schedule spans the whole range whatever the checkpoint's spacing; with a
    # checkpoint spaced "linspace" the list path also starts its noise at the first level
    # (diffusers' "leading" scales it by sqrt(sigma^2 + 1)), so the two runs are the same.
    model = dataclasses.replace(parts["model"], scheduler_config={**parts["model"].scheduler_config,
                                                                   "timestep_spacing": "linspace"})
    guider, latent = CFG().run(CTX, model, parts["positive"], parts["negative"], 7.0, 0.0), latent_for(parts)
    own = _own_sigmas({"model": model}, "euler", "karras", 4)
    assert own.values == _own_sigmas(parts, "euler", "karras", 4).values
    expected = _run(guider, latent, "euler", "karras")
    got = _run(guider, latent, "euler", sigmas=own)
    assert torch.allclose(got, expected, atol=1e-4, rtol=0)
    assert not torch.allclose(got, _run(guider, latent, "euler", "normal"), atol=1e-3)


@pytest.mark.parametrize("sampler", ["euler", "heun", "lms", "dpm_2", "dpmpp_sde", "dpmpp_2m", "unipc"])
def test_karras_and_exponential_span_the_models_whole_range_for_every_sampler(parts, sampler):
    # As ComfyUI's KarrasScheduler at SD's range (and diffusers' multistep solvers) compute
    # it: diffusers' euler-family schedulers alone would start at the first spaced timestep.
    config = parts["model"].scheduler_config
    expected = {"karras": KarrasScheduler().run(CTX, 8, 14.614642, 0.0291675, 7.0).values,
                "exponential": ExponentialScheduler().run(CTX, 8, 14.614642, 0.0291675).values}
    for schedule, levels in expected.items():
        scheduler = make_scheduler(sampler, schedule, config)
        scheduler.set_timesteps(8)
        distinct = [float(s) for s in scheduler.sigmas]
        if scheduler.order == 2:  # second-order: each level but the first kept twice
            distinct = distinct[:1] + distinct[1::2]
        assert distinct[:8] == pytest.approx(levels[:8], rel=1e-3), schedule


def test_align_your_steps_runs_the_published_levels(parts):
    seen = []
    sigmas = AlignYourStepsScheduler().run(CTX, "SD1", 10, 1.0)
    run_sample(CTX, Noise().run(CTX, 1), cfg(parts), latent_for(parts), "euler", "normal", 10, 1.0, 0.0,
               trace=lambda view: seen.append(view.sigma), sigmas=sigmas)
    assert seen == pytest.approx(list(AYS_SIGMAS["SD1"][:-1]), rel=1e-4)
    # other step counts are spread log-linearly: every second of 20 levels is a published one
    twenty = AlignYourStepsScheduler().run(CTX, "SDXL", 20, 1.0)
    assert twenty.values[:-1:2] == pytest.approx(AYS_SIGMAS["SDXL"][:-1], rel=1e-9) and twenty.values[-1] == 0
    # denoise 0.5 runs the last half: the same steps as the whole schedule from step 10
    half = AlignYourStepsScheduler().run(CTX, "SDXL", 20, 0.5)
    assert (half.values, half.start, half.stop) == (twenty.values, 10, 20)
    with pytest.raises(NodeError) as refused:
        AlignYourStepsScheduler().run(CTX, "SD1", 10, 0.01)
    assert refused.value.field == "denoise"


def test_a_split_schedule_in_two_samplers_equals_the_whole(parts):
    guider, latent = cfg(parts), latent_for(parts)
    whole = KarrasScheduler().run(CTX, 6, 10.0, 0.05, 7.0)
    split = SplitSigmas().run(CTX, whole, 2)
    first = Sampler().run(CTX, Noise().run(CTX, 3), guider, latent, "euler", "normal", 6, 1.0, 0.0,
                          sigmas=split["high_sigmas"])
    assert not torch.equal(first.samples, latent.samples)
    second = _run(guider, first, sigmas=split["low_sigmas"], noise=DisableNoise().run(CTX))
    assert torch.allclose(second, _run(guider, latent, sigmas=whole), atol=1e-5, rtol=0)


def test_karras_and_exponential_ranges_change_the_image(parts):
    guider, latent = cfg(parts), latent_for(parts)
    sd = KarrasScheduler().run(CTX, 4, 14.614642, 0.0291675, 7.0)
    narrow = _run(guider, latent, sigmas=KarrasScheduler().run(CTX, 4, 3.0, 0.0291675, 7.0))
    assert not torch.allclose(narrow, _run(guider, latent, sigmas=sd), atol=1e-3)
    levels = ExponentialScheduler().run(CTX, 3, 8.0, 0.5).values
    assert levels == pytest.approx((8.0, 2.0, 0.5, 0.0))
    assert KarrasScheduler.check_values({"sigma_max": 1.0, "sigma_min": 2.0}).keys() == {"sigma_min"}


def test_a_sampler_that_cannot_take_a_list_is_refused_naming_those_that_can(parts):
    with pytest.raises(NodeError) as refused:
        _run(cfg(parts), latent_for(parts), "dpm_2", sigmas=karras(4, 14.6, 0.03, 7.0))
    assert refused.value.field == "sampler" and "euler" in str(refused.value) and "dpmpp_2m" in str(refused.value)
    with pytest.raises(NodeError) as cut:  # a timestep sampler must end at 0
        _run(cfg(parts), latent_for(parts), "dpmpp_2m", sigmas=Sigmas((14.6, 3.0, 1.0)))
    assert cut.value.field == "sigmas"


def _custom_workflow(scheduler: dict, split: int | None = None) -> dict:
    """SamplerCustomAdvanced on the tiny model with ``scheduler`` (node 30) feeding it."""
    data = json.loads((FIXTURES / "comfyui" / "txt2img_api.json").read_text())
    del data["3"]
    data.update({
        "30": scheduler,
        "31": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "dpmpp_2m"}},
        "32": {"class_type": "RandomNoise", "inputs": {"noise_seed": 5}},
        "33": {"class_type": "CFGGuider", "inputs": {"cfg": 5.0, "model": ["4", 0], "positive": ["6", 0],
                                                     "negative": ["7", 0]}},
        "3": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["32", 0], "guider": ["33", 0],
                                                                "sampler": ["31", 0], "sigmas": ["30", 0],
                                                                "latent_image": ["5", 0]}},
    })
    if split is not None:
        data["34"] = {"class_type": "SplitSigmas", "inputs": {"sigmas": ["30", 0], "step": split}}
        data["3"]["inputs"]["sigmas"] = ["34", 1]
    return data


@pytest.mark.parametrize("scheduler,split,creates", [
    ({"class_type": "AlignYourStepsScheduler", "inputs": {"model_type": "SD1", "steps": 6, "denoise": 1.0}}, None,
     "AlignYourStepsScheduler"),
    ({"class_type": "KarrasScheduler", "inputs": {"steps": 5, "sigma_max": 8.0, "sigma_min": 0.1, "rho": 5.0}}, None,
     "KarrasScheduler"),
    ({"class_type": "ExponentialScheduler", "inputs": {"steps": 5, "sigma_max": 8.0, "sigma_min": 0.05}}, 2,
     "ExponentialScheduler"),
])
def test_comfyui_schedulers_with_their_own_levels_import_onto_sigma_nodes_and_run(
        tiny_sd, tmp_path, scheduler, split, creates):
    import nodeflow.api as api

    path = tmp_path / "custom.json"
    path.write_text(json.dumps(_custom_workflow(copy.deepcopy(scheduler), split)))
    flow = api.open(path, device="cpu")
    assert flow.graph.nodes["30"].type == creates
    feeding = "34" if split is not None else "30"
    assert flow.graph.link_into("3", "sigmas").source == feeding
    result = flow.run(output_dir=tmp_path / "out", device="cpu",
                      settings=RunSettings(model_folders={"checkpoints": [tiny_sd.parent]}))
    assert result.ok, result.error


def test_comfyui_karras_with_sds_own_range_stays_the_samplers_schedule(tmp_path):
    import nodeflow.api as api

    karras_node = {"class_type": "KarrasScheduler", "inputs": {"steps": 5, "sigma_max": 14.614642,
                                                                 "sigma_min": 0.0291675, "rho": 7.0}}
    path = tmp_path / "custom.json"
    path.write_text(json.dumps(_custom_workflow(karras_node)))
    flow = api.open(path, device="cpu")
    assert "30" not in flow.graph.nodes
    assert (flow.graph.nodes["3"].values["schedule"], flow.graph.nodes["3"].values["steps"]) == ("karras", 5)
