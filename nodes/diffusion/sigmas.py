"""Explicit noise schedules (SIGMAS) for the Sampler: Align Your Steps, Karras and
exponential schedules with their own range, and splitting a schedule in two.

The Sampler's own `schedule` choice covers the common cases with the model's own
noise range (and stays bit-equal to diffusers' pipelines); these nodes are for the
schedules it cannot name: the published Align Your Steps levels, a Karras or
exponential ramp between chosen sigmas, or the two halves of one schedule for two
samplers. Connect the output to the Sampler's `sigmas` input.
"""

from __future__ import annotations

from nodeflow import Choice, Float, Int, Node, NodeError, Output, RunContext, Socket

from nodes.diffusion.impl.sigmas import (
    AYS_SIGMAS, SD_SIGMA_MAX, SD_SIGMA_MIN, align_your_steps, exponential, karras, polyexponential, split, variance_preserving,
)
from nodes.diffusion.types import SIGMAS, Sigmas


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
