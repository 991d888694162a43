"""Explicit noise schedules (SIGMAS) for the Sampler: Align Your Steps, Karras,
exponential, Laplace and beta schedules with their own settings, a typed-in list, and
editing one (splitting it in two, its first sigma, more steps in between).

The Sampler's own `schedule` choice covers the common cases with the model's own
noise range (and stays bit-equal to diffusers' pipelines); these nodes are for the
schedules it cannot name: the published Align Your Steps levels, a Karras or
exponential ramp between chosen sigmas, or the two halves of one schedule for two
samplers. Connect the output to the Sampler's `sigmas` input.
"""

from __future__ import annotations

from nodeflow import Choice, Float, Int, Node, NodeError, Output, RunContext, Socket, String

from nodes.diffusion.impl.sigmas import (
    AYS_SIGMAS, BETA_ALPHA, BETA_BETA, SD_SIGMA_MAX, SD_SIGMA_MIN, align_your_steps, edm_levels, exponential, extend,
    karras, laplace, model_levels, parse, polyexponential, set_first, split, split_denoise, variance_preserving,
)
from nodes.diffusion.impl.sigmas import beta as beta_levels
from nodes.diffusion.types import MODEL, SIGMAS, DiffusionModel, Sigmas


def _steps() -> Int:
    return Int(20, min=1, max=1000, tooltip="number of steps (the list has one more sigma, the final 0)")


def _range() -> tuple[Float, Float]:
    return (Float(SD_SIGMA_MAX, min=0.0001, max=5000.0, step=0.01, tooltip="the first, noisiest step's sigma"),
            Float(SD_SIGMA_MIN, min=0.0001, max=5000.0, step=0.01, tooltip="the last step's sigma before 0"))


def _check_range(cls: type, values: dict) -> dict[str, str]:
    """check_values of the schedules with a sigma range: min below max."""
    if values.get("sigma_min", SD_SIGMA_MIN) >= values.get("sigma_max", SD_SIGMA_MAX):
        return {"sigma_min": f"sigma_min {values['sigma_min']} must be below sigma_max {values['sigma_max']}"}
    return {}


class AlignYourStepsScheduler(Node):
    type = "AlignYourStepsScheduler"
    display_name = "Align Your Steps"
    category = "sampling"
    description = (
        "The noise levels Align Your Steps (Sabour et al. 2024) found best for SD 1.5 or "
        "SDXL at 10 steps, spread log-linearly for other step counts. Below denoise 1 only "
        "the last steps x denoise steps run (image-to-image)."
    )

    model_type = Choice(tuple(AYS_SIGMAS), default="SD1", tooltip="the family the schedule was optimised for")
    steps = Int(10, min=1, max=1000, tooltip="number of steps; 10 uses the published levels as they are")
    denoise = Float(1.0, min=0.0, max=1.0, step=0.01, tooltip="1 for text-to-image; lower runs only the last steps")
    outputs = (Output("sigmas", SIGMAS),)

    def run(self, ctx: RunContext, model_type: str, steps: int, denoise: float) -> Sigmas:
        if round(steps * denoise) < 1:
            raise NodeError(f"denoise {denoise} leaves none of the {steps} steps to run", field="denoise")
        return align_your_steps(model_type, steps, denoise)


class KarrasScheduler(Node):
    type = "KarrasScheduler"
    display_name = "Karras Schedule"
    category = "sampling"
    description = (
        "Karras et al.'s schedule between sigma_max and sigma_min: rho 7 spends more steps "
        "at low noise (detail); higher rho more so."
    )

    steps = _steps()
    sigma_max, sigma_min = _range()
    rho = Float(7.0, min=0.0001, max=100.0, step=0.01, tooltip="the ramp's curvature; 1 is evenly spaced sigmas")
    outputs = (Output("sigmas", SIGMAS),)
    check_values = classmethod(_check_range)

    def run(self, ctx: RunContext, steps: int, sigma_max: float, sigma_min: float, rho: float) -> Sigmas:
        return karras(steps, sigma_max, sigma_min, rho)


class ExponentialScheduler(Node):
    type = "ExponentialScheduler"
    display_name = "Exponential Schedule"
    category = "sampling"
    description = "Sigmas evenly spaced in log sigma from sigma_max down to sigma_min."

    steps = _steps()
    sigma_max, sigma_min = _range()
    outputs = (Output("sigmas", SIGMAS),)
    check_values = classmethod(_check_range)

    def run(self, ctx: RunContext, steps: int, sigma_max: float, sigma_min: float) -> Sigmas:
        return exponential(steps, sigma_max, sigma_min)


class PolyexponentialScheduler(Node):
    type = "PolyexponentialScheduler"
    display_name = "Polyexponential Schedule"
    category = "sampling"
    description = (
        "Log sigma falls from sigma_max to sigma_min along a ramp raised to rho: rho 1 is the "
        "exponential schedule, higher rho spends more steps at high noise."
    )

    steps = _steps()
    sigma_max, sigma_min = _range()
    rho = Float(1.0, min=0.0001, max=100.0, step=0.01, tooltip="the ramp's curvature; 1 is evenly spaced in log sigma")
    outputs = (Output("sigmas", SIGMAS),)
    check_values = classmethod(_check_range)

    def run(self, ctx: RunContext, steps: int, sigma_max: float, sigma_min: float, rho: float) -> Sigmas:
        return polyexponential(steps, sigma_max, sigma_min, rho)


class VPScheduler(Node):
    type = "VPScheduler"
    display_name = "VP Schedule"
    category = "sampling"
    description = (
        "The noise levels of the continuous variance-preserving SDE (Song et al. 2021) at "
        "times evenly spaced from 1 down to eps_s."
    )

    steps = _steps()
    beta_d = Float(19.9, min=0.0001, max=5000.0, step=0.01, tooltip="how fast noise grows with time")
    beta_min = Float(0.1, min=0.0, max=5000.0, step=0.01, tooltip="the noise rate at time 0")
    eps_s = Float(0.001, min=0.0001, max=1.0, step=0.0001, tooltip="the last step's time (0 would be no noise)")
    outputs = (Output("sigmas", SIGMAS),)

    def run(self, ctx: RunContext, steps: int, beta_d: float, beta_min: float, eps_s: float) -> Sigmas:
        return variance_preserving(steps, beta_d, beta_min, eps_s)


class SplitSigmas(Node):
    type = "SplitSigmas"
    display_name = "Split Schedule"
    category = "sampling"
    description = (
        "Splits a schedule at a step: high_sigmas runs the first `step` steps and hands on "
        "the still-noisy latent; low_sigmas continues from there (with No Noise), e.g. a "
        "base model then a refiner."
    )

    sigmas = Socket(SIGMAS)
    step = Int(0, min=0, max=10000, tooltip="how many steps the first part runs")
    outputs = (Output("high_sigmas", SIGMAS), Output("low_sigmas", SIGMAS))

    def run(self, ctx: RunContext, sigmas: Sigmas, step: int) -> dict[str, Sigmas]:
        high, low = split(sigmas, step)
        return {"high_sigmas": high, "low_sigmas": low}


class BetaSamplingScheduler(Node):
    type = "BetaSamplingScheduler"
    display_name = "Beta Schedule"
    category = "sampling"
    description = (
        "The model's own noise levels at the training steps where a Beta(alpha, beta) "
        "distribution puts its quantiles (Lee et al. 2024): alpha = beta = 0.6 spends more "
        "steps at both ends, the Sampler's beta schedule. Steps that round to the same "
        "training step are run once, so many steps can give fewer."
    )

    model = Socket(MODEL, tooltip="whose noise levels the schedule picks from")
    steps = _steps()
    alpha = Float(BETA_ALPHA, min=0.01, max=50.0, step=0.01, tooltip="below 1 more steps at low noise (the end)")
    beta = Float(BETA_BETA, min=0.01, max=50.0, step=0.01, tooltip="below 1 more steps at high noise (the start)")
    outputs = (Output("sigmas", SIGMAS),)

    def run(self, ctx: RunContext, model: DiffusionModel, steps: int, alpha: float, beta: float) -> Sigmas:
        return beta_levels(steps, _levels(model), alpha, beta)


def _levels(model: DiffusionModel) -> tuple[float, ...]:
    """The model's noise level at each training step (EDM: ComfyUI's 1000 log-spaced levels)."""
    config = model.scheduler_config
    if model.sampling == "edm":
        return edm_levels(config["sigma_min"], config["sigma_max"])
    from nodes.diffusion.impl.samplers import make_scheduler

    alphas = make_scheduler("euler", "normal", config).alphas_cumprod
    return model_levels([max(float(a), 2.0 ** -24) for a in alphas])  # zero-SNR: as diffusers' Euler


class LaplaceScheduler(Node):
    type = "LaplaceScheduler"
    display_name = "Laplace Schedule"
    category = "sampling"
    description = (
        "Log sigma spread like a Laplace distribution around mu (Hang et al. 2024): the "
        "steps gather around sigma = e^mu, closer the smaller beta is, clamped to sigma_min "
        "- sigma_max. As in ComfyUI the list ends at sigma_min, not 0 (steps levels, one "
        "step fewer), so it runs with the euler sampler."
    )

    steps = Int(20, min=2, max=1000, tooltip="number of sigmas in the list; it ends at sigma_min, so one step fewer runs")
    sigma_max, sigma_min = _range()
    mu = Float(0.0, min=-10.0, max=10.0, step=0.1, tooltip="log sigma where the steps gather (0: sigma 1)")
    beta = Float(0.5, min=0.0, max=10.0, step=0.1, tooltip="how widely they spread")
    outputs = (Output("sigmas", SIGMAS),)
    check_values = classmethod(_check_range)

    def run(self, ctx: RunContext, steps: int, sigma_max: float, sigma_min: float, mu: float, beta: float) -> Sigmas:
        return laplace(steps, sigma_max, sigma_min, mu, beta)


class ManualSigmas(Node):
    type = "ManualSigmas"
    display_name = "Manual Schedule"
    category = "sampling"
    description = (
        "A schedule typed in: the numbers in the text, noisiest first (\"14.6, 4, 1, 0.3, 0\"); "
        "end with 0 for a clean image."
    )

    sigmas = String("1, 0.5", tooltip="the sigmas, in order, separated by commas or spaces")
    outputs = (Output("sigmas", SIGMAS),)

    def run(self, ctx: RunContext, sigmas: str) -> Sigmas:
        levels = parse(sigmas)
        if len(levels.values) < 2:
            raise NodeError(f"the text has {len(levels.values)} number(s); a schedule needs at least two", field="sigmas")
        if any(v < 0 for v in levels.values):
            raise NodeError("a sigma cannot be negative", field="sigmas")
        return levels


class SetFirstSigma(Node):
    type = "SetFirstSigma"
    display_name = "Set First Sigma"
    category = "sampling"
    description = (
        "Replaces the first (noisiest) sigma of a schedule, e.g. to start an image-to-image "
        "run from more or less noise than the schedule's own first step."
    )

    sigmas = Socket(SIGMAS)
    sigma = Float(136.0, min=0.0, max=20000.0, step=0.001, tooltip="the new first sigma")
    outputs = (Output("sigmas", SIGMAS),)

    def run(self, ctx: RunContext, sigmas: Sigmas, sigma: float) -> Sigmas:
        if sigmas.start and sigma > sigmas.values[sigmas.start - 1]:
            raise NodeError(f"this part of the schedule starts at step {sigmas.start}, after sigma "
                            f"{sigmas.values[sigmas.start - 1]:g}; a first sigma of {sigma:g} would make the "
                            "schedule rise there, which the Sampler cannot run", field="sigma")
        return set_first(sigmas, sigma)


class SplitSigmasDenoise(Node):
    type = "SplitSigmasDenoise"
    display_name = "Split Schedule by Denoise"
    category = "sampling"
    description = (
        "Splits a schedule so that low_sigmas runs its last steps x denoise steps (rounded) "
        "and high_sigmas the ones before."
    )

    sigmas = Socket(SIGMAS)
    denoise = Float(1.0, min=0.0, max=1.0, step=0.01, tooltip="the share of the steps the second part runs")
    outputs = (Output("high_sigmas", SIGMAS), Output("low_sigmas", SIGMAS))

    def run(self, ctx: RunContext, sigmas: Sigmas, denoise: float) -> dict[str, Sigmas]:
        high, low = split_denoise(sigmas, denoise)
        return {"high_sigmas": high, "low_sigmas": low}


class ExtendIntermediateSigmas(Node):
    type = "ExtendIntermediateSigmas"
    display_name = "Extend Schedule"
    category = "sampling"
    description = (
        "Divides each step whose sigma lies between end_at_sigma and start_at_sigma into "
        "`steps` smaller steps, the new sigmas spaced linearly, or closer to the lower "
        "(cosine) or the upper (sine) sigma of the step."
    )

    sigmas = Socket(SIGMAS)
    steps = Int(2, min=1, max=100, tooltip="how many steps each chosen step becomes")
    start_at_sigma = Float(-1.0, min=-1.0, max=20000.0, step=0.01, tooltip="the highest sigma to extend; -1: no limit")
    end_at_sigma = Float(12.0, min=0.0, max=20000.0, step=0.01, tooltip="the lowest sigma to extend")
    spacing = Choice(("linear", "cosine", "sine"), default="linear", tooltip="where the new sigmas go within a step")
    outputs = (Output("sigmas", SIGMAS),)

    def run(self, ctx: RunContext, sigmas: Sigmas, steps: int, start_at_sigma: float, end_at_sigma: float,
            spacing: str) -> Sigmas:
        return extend(sigmas, steps, start_at_sigma, end_at_sigma, spacing)
