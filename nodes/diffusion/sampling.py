"""Sampling: a seeded noise source, guiders (classifier-free guidance) and the sampler loop.

The pieces follow the diffusion process as it is explained: ``Noise`` decides the
starting noise, a guider (``CFG`` / ``BasicGuider``) decides what the UNet predicts at
each step, and ``Sampler`` walks the noise schedule with a diffusers scheduler. With
the same model, prompts, seed, steps and guidance the result equals diffusers'
StableDiffusionPipeline / StableDiffusionImg2ImgPipeline (tests/test_diffusion_equivalence.py).
"""

from __future__ import annotations

from typing import Any, Mapping

from nodeflow import Bool, Choice, Float, Int, Node, NodeError, Output, RunContext, Seed, Socket

from nodes.diffusion import estimates
from nodes.diffusion.impl.samplers import SAMPLERS, SCHEDULES, eta_unsupported_reason, unsupported_reason
from nodes.diffusion.impl.views import PREVIEW_KINDS
from nodes.diffusion.types import (
    CONDITIONING, GUIDER, LATENT, MODEL, NOISE, SIGMAS, Conditioning, DiffusionModel, Latent, NoiseSource, Sigmas,
)


def _field_error(field: str, message: str) -> NodeError:
    return NodeError(message, field=field)


class Noise(Node):
    type = "Noise"
    display_name = "Noise"
    category = "sampling"
    description = (
        "The starting noise of a run, drawn from a CPU random generator seeded with `seed`, "
        "so one seed gives the same image on every device."
    )

    seed = Seed(0, tooltip="0 .. 2^64-1; the same seed gives the same starting noise")
    outputs = (Output("noise", NOISE),)

    def run(self, ctx: RunContext, seed: int) -> NoiseSource:
        return NoiseSource(seed)


class DisableNoise(Node):
    type = "DisableNoise"
    display_name = "No Noise"
    category = "sampling"
    description = (
        "Adds no noise: the Sampler starts from its input latent as it is, for latents that "
        "are already noisy (e.g. the leftover noise of another sampler)."
    )

    outputs = (Output("noise", NOISE),)

    def run(self, ctx: RunContext) -> NoiseSource:
        return NoiseSource(None)


class CFG(Node):
    type = "CFG"
    display_name = "CFG Guider"
    category = "sampling"
    description = (
        "Classifier-free guidance: predicts with the prompt and with the negative prompt "
        "(the unconditional branch) in one batched UNet call and moves away from the "
        "negative: uncond + scale x (cond - uncond). Scale 1 skips the unconditional pass."
    )

    model = Socket(MODEL)
    positive = Socket(CONDITIONING, tooltip="what the image should show")
    negative = Socket(CONDITIONING, tooltip="what to steer away from (the unconditional branch)")
    scale = Float(7.0, min=0.0, max=30.0, step=0.1, tooltip="guidance strength; higher follows the prompt more literally")
    rescale = Float(
        0.0, min=0.0, max=1.0, step=0.05,
        tooltip="guidance rescale (Lin et al. 2023): reduces over-exposure at high scales; 0 is off",
    )
    outputs = (Output("guider", GUIDER),)
    estimate_memory = classmethod(estimates.guider(2))

    def run(
        self, ctx: RunContext, model: DiffusionModel, positive: Conditioning, negative: Conditioning,
        scale: float, rescale: float,
    ) -> Any:
        from nodes.diffusion.impl.guidance import Guider

        return Guider(model, positive, negative, scale, rescale)


class PerpNegGuider(Node):
    type = "PerpNegGuider"
    display_name = "Perp-Neg Guider"
    category = "sampling"
    description = (
        "Classifier-free guidance with Perp-Neg (Armandpour et al. 2023): the positive and "
        "negative prompts are taken as directions from an empty prompt's prediction, and only "
        "the part of the negative direction perpendicular to the positive one is pushed away "
        "from, so a negative that shares meaning with the positive (\"a dog\" / \"a tail\") does "
        "not cancel it. Three UNet passes per step."
    )

    model = Socket(MODEL)
    positive = Socket(CONDITIONING, tooltip="what the image should show")
    negative = Socket(CONDITIONING, tooltip="what to steer away from")
    empty_conditioning = Socket(CONDITIONING, tooltip="an empty prompt's conditioning: where both directions start")
    scale = Float(8.0, min=0.0, max=100.0, step=0.1, tooltip="guidance strength along the positive direction")
    neg_scale = Float(1.0, min=0.0, max=100.0, step=0.01, tooltip="how strongly the perpendicular negative is pushed away from")
    outputs = (Output("guider", GUIDER),)
    estimate_memory = classmethod(estimates.guider(2))

    def run(self, ctx: RunContext, model: DiffusionModel, positive: Conditioning, negative: Conditioning,
            empty_conditioning: Conditioning, scale: float, neg_scale: float) -> Any:
        from nodes.diffusion.impl.guidance import Guider
        from nodes.diffusion.types import PerpendicularNegative

        return Guider(model.with_patch(PerpendicularNegative(empty_conditioning, neg_scale)), positive, negative, scale)


class DualCFGGuider(Node):
    type = "DualCFGGuider"
    display_name = "Dual CFG Guider"
    category = "sampling"
    description = (
        "Guidance over two positive conditionings and a negative (ComfyUI's DualCFGGuider), "
        "e.g. an instruction and the plain image description. regular: CFG from the negative "
        "to cond2 at cfg_cond2_negative, plus cfg_conds times cond1's difference from cond2; "
        "nested: CFG from cond2 to cond1 at cfg_conds, then from the negative to that at "
        "cfg_cond2_negative. Three UNet passes per step."
    )

    model = Socket(MODEL)
    cond1 = Socket(CONDITIONING, tooltip="the first positive: pushed towards from cond2")
    cond2 = Socket(CONDITIONING, tooltip="the second positive: pushed towards from the negative")
    negative = Socket(CONDITIONING)
    cfg_conds = Float(8.0, min=0.0, max=100.0, step=0.1, tooltip="guidance from cond2 towards cond1")
    cfg_cond2_negative = Float(8.0, min=0.0, max=100.0, step=0.1, tooltip="guidance from the negative towards cond2")
    style = Choice(("regular", "nested"), default="regular", tooltip="regular adds the two guidances; nested guides "
                   "towards the first guided prediction")
    outputs = (Output("guider", GUIDER),)
    estimate_memory = classmethod(estimates.guider(2))

    def run(self, ctx: RunContext, model: DiffusionModel, cond1: Conditioning, cond2: Conditioning,
            negative: Conditioning, cfg_conds: float, cfg_cond2_negative: float, style: str) -> Any:
        from nodes.diffusion.impl.guidance import Guider
        from nodes.diffusion.types import DualGuidance

        return Guider(model.with_patch(DualGuidance(cond2, cfg_conds, style == "nested")), cond1, negative,
                      cfg_cond2_negative)


class BasicGuider(Node):
    type = "BasicGuider"
    display_name = "Basic Guider"
    category = "sampling"
    description = "The model's prediction for one conditioning, without a negative prompt (one UNet pass per step)."

    model = Socket(MODEL)
    conditioning = Socket(CONDITIONING)
    outputs = (Output("guider", GUIDER),)
    estimate_memory = classmethod(estimates.guider(1))

    def run(self, ctx: RunContext, model: DiffusionModel, conditioning: Conditioning) -> Any:
        from nodes.diffusion.impl.guidance import Guider

        return Guider(model, conditioning)


class Sampler(Node):
    type = "Sampler"
    display_name = "Sampler"
    category = "sampling"
    description = (
        "Denoises the latent step by step along the noise schedule. Denoise 1 starts from "
        "pure noise (the latent only gives the size); below 1 it starts from the latent "
        "noised to the matching step (image-to-image, like diffusers' strength). "
        "start_step / end_step run only part of the schedule (SDXL base then refiner: the "
        "first sampler stops with leftover noise, the second continues with No Noise). The "
        "live preview shows what `preview` picks: the current estimate of the final image "
        "(predicted x0), the predicted noise, the noisy latent, the predictions with and "
        "without the prompt, their difference (what CFG amplifies) or the noise added back."
    )
    preview_label = PREVIEW_KINDS["x0"]

    noise = Socket(NOISE)
    guider = Socket(GUIDER)
    latent = Socket(LATENT)
    sigmas = Socket(SIGMAS, optional=True, tooltip="an explicit noise schedule (Align Your Steps, Karras with its own "
                    "range, ...); when connected it replaces schedule, steps and denoise")
    sampler = Choice(tuple(SAMPLERS), default="dpmpp_2m", tooltip="the solver (a diffusers scheduler)")
    schedule = Choice(tuple(SCHEDULES), default="normal", tooltip="how noise levels are spaced over the steps")
    steps = Int(20, min=1, max=1000, tooltip="number of steps (heun and dpm_2 call the model twice per step)")
    denoise = Float(1.0, min=0.0, max=1.0, step=0.01, tooltip="1 for text-to-image; lower keeps more of the input latent")
    eta = Float(0.0, min=0.0, max=1.0, step=0.01, tooltip="ddim only: 0 is deterministic DDIM, 1 adds DDPM-like noise")
    start_step = Int(0, min=0, max=10000, tooltip="run the schedule from this step (0 = the start); "
                     "with No Noise, continue a latent another sampler stopped at this step")
    end_step = Int(10000, min=1, max=10000, tooltip="stop before this step (10000 = the end), e.g. an SDXL base "
                   "model's share before the refiner")
    leftover_noise = Bool(False, tooltip="stopping early: hand on the still-noisy latent for a second sampler "
                          "(with No Noise, start_step = this end_step); off finishes it to a clean estimate")
    preview = Choice(tuple(PREVIEW_KINDS), default="x0", affects_result=False,
                     tooltip="what the live step preview shows: " + "; ".join(f"{k}: {v}" for k, v in PREVIEW_KINDS.items()))
    outputs = (Output("latent", LATENT),)
    estimate_memory = classmethod(estimates.sampler)

    @classmethod
    def preview_title(cls, values: Mapping[str, Any]) -> str:
        return PREVIEW_KINDS.get(values.get("preview", "x0"), cls.preview_label)

    @classmethod
    def check_values(cls, values: Mapping[str, Any]) -> dict[str, str]:
        problems = {}
        if "sampler" in values and "schedule" in values:
            if reason := unsupported_reason(values["sampler"], values["schedule"]):
                problems["schedule"] = reason
        if "sampler" in values and (reason := eta_unsupported_reason(values["sampler"], values.get("eta", 0.0))):
            problems["eta"] = reason
        if values.get("start_step", 0) >= values.get("end_step", 10000):
            problems["end_step"] = f"end_step {values['end_step']} must be after start_step {values['start_step']}"
        elif "steps" in values and values.get("start_step", 0) >= values["steps"]:
            problems["start_step"] = f"start_step {values['start_step']} leaves none of the {values['steps']} steps to run"
        return problems

    @classmethod
    def check_connections(cls, values: Mapping[str, Any], connected: frozenset[str]) -> dict[str, str]:
        from nodes.diffusion.impl.samplers import list_refusal, sigma_list_samplers

        if "sigmas" in connected and values.get("sampler", "euler") not in sigma_list_samplers():
            return {"sampler": list_refusal(values["sampler"])}
        return {}

    @classmethod
    def insight(cls, values: dict[str, Any], upstream: Mapping[str, Any]) -> dict[str, Any]:
        """The noise schedule of these settings with the connected model's scheduler config
        (its folder's ``scheduler_config.json``, from the loader's facts), for the editor's plot."""
        from nodes.diffusion.impl.samplers import schedule_sigmas

        config = upstream.get("scheduler_config")
        if isinstance(config, Mapping):
            note = f"with the connected model's schedule ({_schedule_summary(config)})"
        else:
            config = _sd1_scheduler_config()
            why = ("a single-file checkpoint's schedule is known once it loads"
                   if upstream.get("model_configs") == "single file" else "no model folder is connected")
            note = f"with Stable Diffusion's default schedule ({_schedule_summary(config)}): {why}"
        levels = schedule_sigmas(values["sampler"], values["schedule"], values["steps"], config)
        steps = list(range(1, len(levels["sigma"]) + 1))
        return {
            "plots": [
                {"title": f"Noise schedule: {values['sampler']}, {values['schedule']}", "x_label": "step",
                 "y_label": "sigma", "series": [{"label": "sigma", "x": steps, "y": levels["sigma"]}]},
                {"title": "Signal share (alpha-bar)", "x_label": "step", "y_label": "alpha-bar",
                 "series": [{"label": "alpha-bar", "x": steps, "y": levels["alpha_bar"]}]},
            ],
            "notes": [note],
        }

    @classmethod
    def working_memory(cls, inputs: Mapping[str, Any], settings: Any) -> Any:
        from nodes.diffusion.impl.memory import sampler_need

        return sampler_need(inputs["guider"], getattr(inputs["latent"], "samples", None))

    def run(
        self, ctx: RunContext, noise: NoiseSource, guider: Any, latent: Latent,
        sampler: str, schedule: str, steps: int, denoise: float, eta: float,
        start_step: int = 0, end_step: int = 10000, leftover_noise: bool = False, preview: str = "x0",
        sigmas: Sigmas | None = None,
    ) -> Latent:
        from nodes.diffusion.impl.guidance import GuidanceError
        from nodes.diffusion.impl.sample import SamplingError, StepRange, sample

        try:
            samples = sample(ctx, noise, guider, latent, sampler, schedule, steps, denoise, eta,
                             StepRange(start_step, end_step, leftover_noise), preview_kind=preview, sigmas=sigmas)
        except SamplingError as exc:
            raise _field_error(exc.field, str(exc)) from None
        except GuidanceError as exc:
            raise _field_error("guider", str(exc)) from None
        return Latent(samples, guider.model.family, latent.noise_mask, latent.batch_index)


def _sd1_scheduler_config() -> dict[str, Any]:
    import json
    from pathlib import Path

    return json.loads((Path(__file__).parent / "configs" / "sd1" / "scheduler" / "scheduler_config.json").read_text())


def _schedule_summary(config: Mapping[str, Any]) -> str:
    betas = "own betas" if config.get("trained_betas") else (
        f"{config.get('beta_schedule', 'linear')} betas {config.get('beta_start', 0.0001)}-{config.get('beta_end', 0.02)}")
    return (f"{betas}, {config.get('num_train_timesteps', 1000)} steps, "
            f"{config.get('prediction_type', 'epsilon')}, {config.get('timestep_spacing', 'leading')} spacing")
