"""The sampling loop behind the ``Sampler`` node.

It performs the same calls in the same order as diffusers' StableDiffusionPipeline
(text-to-image) and StableDiffusionImg2ImgPipeline (denoise < 1, their ``strength``),
with one CPU generator seeded from the NOISE input: first the starting noise is drawn
from it, then whatever a stochastic scheduler draws during its steps. So a graph and a
pipeline given the same seed produce the same image.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nodeflow import RunContext

from nodes.diffusion.impl.preview import latent_preview, latent_rgb_map
from nodes.diffusion.impl.samplers import SAMPLERS, UnsupportedCombination, eta_unsupported_reason, make_scheduler, step_parameters
from nodes.diffusion.types import Latent, NoiseSource

if TYPE_CHECKING:
    import torch

    from nodes.diffusion.impl.guidance import Guider


class SamplingError(ValueError):
    """Settings the sampler refuses; ``field`` names the input at fault."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def sample(
    ctx: RunContext, noise: NoiseSource, guider: "Guider", latent: Latent,
    sampler: str, schedule: str, steps: int, denoise: float, eta: float,
) -> "torch.Tensor":
    """Run the sampler; returns the denoised latents [B, C, h, w] in model space."""
    import torch

    if sampler not in SAMPLERS:
        raise SamplingError("sampler", f"unknown sampler {sampler!r}")
    spec = SAMPLERS[sampler]
    if reason := eta_unsupported_reason(sampler, eta):
        raise SamplingError("eta", reason)
    model = guider.model
    unet = model.unet
    from nodes.diffusion.impl.inpaint import MaskBlend, concat_inputs

    try:  # an inpainting UNet takes the mask and the masked image beside the latent
        extra_channels = concat_inputs(unet.config.in_channels, latent, guider.positive.extras.get("inpaint"), latent.samples)
    except ValueError as exc:
        raise SamplingError("latent", str(exc)) from None
    extra: dict[str, Any] = {}
    if sampler == "dpmpp_sde" and noise.seed is not None:
        extra["noise_sampler_seed"] = noise.seed  # its Brownian tree draws from its own seed
    try:
        scheduler = make_scheduler(sampler, schedule, model.scheduler_config, **extra)
    except UnsupportedCombination as exc:
        raise SamplingError("schedule", str(exc)) from None

    from nodes.diffusion.impl.lora import active

    with torch.inference_mode(), active([unet], model.adapters):
        device, dtype = unet.device, unet.dtype
        try:
            scheduler.set_timesteps(steps, device=device)
        except ValueError as exc:  # e.g. lcm: more steps than the model was distilled for
            raise SamplingError("steps", f"{sampler} cannot run {steps} steps: {exc}") from None
        timesteps = scheduler.timesteps
        shape = tuple(latent.samples.shape)
        generator = None if noise.seed is None else torch.Generator("cpu").manual_seed(noise.seed)
        if generator is not None:
            initial = torch.randn(shape, generator=generator, dtype=dtype).to(device)

        if generator is None:
            # No noise (DisableNoise): the input latent is taken to be noisy already, at the
            # level of the first step that runs, so it is the starting point as it is.
            begin = 0 if denoise >= 1.0 else (steps - min(int(steps * denoise), steps)) * scheduler.order
            timesteps = timesteps[begin:]
            if len(timesteps) == 0:
                return latent.samples
            if begin and hasattr(scheduler, "set_begin_index"):
                scheduler.set_begin_index(begin)
            x = latent.samples.to(device=device, dtype=dtype)
        elif denoise >= 1.0:
            x = initial * scheduler.init_noise_sigma
        else:
            # The last `denoise` fraction of the schedule, as diffusers' img2img strength.
            begin = (steps - min(int(steps * denoise), steps)) * scheduler.order
            timesteps = timesteps[begin:]
            if len(timesteps) == 0:
                return latent.samples  # nothing left to denoise
            if hasattr(scheduler, "set_begin_index"):
                scheduler.set_begin_index(begin)
            start = latent.samples.to(device=device, dtype=dtype)
            x = scheduler.add_noise(start, initial, timesteps[:1].repeat(shape[0]))

        predict = guider.bind(x)
        if extra_channels is not None:
            predict = _with_channels(predict, extra_channels.to(device=device, dtype=dtype))
        blend = None
        if latent.noise_mask is not None:
            blend = MaskBlend(latent, initial if generator is not None else None, scheduler, timesteps, x)
        accepted = step_parameters(spec.scheduler_class)
        step_kwargs: dict[str, Any] = {}
        if "eta" in accepted:
            step_kwargs["eta"] = eta
        if "generator" in accepted:
            step_kwargs["generator"] = generator
        # The checkpoint's own map (the bundled model ships a fitted one), else its family's.
        rgb_map = model.latent_rgb if model.latent_rgb is not None else latent_rgb_map(model.family, shape[1])
        # Previews cost about a millisecond a step; skip them when nobody will look.
        previews = ctx.on_progress is not None and ctx.settings.previews
        total = len(timesteps)
        for i, t in enumerate(timesteps):
            prediction = predict(scheduler.scale_model_input(x, t), t)
            result = scheduler.step(prediction, t, x, **step_kwargs, return_dict=True)
            preview = latent_preview(_preview_x0(result, scheduler, prediction, x), rgb_map) if previews else None
            x = result.prev_sample
            if blend is not None:
                x = blend(x, i)
            ctx.progress(i + 1, total, preview)
    return x


def _with_channels(predict: Any, extra: "torch.Tensor") -> Any:
    """``predict`` for a UNet that takes ``extra`` channels after the latent's (inpainting)."""
    import torch

    def with_channels(x: "torch.Tensor", t: "torch.Tensor") -> "torch.Tensor":
        return predict(torch.cat([x, extra], dim=1), t)

    return with_channels


def _preview_x0(result: Any, scheduler: Any, prediction: "torch.Tensor", x: "torch.Tensor") -> "torch.Tensor":
    """The step's estimate of the clean latent for the first image of the batch (the preview)."""
    for name in ("pred_original_sample", "denoised"):  # most schedulers report it
        x0 = getattr(result, name, None)
        if x0 is not None:
            return x0[:1]
    x, prediction = x[:1], prediction[:1]
    # DPM-Solver multistep and UniPC do not; they keep x in variance-preserving scale,
    # x = alpha_t * x0 + sigma_t * eps, with sigma = sigma_t / alpha_t at the step just taken.
    sigma = scheduler.sigmas[scheduler.step_index - 1].to(x.device, x.dtype)
    alpha_t = (sigma * sigma + 1.0).rsqrt()
    sigma_t = sigma * alpha_t
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return (x - sigma_t * prediction) / alpha_t
    if kind == "v_prediction":
        return alpha_t * x - sigma_t * prediction
    return prediction
