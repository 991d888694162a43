"""ComfyUI's beta, kl_optimal and linear_quadratic schedules and its sigma-list nodes
(issue 11), on the tiny SD model.

The levels are checked against values computed here another way (the Beta quantiles
from scipy.special's inverse incomplete beta function and, for alpha = beta = 1/2, the
arcsine distribution's closed form; the model's levels from its betas in float64), the
Sampler's beta schedule against the same list handed to its ``sigmas`` input, and the
ComfyUI workflows that used to be refused for these names import and run.
"""

from __future__ import annotations

import copy
import json
import math
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from nodeflow import NodeError, RunContext, RunSettings  # noqa: E402
from nodes.diffusion.impl import sigmas as S  # noqa: E402
from nodes.diffusion.impl.samplers import LIST_SCHEDULES, schedules_for, sigma_list_samplers, unsupported_reason  # noqa: E402
from nodes.diffusion.sampling import CFG, Noise, Sampler  # noqa: E402
from nodes.diffusion.sigmas import (  # noqa: E402
    BetaSamplingScheduler, ExtendIntermediateSigmas, KarrasScheduler, LaplaceScheduler, ManualSigmas, SetFirstSigma,
    SplitSigmasDenoise,
)
from nodes.diffusion.types import Latent, Sigmas  # noqa: E402
from tests.packs.diffusion.test_sampling import cfg, latent_for, parts, tiny_sd  # noqa: E402,F401  (fixtures)
from tests.support import FIXTURES  # noqa: E402

CTX = RunContext()


def _sd_levels() -> np.ndarray:
    """SD's sigma per training step from its scaled-linear betas, in float64."""
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=np.float64) ** 2
    bar = np.cumprod(1.0 - betas)
    return np.sqrt((1.0 - bar) / bar)


def _run(guider, latent, sampler="euler", schedule="normal", steps=4, denoise=1.0, sigmas=None, seed=3):
    return Sampler().run(CTX, Noise().run(CTX, seed), guider, latent, sampler, schedule, steps, denoise, 0.0,
                         sigmas=sigmas).samples


# ------------------------------------------------------------------- the levels
def test_the_list_schedules_are_named_alike_for_validation_and_for_the_run():
    assert LIST_SCHEDULES == set(S.MODEL_SCHEDULES)


@pytest.mark.parametrize("alpha,beta", [(0.6, 0.6), (0.5, 0.5), (2.0, 0.7), (1.0, 1.0)])  # 1, 1: ties at half steps
def test_beta_picks_the_models_levels_at_the_beta_quantiles(alpha, beta):
    from scipy.special import betaincinv

    levels = _sd_levels()
    steps = 12
    quantiles = list(1.0 - np.linspace(0, 1, steps, endpoint=False))
    if alpha == beta == 0.5:  # the arcsine distribution: F^-1(p) = sin^2(pi p / 2)
        positions = [math.sin(math.pi * q / 2) ** 2 for q in quantiles]
    else:
        positions = [float(betaincinv(alpha, beta, q)) for q in quantiles]
    picked = []
    for t in (int(np.rint(x * 999)) for x in positions):
        if not picked or picked[-1] != t:
            picked.append(t)
    got = S.beta(steps, tuple(levels), alpha, beta)
    assert got.values == pytest.approx([levels[t] for t in picked] + [0.0], rel=1e-12)
    assert got.values[0] == pytest.approx(14.6146, rel=1e-4)  # quantile 1 is the last training step


# Measured with ComfyUI 0.8.0's own functions, in its own venv (comfy.samplers.calculate_sigmas
# on ModelSamplingDiscrete's SD schedule; beta_scheduler alpha = beta = 1; get_sigmas_laplace with
# mu 0.3, beta 0.7), 7 significant digits. Ours differ by float32 rounding of the levels (ComfyUI's
# betas are float64, diffusers' float32): under 2e-5 relative.
COMFY_MEASURED = {
    ("beta", 10): (14.61464, 11.54277, 7.371844, 4.372802, 2.615236, 1.618279, 1.027329, 0.6548854, 0.3955097,
                   0.1990586, 0.0),
    ("kl_optimal", 10): (14.61463, 4.23235, 2.393719, 1.597066, 1.132997, 0.8152444, 0.5729142, 0.3724841, 0.1952883,
                         0.02916716, 0.0),
    ("linear_quadratic", 10): (14.61464, 14.54157, 14.4685, 14.39542, 14.32235, 14.24928, 13.62084, 11.8817, 9.031848,
                               5.07128, 0.0),
}


def test_the_levels_are_comfyuis_as_measured(parts):
    from nodes.diffusion.impl.samplers import listed_schedule, make_scheduler

    scheduler = make_scheduler("euler", "normal", parts["model"].scheduler_config)
    for (schedule, steps), levels in COMFY_MEASURED.items():
        assert listed_schedule(schedule, steps, 1.0, scheduler).values == pytest.approx(levels, rel=2e-5), schedule
    uniform = BetaSamplingScheduler().run(CTX, parts["model"], 12, 1.0, 1.0)
    assert uniform.values == pytest.approx((14.61464, 9.089005, 5.934702, 4.081729, 2.918307, 2.15049, 1.618279,
                                            1.227063, 0.932358, 0.6957989, 0.4946969, 0.3052012, 0.0), rel=2e-5)
    laplace = LaplaceScheduler().run(CTX, 9, 14.614642, 0.0291675, 0.3, 0.7)
    assert laplace.values == pytest.approx((14.61464, 3.562199, 2.192822, 1.650978, 1.349859, 1.10366, 0.8309472,
                                            0.5115152, 0.0291675), rel=2e-6)


def test_beta_runs_a_step_once_when_two_quantiles_round_to_it():
    # 0.6 / 0.6 puts many quantiles near the ends: at 400 steps some round to the same step
    got = S.beta(400, tuple(_sd_levels()))
    assert got.steps < 400 and len(set(got.values)) == len(got.values)


def test_kl_optimal_and_linear_quadratic_levels():
    top, bottom = 14.614642, 0.0291675
    expected = np.tan(np.linspace(math.atan(top), math.atan(bottom), 7))
    assert S.kl_optimal(7, top, bottom).values == pytest.approx(list(expected) + [0.0], rel=1e-12)
    assert S.kl_optimal(1, top, bottom).values == pytest.approx((top, 0.0))
    # 4 steps, threshold 0.025: 1 - s = 0, 0.0125 (linear), then the parabola through
    # (2, 0.025) with the line's slope there, reaching 1 at step 4: 0.275 at step 3.
    assert S.linear_quadratic(4, 10.0).values == pytest.approx((10.0, 9.875, 9.75, 7.25, 0.0), rel=1e-12)
    assert S.linear_quadratic(1, 10.0).values == (10.0, 0.0)


def test_laplace_and_the_list_edits():
    x = np.linspace(0, 1, 5)
    expected = np.clip(np.exp(0.0 - 0.5 * np.sign(0.5 - x) * np.log(1 - 2 * np.abs(0.5 - x) + 1e-5)), 0.0291675, 14.614642)
    got = LaplaceScheduler().run(CTX, 5, 14.614642, 0.0291675, 0.0, 0.5)
    assert got.values == pytest.approx(list(expected), rel=1e-12) and got.values[-1] == pytest.approx(0.0291675)
    assert LaplaceScheduler.inputs["steps"].min == 2  # one level would be no step

    assert ManualSigmas().run(CTX, "14.6, 4 ,1;0.5e-1 0").values == (14.6, 4.0, 1.0, 0.05, 0.0)
    for bad in ("3", "1, -0.5, 0"):
        with pytest.raises(NodeError):
            ManualSigmas().run(CTX, bad)

    whole = Sigmas((10.0, 5.0, 2.0, 1.0, 0.0))
    assert SetFirstSigma().run(CTX, whole, 12.0) == Sigmas((12.0, 5.0, 2.0, 1.0, 0.0))
    # the edit is of the window's first step (the low half of a split starts at 2.0); the
    # levels before it stay, so the run still starts part way (from the input latent)
    low = S.split(whole, 2)[1]
    assert SetFirstSigma().run(CTX, low, 3.0) == Sigmas((10.0, 5.0, 3.0, 1.0, 0.0), 2)
    with pytest.raises(NodeError) as rising:
        SetFirstSigma().run(CTX, low, 6.0)
    assert rising.value.field == "sigma"
    high = S.split(whole, 2)[0]
    assert SetFirstSigma().run(CTX, high, 11.0) == Sigmas((11.0, 5.0, 2.0, 1.0, 0.0), 0, 2)

    parts_ = SplitSigmasDenoise().run(CTX, whole, 0.5)  # the last round(4 x 0.5) = 2 steps
    assert (parts_["high_sigmas"].stop, parts_["low_sigmas"].start) == (2, 2)

    extended = ExtendIntermediateSigmas().run(CTX, whole, 2, -1.0, 2.0, "linear")  # the steps from 10, 5 and 2
    assert extended == Sigmas((10.0, 7.5, 5.0, 3.5, 2.0, 1.5, 1.0, 0.0))
    sine = ExtendIntermediateSigmas().run(CTX, Sigmas((10.0, 0.0)), 3, -1.0, 0.0, "sine")
    assert sine.values == pytest.approx((10.0, 10 - 10 * (1 - math.cos(math.pi / 6)), 10 - 10 * (1 - math.cos(math.pi / 3)), 0.0))
    # only the window's steps are extended, and it keeps its ends on the same levels
    cut = ExtendIntermediateSigmas().run(CTX, high, 2, -1.0, 0.0, "linear")
    assert cut == Sigmas((10.0, 7.5, 5.0, 3.5, 2.0, 1.0, 0.0), 0, 4)
    later = ExtendIntermediateSigmas().run(CTX, low, 2, -1.0, 0.0, "linear")
    assert later == Sigmas((10.0, 5.0, 2.0, 1.5, 1.0, 0.5, 0.0), 2)
    parts_ = SplitSigmasDenoise().run(CTX, low, 0.5)  # of the window's 2 steps, the last 1
    assert (parts_["high_sigmas"].start, parts_["high_sigmas"].stop, parts_["low_sigmas"].start) == (2, 3, 3)


# ------------------------------------------------------------ the Sampler's schedules
def test_a_list_schedule_is_offered_only_with_the_samplers_that_take_a_list():
    for sampler in sigma_list_samplers():
        assert LIST_SCHEDULES <= set(schedules_for(sampler))
    reason = unsupported_reason("dpm_2", "beta")
    assert "list of sigmas" in reason and "euler" in reason and "dpmpp_2m" in reason
    assert unsupported_reason("euler", "kl_optimal") is None


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m"])
def test_the_samplers_beta_schedule_is_the_beta_list_of_the_models_levels(parts, sampler):
    guider, latent = cfg(parts), latent_for(parts)
    listed = BetaSamplingScheduler().run(CTX, parts["model"], 5, 0.6, 0.6)
    assert listed.values == pytest.approx(S.beta(5, tuple(_sd_levels())).values, rel=1e-5)  # diffusers' float32 betas
    expected = _run(guider, latent, sampler, sigmas=listed, steps=5)
    got = _run(guider, latent, sampler, "beta", steps=5)
    assert torch.equal(got, expected)
    assert not torch.allclose(got, _run(guider, latent, sampler, "normal", steps=5), atol=1e-3)
    # below denoise 1 the window is the last steps, as for the Sampler's other schedules
    half = _run(guider, latent, sampler, "beta", steps=6, denoise=0.5)
    window = Sigmas(BetaSamplingScheduler().run(CTX, parts["model"], 6, 0.6, 0.6).values, start=3)
    assert torch.equal(half, _run(guider, latent, sampler, sigmas=window))


def test_kl_optimal_and_linear_quadratic_run_with_euler(parts):
    guider, latent = cfg(parts), latent_for(parts)
    top, bottom = float(_sd_levels()[-1]), float(_sd_levels()[0])
    kl = _run(guider, latent, "euler", "kl_optimal", steps=4)
    assert torch.allclose(kl, _run(guider, latent, "euler", sigmas=S.kl_optimal(4, top, bottom)), atol=1e-4, rtol=1e-5)
    lq = _run(guider, latent, "euler", "linear_quadratic", steps=4)
    assert torch.allclose(lq, _run(guider, latent, "euler", sigmas=S.linear_quadratic(4, top)), atol=1e-4, rtol=1e-5)
    assert not torch.allclose(kl, lq, atol=1e-3)
    with pytest.raises(NodeError) as collided:  # the schedule's own list: its steps are at fault
        _run(guider, latent, "dpmpp_2m", "linear_quadratic", steps=10)
    assert collided.value.field == "steps" and "linear_quadratic schedule at 10 steps" in str(collided.value)


def test_on_a_continuous_edm_model_the_list_schedules_are_refused_and_beta_nodes_use_its_log_levels(parts):
    from nodes.diffusion.model_edm import ModelSamplingEDM

    edm = ModelSamplingEDM().run(CTX, parts["model"], "edm", 80.0, 0.01)
    guider = cfg({**parts, "model": edm})
    with pytest.raises(NodeError) as refused:
        _run(guider, latent_for(parts), "euler", "beta")
    assert refused.value.field == "schedule" and "karras or exponential" in str(refused.value)
    # ComfyUI stands in 1000 levels evenly spaced in log sigma for such a model
    levels = np.exp(np.linspace(math.log(0.01), math.log(80.0), 1000))
    got = BetaSamplingScheduler().run(CTX, edm, 3, 1.0, 1.0)  # Beta(1, 1): the quantiles themselves
    assert got.values == pytest.approx([levels[999], levels[666], levels[333], 0.0], rel=1e-9)


def test_the_editor_plot_shows_a_list_schedules_levels(parts):
    from nodes.diffusion.impl.samplers import schedule_sigmas

    levels = schedule_sigmas("euler", "kl_optimal", 4, parts["model"].scheduler_config)
    top, bottom = float(_sd_levels()[-1]), float(_sd_levels()[0])
    assert levels["sigma"] == pytest.approx(S.kl_optimal(4, top, bottom).values[:-1], rel=1e-4)
    # linear_quadratic's first steps are closer than SD's training steps from 10 steps on:
    # a sampler of training timesteps refuses it there, euler runs it
    config = parts["model"].scheduler_config
    assert len(schedule_sigmas("dpmpp_2m", "linear_quadratic", 9, config)["sigma"]) == 9
    with pytest.raises(S.SigmaError, match="same training step") as collided:
        schedule_sigmas("dpmpp_2m", "linear_quadratic", 10, config)
    assert collided.value.field == "sigmas"
    assert len(schedule_sigmas("euler", "linear_quadratic", 30, config)["sigma"]) == 30


# ---------------------------------------------------------------- ComfyUI import
def _ksampler(scheduler: str, sampler: str = "euler") -> dict:
    data = json.loads((FIXTURES / "comfyui" / "txt2img_api.json").read_text())
    data["3"]["inputs"].update(scheduler=scheduler, sampler_name=sampler)
    return data


def _custom(scheduler: dict, edit: dict | None = None) -> dict:
    data = json.loads((FIXTURES / "comfyui" / "txt2img_api.json").read_text())
    del data["3"]
    data.update({
        "30": scheduler,
        "31": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "32": {"class_type": "RandomNoise", "inputs": {"noise_seed": 5}},
        "33": {"class_type": "CFGGuider", "inputs": {"cfg": 5.0, "model": ["4", 0], "positive": ["6", 0],
                                                     "negative": ["7", 0]}},
        "3": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["32", 0], "guider": ["33", 0],
                                                                "sampler": ["31", 0], "sigmas": ["30", 0],
                                                                "latent_image": ["5", 0]}},
    })
    if edit is not None:
        data["34"] = {**edit, "inputs": {**edit["inputs"], "sigmas": ["30", 0]}}
        data["3"]["inputs"]["sigmas"] = ["34", 0 if edit["class_type"] != "SplitSigmasDenoise" else 1]
    return data


def _open(tmp_path, data):
    import nodeflow.api as api

    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(data))
    return api.open(path, device="cpu")


def _runs(flow, tiny_sd, tmp_path):
    result = flow.run(output_dir=tmp_path / "out", device="cpu",
                      settings=RunSettings(model_folders={"checkpoints": [tiny_sd.parent]}))
    assert result.ok, result.error


@pytest.mark.parametrize("scheduler", ["beta", "kl_optimal", "linear_quadratic"])
def test_a_ksampler_with_a_list_schedule_imports_onto_the_samplers_schedule(tiny_sd, tmp_path, scheduler):
    flow = _open(tmp_path, _ksampler(scheduler))
    assert flow.graph.nodes["3"].values["schedule"] == scheduler
    _runs(flow, tiny_sd, tmp_path)


def test_a_ksampler_with_beta_and_a_sampler_that_takes_no_list_is_refused_saying_why(tmp_path):
    from nodeflow.model.validation import validate

    flow = _open(tmp_path, _ksampler("beta", "dpm_2"))
    problems = {p.field: p.message for p in validate(flow.graph) if p.node_id == "3"}
    assert "list of sigmas" in problems["schedule"]


@pytest.mark.parametrize("scheduler,edit,creates", [
    ({"class_type": "BetaSamplingScheduler", "inputs": {"model": ["4", 0], "steps": 4, "alpha": 0.6, "beta": 0.6}},
     None, None),
    ({"class_type": "BetaSamplingScheduler", "inputs": {"model": ["4", 0], "steps": 4, "alpha": 0.4, "beta": 0.9}},
     None, "BetaSamplingScheduler"),
    ({"class_type": "BasicScheduler", "inputs": {"model": ["4", 0], "scheduler": "beta", "steps": 4, "denoise": 1.0}},
     None, None),
    ({"class_type": "LaplaceScheduler", "inputs": {"steps": 5, "sigma_max": 14.614642, "sigma_min": 0.0291675,
                                                   "mu": 0.0, "beta": 0.5}}, None, "LaplaceScheduler"),
    ({"class_type": "ManualSigmas", "inputs": {"sigmas": "14.6, 6, 2.5, 0.9, 0"}}, None, "ManualSigmas"),
    ({"class_type": "KarrasScheduler", "inputs": {"steps": 4, "sigma_max": 14.614642, "sigma_min": 0.0291675,
                                                  "rho": 7.0}},
     {"class_type": "SetFirstSigma", "inputs": {"sigma": 20.0}}, "KarrasScheduler"),
    ({"class_type": "ExponentialScheduler", "inputs": {"steps": 3, "sigma_max": 14.614642, "sigma_min": 0.0291675}},
     {"class_type": "ExtendIntermediateSigmas", "inputs": {"steps": 2, "start_at_sigma": -1.0, "end_at_sigma": 1.0,
                                                           "spacing": "cosine"}}, "ExponentialScheduler"),
    ({"class_type": "KarrasScheduler", "inputs": {"steps": 4, "sigma_max": 10.0, "sigma_min": 0.1, "rho": 7.0}},
     {"class_type": "SplitSigmasDenoise", "inputs": {"denoise": 0.5}}, "KarrasScheduler"),
])
def test_comfyui_sigma_nodes_import_and_run(tiny_sd, tmp_path, scheduler, edit, creates):
    flow = _open(tmp_path, _custom(copy.deepcopy(scheduler), edit))
    if creates is None:  # the Sampler's own schedule
        assert "30" not in flow.graph.nodes and flow.graph.nodes["3"].values["schedule"] == "beta"
    else:
        assert flow.graph.nodes["30"].type == creates
        feeding = "34" if edit is not None else "30"
        assert flow.graph.link_into("3", "sigmas").source == feeding
        if edit is not None:
            assert flow.graph.nodes["34"].type == edit["class_type"]
    _runs(flow, tiny_sd, tmp_path)


def test_a_list_edit_of_a_schedule_imported_as_widgets_is_refused_saying_why(tmp_path):
    from nodeflow.files.workflow import WorkflowError

    basic = {"class_type": "BasicScheduler", "inputs": {"model": ["4", 0], "scheduler": "karras", "steps": 4,
                                                        "denoise": 1.0}}
    with pytest.raises(WorkflowError, match=r"node 34 \(SetFirstSigma\): its sigmas come from BasicScheduler"):
        _open(tmp_path, _custom(basic, {"class_type": "SetFirstSigma", "inputs": {"sigma": 20.0}}))


# ------------------------------------------------------------- names and reasons
# ComfyUI 0.8.0's names (comfy/samplers.py: KSAMPLER_NAMES + ddim, uni_pc, uni_pc_bh2; SCHEDULER_NAMES).
COMFY_SAMPLERS = (
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "exp_heun_2_x0",
    "exp_heun_2_x0_sde", "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm",
    "ipndm", "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2",
    "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2",
)
COMFY_SCHEDULERS = ("simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
                    "linear_quadratic", "kl_optimal")


def test_every_comfyui_sampler_name_maps_or_is_refused_with_its_reason_in_the_docs():
    from nodes.diffusion.comfyui import SAMPLER_NAMES, SAMPLER_REFUSED, SCHEDULER_NAMES
    from tests.support import ROOT

    assert set(COMFY_SCHEDULERS) <= set(SCHEDULER_NAMES)
    assert not set(SAMPLER_NAMES) & set(SAMPLER_REFUSED)
    assert sorted(set(COMFY_SAMPLERS) - set(SAMPLER_NAMES) - set(SAMPLER_REFUSED)) == []
    text = (ROOT / "docs" / "comfyui.md").read_text().split("## Sampler and scheduler names", 1)[1].split("\n## ", 1)[0]
    documented = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[1].startswith("refused: "):
            for name in cells[0].split(", "):
                documented[name] = cells[1][len("refused: "):]
    assert documented == SAMPLER_REFUSED


def test_a_refused_sampler_name_is_refused_on_import_with_its_reason(tmp_path):
    from nodeflow.files.workflow import WorkflowError
    from nodes.diffusion.comfyui import SAMPLER_REFUSED

    with pytest.raises(WorkflowError) as error:
        _open(tmp_path, _ksampler("normal", "ipndm"))
    assert f"sampler_name 'ipndm' has no nodeflow equivalent: {SAMPLER_REFUSED['ipndm']}" in str(error.value)
    flow = _open(tmp_path, _ksampler("karras", "deis"))
    assert (flow.graph.nodes["3"].values["sampler"], flow.graph.nodes["3"].values["schedule"]) == ("deis", "karras")
    flow = _open(tmp_path, _ksampler("normal", "dpmpp_2m_sde_heun_gpu"))
    assert flow.graph.nodes["3"].values["sampler"] == "dpmpp_2m_sde_heun"


def test_the_dpmpp_2m_sde_sampler_node_with_heuns_solver_imports_as_dpmpp_2m_sde_heun(tmp_path):
    data = _custom({"class_type": "KarrasScheduler", "inputs": {"steps": 4, "sigma_max": 14.614642,
                                                                "sigma_min": 0.0291675, "rho": 7.0}})
    data["31"] = {"class_type": "SamplerDPMPP_2M_SDE", "inputs": {"solver_type": "heun", "eta": 1.0, "s_noise": 1.0,
                                                                  "noise_device": "gpu"}}
    assert _open(tmp_path, data).graph.nodes["3"].values["sampler"] == "dpmpp_2m_sde_heun"
    data["31"]["inputs"]["solver_type"] = "midpoint"
    assert _open(tmp_path, data).graph.nodes["3"].values["sampler"] == "dpmpp_2m_sde"


# ComfyUI 0.8.0's samplers measured in its own venv on an exact denoiser of Gaussian data
# (x0 ~ N(0.3, 0.5^2) per value: D(x, sigma) = (0.25 x + sigma^2 0.3) / (0.25 + sigma^2)), from
# x = noise * sqrt(1 + sigma_max^2), SD's 8-step karras sigmas; three values of the noise.
TOY_NOISE = (-3.1452962731231335, 2.832104167511146, -0.3732508612577643)
TOY_COMFY = {
    "euler": (-0.9465160119704321, 1.4070699523820318, 0.14496969970487122),
    "deis": (-1.176386897547572, 1.611225493029781, 0.11638045409718906),
    "sa_solver": (-1.3889365728895748, 1.799997523793931, 0.08994546274572263),  # with no noise (tau 0)
}


def _toy(sampler: str = "", scheduler_class: str = "", **settings) -> np.ndarray:
    """Our ``sampler``'s scheduler (or a diffusers ``scheduler_class`` with ``settings``) on the
    toy, with SD's karras sigmas."""
    import diffusers
    from nodes.diffusion.impl.samplers import SAMPLERS, make_scheduler
    from nodes.diffusion.sampling import _sd1_scheduler_config

    config = _sd1_scheduler_config()
    if sampler:
        scheduler = make_scheduler(sampler, "karras", config)
        vp = SAMPLERS[sampler].variance_preserving
    else:
        scheduler = getattr(diffusers, scheduler_class).from_config(config, use_karras_sigmas=True, timestep_spacing="linspace",
                                                         **settings)
        vp = True
    scheduler.set_timesteps(8)
    sigmas = scheduler.sigmas.double()
    x = torch.tensor(TOY_NOISE, dtype=torch.float64) * (1 + sigmas[0] ** 2) ** 0.5
    x = x / (1 + sigmas[0] ** 2) ** 0.5 if vp else x
    for i, t in enumerate(scheduler.timesteps):
        s = sigmas[i]
        k = x * (1 + s * s) ** 0.5 if vp else x  # k-diffusion's x0 + sigma eps
        eps = (k - (0.25 * k + s * s * 0.3) / (0.25 + s * s)) / s
        scheduler.scale_model_input(x, t)  # the toy needs no input scaling; the call keeps the scheduler's books
        x = scheduler.step(eps, t, x).prev_sample
    return x.numpy()


def test_deis_is_another_integration_of_the_same_flow_than_comfyuis_and_sa_solver_is_not_diffusers():
    """What docs/comfyui.md says about deis and sa_solver, measured: on the toy our euler is
    ComfyUI's (the harness is fair); our deis (diffusers' third order) and ComfyUI's end 0.12
    apart, ours the nearer to the exact flow; diffusers' SA-Solver at ComfyUI's orders without
    noise is 0.17 from ComfyUI's, which is why sa_solver stays refused."""
    noise = np.array(TOY_NOISE)
    exact = 0.3 + (noise * (1 + 14.614642 ** 2) ** 0.5 - 0.3) * 0.5 / (0.25 + 14.614642 ** 2) ** 0.5
    assert np.abs(_toy("euler") - TOY_COMFY["euler"]).max() < 1e-5
    deis = _toy("deis")
    assert 0.1 < np.abs(deis - TOY_COMFY["deis"]).max() < 0.15
    assert np.abs(deis - exact).max() < 0.02 < np.abs(np.array(TOY_COMFY["deis"]) - exact).max()
    sa = _toy(scheduler_class="SASolverScheduler", predictor_order=3, corrector_order=4, tau_func=lambda t: 0)
    assert np.abs(sa - TOY_COMFY["sa_solver"]).max() > 0.1


def test_schedules_compared_draws_the_list_schedules_a_sampler_can_run(parts):
    from nodes.diffusion.explain.schedules import ScheduleCompare

    upstream = {"scheduler_config": parts["model"].scheduler_config}
    _, visited = ScheduleCompare.insight({"sampler": "dpmpp_2m", "steps": 20, "axis": "sigma"}, upstream)["plots"]
    drawn = {s["label"] for s in visited["series"]}
    assert {"normal", "beta", "kl_optimal"} <= drawn and "linear_quadratic" not in drawn  # collides at 20 steps
    _, visited = ScheduleCompare.insight({"sampler": "euler", "steps": 20, "axis": "sigma"}, upstream)["plots"]
    assert "linear_quadratic" in {s["label"] for s in visited["series"]}


def test_split_by_denoise_of_a_widget_schedule_folds_into_the_samplers_step_range(tmp_path):
    basic = {"class_type": "BasicScheduler", "inputs": {"model": ["4", 0], "scheduler": "beta", "steps": 7,
                                                        "denoise": 1.0}}
    split = {"class_type": "SplitSigmasDenoise", "inputs": {"denoise": 0.6}}
    graph = _open(tmp_path, _custom(basic, split)).graph
    low = graph.nodes["3"].values  # low_sigmas: the last round(7 x 0.6) = 4 steps
    assert (low["schedule"], low["steps"], low["start_step"]) == ("beta", 7, 3) and "34" not in graph.nodes
    data = _custom(basic, split)
    data["3"]["inputs"]["sigmas"] = ["34", 0]  # high_sigmas: the 3 before, noise left over
    high = _open(tmp_path, data).graph.nodes["3"].values
    assert (high["end_step"], high["leftover_noise"]) == (3, True)


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m"])
def test_a_list_that_starts_below_the_models_largest_sigma_starts_from_the_input_latent(parts, sampler):
    """As ComfyUI does (and as the same levels as a window of a longer list ran already): the
    input latent noised to the first level, not pure noise at it. (An empty latent starts
    from pure noise, as diffusers' pipelines do: test_sigma_lists.py.)"""
    guider = cfg(parts)
    picture = latent_for(parts)
    picture.samples = torch.randn(picture.samples.shape, generator=torch.Generator().manual_seed(9))
    short = ManualSigmas().run(CTX, "5, 2, 0.5, 0")
    window = Sigmas((14.614642, 5.0, 2.0, 0.5, 0.0), start=1)
    got = _run(guider, picture, sampler, sigmas=short)
    assert torch.allclose(got, _run(guider, picture, sampler, sigmas=window), atol=1e-5, rtol=1e-5)
    other = latent_for(parts)  # an empty latent: another start, another result
    assert not torch.allclose(got, _run(guider, other, sampler, sigmas=short), atol=1e-2)


# ---------------------------------------------------------------- lists set on samplers that take none
def _own_sigmas(parts, sampler, steps):
    from nodes.diffusion.impl.samplers import make_scheduler

    scheduler = make_scheduler(sampler, "normal", parts["model"].scheduler_config)
    scheduler.set_timesteps(steps)
    return tuple(float(s) for s in scheduler.sigmas)


@pytest.mark.parametrize("sampler", ["euler_ancestral", "lms"])
def test_a_list_of_a_samplers_own_sigmas_set_on_it_runs_as_its_own_schedule(parts, sampler):
    """Euler ancestral and LMS take no list in diffusers' set_timesteps: the list is set on
    the scheduler after it (impl/sigmas.assign), so a list of its own levels is its own run."""
    from nodes.diffusion.types import Sigmas

    latent = Latent(torch.zeros(1, 4, 16, 16))
    guider = CFG().run(RunContext(), parts["model"], parts["positive"], parts["negative"], 5.0, 0.0)
    own = Sampler().run(RunContext(), Noise().run(RunContext(), 4), guider, latent, sampler, "normal", 5, 1.0, 0.0).samples
    listed = Sampler().run(RunContext(), Noise().run(RunContext(), 4), guider, latent, sampler, "normal", 5, 1.0, 0.0,
                           sigmas=Sigmas(_own_sigmas(parts, sampler, 5))).samples
    torch.testing.assert_close(listed, own, atol=1e-4, rtol=1e-4)


def test_euler_ancestral_with_karras_walks_comfyuis_karras_levels(parts):
    """diffusers' Euler ancestral has no Karras setting; the schedule reaches it as a list:
    Karras's rho-7 levels over the model's whole range, as ComfyUI's KarrasScheduler gives."""
    from nodes.diffusion.impl.sample import sample
    from nodes.diffusion.impl.sigmas import karras, model_levels

    seen = []
    guider = CFG().run(RunContext(), parts["model"], parts["positive"], parts["negative"], 5.0, 0.0)
    sample(RunContext(), Noise().run(RunContext(), 4), guider, Latent(torch.zeros(1, 4, 16, 16)), "euler_ancestral",
           "karras", 6, 1.0, 0.0, trace=lambda view: seen.append(view.sigma))
    from nodes.diffusion.impl.samplers import make_scheduler

    levels = model_levels(make_scheduler("euler", "normal", parts["model"].scheduler_config).alphas_cumprod.tolist())
    expected = karras(6, levels[-1], levels[0], 7.0).values[:-1]
    assert seen == pytest.approx(expected, rel=1e-4)
