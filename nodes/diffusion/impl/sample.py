"""The sampling loop behind the ``Sampler`` node.

It performs the same calls in the same order as diffusers' StableDiffusionPipeline
(text-to-image) and StableDiffusionImg2ImgPipeline (denoise < 1, their ``strength``),
with one CPU generator seeded from the NOISE input: first the starting noise is drawn
from it, then whatever a stochastic scheduler draws during its steps. So a graph and a
pipeline given the same seed produce the same image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable

from nodeflow import RunContext

from nodes.diffusion.impl.preview import latent_preview, latent_rgb_map
from nodes.diffusion.impl.views import PREVIEW_KINDS  # noqa: F401  (re-exported)
from nodes.diffusion.impl.samplers import (
    SAMPLERS, UnsupportedCombination, runs_as_list, eta_unsupported_reason, listed_schedule, make_scheduler,
    step_parameters,
)
from nodes.diffusion.types import DeepShrink, DifferentialMask, Latent, NoiseSource, RescaledGuidance, Sigmas

if TYPE_CHECKING:
    import torch

    from nodes.diffusion.impl.guidance import Guider


@dataclass(frozen=True)
class StepRange:
    """Which steps of the schedule run: ``[start, end)`` (an end past the last step is the
    end). Stopping early with ``leftover_noise`` hands on the latent as it is at step
    ``end`` (in k-diffusion's x0 + sigma*eps form, whatever the solver keeps, so a second
    sampler of another kind can continue it); without, the last step's estimate of the
    clean latent is returned, as a finished run would."""

    start: int = 0
    end: int = 10_000
    leftover_noise: bool = False


FULL = StepRange()


@dataclass(frozen=True)
class StepView:
    """What one step of a run saw and did, for the first latent of the batch, in
    k-diffusion form whatever the solver keeps (``latent`` = x0 + sigma * noise):

    - ``latent``: x_t before the step, at noise level ``sigma``; ``next_latent`` after it
      (at ``sigma_next``);
    - ``prediction``: the guided model output; ``cond`` / ``uncond``: the two predictions
      classifier-free guidance mixed (uncond None without a negative pass);
    - ``x0``: the step's estimate of the clean latent; ``noise``: the total noise it
      implies, (latent - x0) / sigma (what an epsilon model predicts);
    - ``added_noise``: next_latent minus the deterministic move along that estimate
      (x0 + sigma_next * noise): zero for DDIM with eta 0 and Euler, the fresh noise a
      stochastic sampler (DDPM) adds back.
    """

    index: int
    total: int
    timestep: float
    sigma: float
    sigma_next: float
    latent: "torch.Tensor"
    prediction: "torch.Tensor"
    cond: "torch.Tensor | None"
    uncond: "torch.Tensor | None"
    x0: "torch.Tensor"
    noise: "torch.Tensor"
    next_latent: "torch.Tensor"
    added_noise: "torch.Tensor"




class SamplingError(ValueError):
    """Settings the sampler refuses; ``field`` names the input at fault."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def sample(
    ctx: RunContext, noise: NoiseSource, guider: "Guider", latent: Latent,
    sampler: str, schedule: str, steps: int, denoise: float, eta: float, steps_run: StepRange = FULL,
    preview_kind: str = "x0", trace: Callable[[StepView], None] | None = None, sigmas: "Sigmas | None" = None,
) -> "torch.Tensor":
    """Run the sampler; returns the denoised latents [B, C, h, w] (nodeflow's latents: a model
    with its own latent space, ``model.latent_format``, samples in it, converted in and out).
    ``preview_kind`` (a key of :data:`PREVIEW_KINDS`) is what the progress previews show;
    ``trace`` is called with every step's :class:`StepView`. Views are only computed when
    someone looks (previews on, or a trace). ``sigmas`` (an explicit schedule) replaces
    ``schedule``, ``steps`` and ``denoise``; its window narrows ``steps_run``."""
    fmt = guider.model.latent_format
    if fmt is None:
        return _sample(ctx, noise, guider, latent, sampler, schedule, steps, denoise, eta, steps_run, preview_kind,
                       trace, sigmas)
    inside = replace(latent, samples=_into_model_space(latent.samples, fmt))
    samples = _sample(ctx, noise, guider, inside, sampler, schedule, steps, denoise, eta, steps_run, preview_kind,
                      trace, sigmas, lambda z: _out_of_model_space(z, fmt))
    return _out_of_model_space(samples, fmt)


def _into_model_space(samples: "torch.Tensor", fmt: Any) -> "torch.Tensor":
    """nodeflow latents -> a model's own latent space (types.LatentFormat)."""
    mean, std = _channel_stats(samples, fmt)
    return (samples / fmt.outside_scale - mean) * fmt.scale / std


def _out_of_model_space(samples: "torch.Tensor", fmt: Any) -> "torch.Tensor":
    mean, std = _channel_stats(samples, fmt)
    return (samples * std / fmt.scale + mean) * fmt.outside_scale


def _channel_stats(samples: "torch.Tensor", fmt: Any) -> tuple["torch.Tensor", "torch.Tensor"]:
    import torch

    if samples.shape[1] != len(fmt.mean):
        raise SamplingError("latent", f"the model's latent space has {len(fmt.mean)} channels, the latent "
                            f"{samples.shape[1]}")
    shape = (1, len(fmt.mean), 1, 1)
    as_tensor = lambda values: torch.tensor(values, dtype=samples.dtype, device=samples.device).view(shape)  # noqa: E731
    return as_tensor(fmt.mean), as_tensor(fmt.std)


def _sample(
    ctx: RunContext, noise: NoiseSource, guider: "Guider", latent: Latent,
    sampler: str, schedule: str, steps: int, denoise: float, eta: float, steps_run: StepRange = FULL,
    preview_kind: str = "x0", trace: Callable[[StepView], None] | None = None, sigmas: "Sigmas | None" = None,
    outside: "Callable[[torch.Tensor], torch.Tensor] | None" = None,
) -> "torch.Tensor":
    """:func:`sample` in the model's latent space; ``outside`` turns a latent of it into
    nodeflow's space for the previews (None: the same space)."""
    import torch

    if sampler not in SAMPLERS:
        raise SamplingError("sampler", f"unknown sampler {sampler!r}")
    spec = SAMPLERS[sampler]
    if reason := eta_unsupported_reason(sampler, eta):
        raise SamplingError("eta", reason)
    model = guider.model
    unet = model.unet
    if model.sampling == "edm":
        from nodes.diffusion.impl.edm import EDMError, edm_spec

        try:
            spec = edm_spec(sampler)
        except EDMError as exc:
            raise SamplingError(exc.field, str(exc)) from None
        _refuse_timestep_windows(guider)
        if model.patches_of(RescaledGuidance) or model.patches_of(DeepShrink):
            raise SamplingError("guider", "Rescale CFG and Deep Shrink work on a variance-preserving schedule's "
                                "levels; the model samples in continuous EDM form (Model Prediction (EDM)), which "
                                "they do not apply to")
    if model.sampling == "lcm" and sampler != "lcm":
        raise SamplingError("sampler", f"the model is LCM-distilled (Model Prediction lcm), which runs with the lcm "
                            f"sampler (its 50-step grid and boundary condition); {sampler} would not run it as distilled")
    from nodes.diffusion.impl.inpaint import concat_inputs

    try:  # an inpainting UNet takes the mask and the masked image beside the latent
        extra_channels = concat_inputs(unet.config.in_channels, latent, guider.positive.extras.get("inpaint"), latent.samples,
                                       guider.positive.extras.get("edited_latent"))
    except ValueError as exc:
        raise SamplingError("latent", str(exc)) from None
    extra: dict[str, Any] = {}
    if sampler == "dpmpp_sde" and noise.seed is not None:
        extra["noise_sampler_seed"] = noise.seed  # its Brownian tree draws from its own seed
    try:
        # An explicit list replaces the schedule: the scheduler is built without sigma options.
        if model.sampling == "edm":
            from nodes.diffusion.impl.edm import make_edm_scheduler

            scheduler = make_edm_scheduler(sampler, schedule, model.scheduler_config)
        else:
            listed = sigmas is not None or runs_as_list(sampler, schedule)  # built plain, the list set on it
            scheduler = make_scheduler(sampler, "normal" if listed else schedule, model.scheduler_config, **extra)
    except UnsupportedCombination as exc:
        raise SamplingError("schedule", str(exc)) from None

    from_schedule = sigmas is None and runs_as_list(sampler, schedule)
    if from_schedule:  # beta, kl_optimal, ...: run as the list they are
        if model.sampling == "edm":
            raise SamplingError("schedule", f"the {schedule} schedule runs as a list of sigmas, which diffusers' EDM "
                                "schedulers cannot take; use karras or exponential with this model")
        sigmas = listed_schedule(schedule, steps, denoise, scheduler)
    timing: dict[str, Any] | None = None
    if sigmas is not None:
        try:
            timing, steps, denoise, steps_run = _explicit(sampler, spec, scheduler, sigmas, steps_run)
        except SamplingError as exc:  # a list the schedule made: the steps are at fault, not an input
            if exc.field == "sigmas" and from_schedule:
                raise SamplingError("steps", f"the {schedule} schedule at {steps} steps: {exc}") from None
            raise

    from nodes.diffusion.impl.lora import active
    from nodes.diffusion.impl.patches import unet_patches

    with torch.inference_mode(), active([unet], model.adapters), unet_patches(unet, model):
        device, dtype = unet.device, unet.dtype
        try:
            if timing is None:
                scheduler.set_timesteps(steps, device=device)
            elif "assigned" in timing:  # the class takes no list: its own schedule, then the list set on it
                from nodes.diffusion.impl.sigmas import assign

                scheduler.set_timesteps(len(timing["assigned"]) - 1, device=device)
                assign(scheduler, timing["assigned"], device)
            else:
                scheduler.set_timesteps(device=device, **timing)
        except ValueError as exc:  # e.g. lcm: more steps than the model was distilled for
            raise SamplingError("steps", f"{sampler} cannot run {steps} steps: {exc}") from None
        full = scheduler.timesteps
        order = scheduler.order
        shape = tuple(latent.samples.shape)
        generator = None if noise.seed is None else torch.Generator("cpu").manual_seed(noise.seed)
        if generator is not None:
            initial = starting_noise(shape, generator, dtype, latent.batch_index).to(device)
        # The last `denoise` fraction of the schedule (diffusers' img2img strength), then
        # the requested step range within the whole schedule.
        begin = 0 if denoise >= 1.0 else (steps - min(int(steps * denoise), steps)) * order
        begin = max(begin, steps_run.start * order)
        stop = min(len(full), steps_run.end * order)
        timesteps = full[begin:stop]
        if len(timesteps) == 0:
            return latent.samples  # nothing left to denoise
        if begin and hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(begin)
        vp = spec.variance_preserving
        # A list of sigmas that starts below the model's largest, on a latent with a picture
        # in it, starts part way, as a window of a longer list would: from the input latent
        # noised to its first level, as ComfyUI does. An empty latent has nothing to keep and
        # starts from pure noise, as diffusers' pipelines do (so a list of a schedule's own
        # sigmas gives that schedule's image).
        part_way = begin > 0 or (sigmas is not None and generator is not None and bool(latent.samples.any())
                                 and _starts_below_max(sigmas, scheduler))

        if generator is None:
            # No noise (DisableNoise): the input latent is taken to be noisy already, at the
            # level of the first step that runs (k-diffusion form), so it is the starting point.
            x = latent.samples.to(device=device, dtype=dtype)
            if part_way and vp:
                x = x * _vp_alpha(scheduler, full, begin)
        elif not part_way:
            x = initial * scheduler.init_noise_sigma
        else:
            start = latent.samples.to(device=device, dtype=dtype)
            x = scheduler.add_noise(start, initial, timesteps[:1].repeat(shape[0]))

        masked = _noise_mask(latent, shape, device, dtype)
        mask_at = _mask_schedule(masked, model, timesteps, full, stop)
        if masked is not None:  # the outside is kept: the input latent, re-noised to each level
            original = latent.samples.to(device=device, dtype=dtype)
            kept_noise = initial if generator is not None else torch.randn(
                shape, generator=torch.Generator("cpu").manual_seed(0), dtype=dtype).to(device)

        previews = ctx.on_progress is not None and ctx.settings.previews
        views = trace is not None or (previews and preview_kind != "x0")
        tapped: list[Any] = [None, None]

        def tap(uncond: "torch.Tensor | None", cond: "torch.Tensor") -> None:
            tapped[0], tapped[1] = uncond, cond

        predict = guider.bind(x, tap if views else None, seed=noise.seed, timesteps=[float(t) for t in timesteps],
                              sigma_of=lambda t: sigma_at(scheduler, t))
        if extra_channels is not None:
            predict = _with_channels(predict, extra_channels.to(device=device, dtype=dtype))
        accepted = step_parameters(spec.scheduler_class)
        step_kwargs: dict[str, Any] = {}
        if "eta" in accepted:
            step_kwargs["eta"] = eta
        if "generator" in accepted:
            step_kwargs["generator"] = generator
        # The checkpoint's own map (the bundled model ships a fitted one), else its family's.
        rgb_map = model.latent_rgb if model.latent_rgb is not None else latent_rgb_map(model.family, shape[1])
        # Previews cost about a millisecond a step; skip them when nobody will look.
        total = len(timesteps)
        for i, t in enumerate(timesteps):
            before = x[:1].clone() if views else None
            prediction = predict(scheduler.scale_model_input(x, t), t)
            result = scheduler.step(prediction, t, x, **step_kwargs, return_dict=True)
            if views:
                following = timesteps[i + 1] if i + 1 < total else (full[stop] if stop < len(full) else None)
                view = _step_view(i, total, t, following, scheduler, vp, before, prediction[:1],
                                  _preview_x0(result, scheduler, prediction, x), result.prev_sample[:1], tapped)
                if trace is not None:
                    trace(view)
                preview = _view_preview(view, preview_kind, rgb_map) if previews else None
            else:
                preview = None
                if previews:
                    estimate = _preview_x0(result, scheduler, prediction, x)
                    preview = latent_preview(estimate if outside is None else outside(estimate), rgb_map)
            clean = None
            if stop < len(full) and i == total - 1 and not steps_run.leftover_noise:
                clean = _x0(result, scheduler, prediction, x)
            x = result.prev_sample
            if masked is not None:
                last = i + 1 == total
                if last and (stop >= len(full) or not steps_run.leftover_noise):
                    kept = original
                else:
                    level = timesteps[i + 1: i + 2] if not last else full[stop: stop + 1]
                    kept = scheduler.add_noise(original, kept_noise, level.repeat(shape[0]))
                # the mask of the level x is now at (the last step's own at the end)
                now = mask_at(timesteps[i + 1] if not last else t)
                x = now * x + (1 - now) * kept
                if clean is not None:
                    clean = now * clean + (1 - now) * original
            ctx.progress(i + 1, total, preview)
        if stop < len(full):  # stopped early
            if clean is not None:
                return clean
            return x / _vp_alpha(scheduler, full, stop) if vp else x
    return x


def _starts_below_max(sigmas: "Sigmas", scheduler: Any) -> bool:
    """Whether the list's first level is below the model's largest sigma (within 1e-5, as
    ComfyUI decides whether a run starts from pure noise); EDM schedulers take no list."""
    alphas = getattr(scheduler, "alphas_cumprod", None)
    if alphas is None:
        return False
    last = max(float(alphas[-1]), 2.0 ** -24)
    return sigmas.values[0] < ((1.0 - last) / last) ** 0.5 * (1.0 - 1e-5)


def _explicit(sampler: str, spec: Any, scheduler: Any, sigmas: "Sigmas",
              steps_run: StepRange) -> tuple[dict[str, Any], int, float, StepRange]:
    """``set_timesteps`` arguments, steps, denoise and step range for an explicit schedule."""
    from nodes.diffusion.impl.samplers import list_refusal
    from nodes.diffusion.impl.sigmas import SigmaError, timesteps_for

    if not spec.sigma_list:
        raise SamplingError("sampler", list_refusal(sampler, spec.scheduler_class))
    try:
        alphas = getattr(scheduler, "alphas_cumprod", None)  # EDM schedulers have none (and take sigmas)
        timing = timesteps_for(spec.sigma_list, sigmas, [] if alphas is None else alphas.tolist(), sampler)
    except SigmaError as exc:
        raise SamplingError(exc.field, str(exc)) from None
    early = sigmas.stop < sigmas.steps  # the window stops before the end: hand on the noisy latent
    window = StepRange(max(steps_run.start, sigmas.start), min(steps_run.end, sigmas.stop) if early else steps_run.end,
                       steps_run.leftover_noise or early)
    return timing, sigmas.steps, 1.0, window


def _refuse_timestep_windows(guider: "Guider") -> None:
    """EDM timesteps are log(sigma) / 4, not training steps: the windows of ControlNets and
    conditioning step ranges (fractions of 1000 steps) would not mean what they say."""
    for which, cond in (("positive", guider.positive), ("negative", guider.negative)):
        for part in () if cond is None else cond.parts():
            if part.timestep_range is not None or part.extras.get("control"):
                raise SamplingError("guider", f"the {which} conditioning has a ControlNet or a step range, which "
                                    "nodeflow does not apply to continuous EDM models yet")


def sigma_at(scheduler: Any, timestep: Any) -> float:
    """The k-diffusion noise level sqrt((1 - alpha-bar) / alpha-bar) at a (possibly
    fractional, as karras sigmas give) train timestep, interpolated in log sigma the way
    diffusers maps sigmas to timesteps; 0 past the end of the schedule (None). EDM
    schedulers' timesteps are log(sigma) / 4."""
    import math

    if getattr(scheduler.config, "sigma_data", None) is not None:  # continuous EDM
        return 0.0 if timestep is None else math.exp(4.0 * float(timestep))

    if timestep is None:  # past the last step: DDIM ends at its final alpha-bar, the others at 0
        final = getattr(scheduler, "final_alpha_cumprod", None)
        return 0.0 if final is None else float(((1 - final) / final) ** 0.5)
    alpha_bar = scheduler.alphas_cumprod.double()
    log_sigma = (0.5 * ((1 - alpha_bar) / alpha_bar).log()).tolist()
    t = min(max(float(timestep), 0.0), len(log_sigma) - 1.0)
    low = int(math.floor(t))
    high = min(low + 1, len(log_sigma) - 1)
    return math.exp(log_sigma[low] + (t - low) * (log_sigma[high] - log_sigma[low]))


def _step_view(index: int, total: int, t: Any, following: Any, scheduler: Any, vp: bool, before: "torch.Tensor",
               prediction: "torch.Tensor", x0: "torch.Tensor", after: "torch.Tensor", tapped: list[Any]) -> StepView:
    sigma, sigma_next = sigma_at(scheduler, t), sigma_at(scheduler, following)
    # A variance-preserving solver keeps alpha * (x0 + sigma * eps), alpha = 1 / sqrt(1 + sigma^2).
    latent = before * (1.0 + sigma * sigma) ** 0.5 if vp else before
    next_latent = after * (1.0 + sigma_next * sigma_next) ** 0.5 if vp else after
    x0 = x0.to(latent.dtype)
    noise = (latent - x0) / sigma
    uncond, cond = tapped
    return StepView(index, total, float(t), sigma, sigma_next, latent.float(), prediction.float(),
                    None if cond is None else cond[:1].float(), None if uncond is None else uncond[:1].float(),
                    x0.float(), noise.float(), next_latent.float(), (next_latent - (x0 + sigma_next * noise)).float())


def _view_preview(view: StepView, kind: str, rgb_map: "torch.Tensor") -> Any:
    """The preview picture of ``kind`` for one step. Noise-like views (everything but x0
    and the latent) are scaled to unit spread, so their pattern shows at any size."""
    if kind == "latent":
        return latent_preview(view.latent / (1.0 + view.sigma * view.sigma) ** 0.5, rgb_map)
    if kind == "x0":
        return latent_preview(view.x0, rgb_map)
    tensor = {"noise": view.noise, "cond": view.cond, "uncond": view.uncond, "added_noise": view.added_noise,
              "cfg_difference": None if view.cond is None or view.uncond is None else view.cond - view.uncond,
              }.get(kind, view.x0)
    if tensor is None:  # no negative pass: nothing to show for uncond / the difference
        tensor = view.prediction * 0
    return latent_preview(tensor / tensor.std().clamp(min=1e-6) * 0.5, rgb_map)


def starting_noise(shape: tuple[int, ...], generator: "torch.Generator", dtype: Any,
                   batch_index: "tuple[int, ...] | None" = None) -> "torch.Tensor":
    """The starting noise of a batch from ``generator``: one draw of the batch's shape, or,
    when the latent says which draw each of its latents gets (``Latent.batch_index``),
    enough latents drawn the same way (at least the batch, so draw 0 is always the first
    latent of the usual draw) and each latent given its own. A ``batch_index`` that does
    not match the batch (a node changed the batch without it) is ignored."""
    import torch

    if batch_index is None or len(batch_index) != shape[0] or list(batch_index) == list(range(shape[0])):
        return torch.randn(shape, generator=generator, dtype=dtype)
    drawn = torch.randn((max(shape[0], max(batch_index) + 1), *shape[1:]), generator=generator, dtype=dtype)
    return drawn[torch.tensor(batch_index, dtype=torch.long)]


def _noise_mask(latent: Latent, shape: tuple[int, ...], device: Any, dtype: Any) -> "torch.Tensor | None":
    """The latent's noise mask as [B, 1, h, w] on the latent grid, or None."""
    import torch.nn.functional as F

    mask = latent.noise_mask
    if mask is None:
        return None
    mask = mask.float().reshape(-1, 1, *mask.shape[-2:])
    mask = F.interpolate(mask, size=shape[-2:], mode="bilinear", align_corners=False)
    if mask.shape[0] != shape[0]:
        if shape[0] % mask.shape[0]:
            raise SamplingError("latent", f"the noise mask has a batch of {mask.shape[0]}, the latent {shape[0]}")
        mask = mask.repeat(shape[0] // mask.shape[0], 1, 1, 1)
    return mask.clamp(0.0, 1.0).to(device=device, dtype=dtype)


def _mask_schedule(masked: "torch.Tensor | None", model: Any, timesteps: "torch.Tensor", full: "torch.Tensor",
                   stop: int) -> Callable[[Any], "torch.Tensor | None"]:
    """The noise mask to apply at a timestep: the mask itself, or with a DifferentialMask
    patch, the mask thresholded by how far the run has come (impl/patches.py), from the
    first step that runs to where the run ends (its stop step, else the schedule's end)."""
    kinds = model.patches_of(DifferentialMask)
    if masked is None or not kinds:
        return lambda t: masked
    from nodes.diffusion.impl.patches import differential_mask

    first = float(timesteps[0])
    if stop < len(full):
        last = float(full[stop])
    elif model.sampling == "edm":  # EDM timesteps are log(sigma) / 4: the model's smallest sigma
        last = 0.25 * math.log(float(model.scheduler_config.get("sigma_min", 0.002)))
    else:
        last = 0.0
    strength = kinds[-1].strength
    return lambda t: differential_mask(masked, float(t), first, last, strength)


def _vp_alpha(scheduler: Any, timesteps: "torch.Tensor", index: int) -> "torch.Tensor":
    """alpha_t = 1 / sqrt(1 + sigma^2) at step ``index``: a variance-preserving solver's
    latent is alpha_t times the k-diffusion one (x0 + sigma * eps)."""
    import torch

    sigmas = getattr(scheduler, "sigmas", None)
    if sigmas is not None and len(sigmas) > index:
        sigma = sigmas[index].float()
    else:  # DDPM/DDIM/LCM keep alphas-bar instead
        alpha_bar = scheduler.alphas_cumprod[int(timesteps[index])].float()
        sigma = ((1 - alpha_bar) / alpha_bar).sqrt()
    return torch.rsqrt(sigma * sigma + 1.0).to(timesteps.device)
def _with_channels(predict: Any, extra: "torch.Tensor") -> Any:
    """``predict`` for a UNet that takes ``extra`` channels after the latent's (inpainting)."""
    import torch

    def with_channels(x: "torch.Tensor", t: "torch.Tensor") -> "torch.Tensor":
        return predict(torch.cat([x, extra], dim=1), t)

    return with_channels


def _preview_x0(result: Any, scheduler: Any, prediction: "torch.Tensor", x: "torch.Tensor") -> "torch.Tensor":
    """The step's estimate of the clean latent for the first image of the batch (the preview)."""
    return _x0(result, scheduler, prediction[:1], x[:1], first_only=True)


def _x0(result: Any, scheduler: Any, prediction: "torch.Tensor", x: "torch.Tensor", first_only: bool = False) -> "torch.Tensor":
    """The step's estimate of the clean latent."""
    for name in ("pred_original_sample", "denoised"):  # most schedulers report it
        x0 = getattr(result, name, None)
        if x0 is not None:
            return x0[:1] if first_only else x0
    if getattr(scheduler.config, "sigma_data", None) is not None:  # EDM DPM-Solver: its last x0 estimate
        x0 = scheduler.model_outputs[-1]
        return x0[:1] if first_only else x0
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
