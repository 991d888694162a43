"""Explicit noise schedules: lists of sigmas (the SIGMAS value) and how a Sampler runs one.

A schedule here is what ComfyUI's custom-sampling nodes pass around: the k-diffusion
noise levels sigma = sqrt((1 - alpha-bar) / alpha-bar) of each step, from the noisiest
down to (usually) 0, one more value than there are steps. The lists are computed in
plain Python (no torch, so the editor can plot them without loading anything):

- Karras et al. 2022: sigma_i = (max^(1/rho) + i/(n-1) (min^(1/rho) - max^(1/rho)))^rho;
- exponential: evenly spaced in log sigma from max to min;
- Align Your Steps (Sabour et al. 2024): the 10-step schedules the paper published for
  SD 1.5 and SDXL, log-linearly interpolated for other step counts.

Each is followed by 0. A Sampler runs a list with a diffusers scheduler that takes one
(declared per sampler in ``SamplerSpec.sigma_list``): EulerDiscreteScheduler takes the
sigmas themselves (``set_timesteps(sigmas=...)``); the DPM-Solver++, Heun and DDPM
schedulers take training timesteps (``set_timesteps(timesteps=...)``), so each sigma
becomes the nearest training step, whose own noise level is then used.
"""

from __future__ import annotations

import math
from typing import Sequence

from nodes.diffusion.types import Sigmas

# Align Your Steps: the 10-step sigma schedules its authors published for SD 1.5 and
# SDXL (11 levels, the last SD's smallest sigma; the project page's "how to").
AYS_SIGMAS: dict[str, tuple[float, ...]] = {
    "SD1": (14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520, 1.8841921177, 1.3943805092,
            0.9642583904, 0.6523686016, 0.3977456272, 0.1515232662, 0.0291671582),
    "SDXL": (14.6146412293, 6.3184485287, 3.7681790315, 2.1811480769, 1.3405244945, 0.8620721141,
             0.5550693289, 0.3798540708, 0.2332364134, 0.1114188177, 0.0291671582),
}
# SD 1.x / 2.x / XL's own range (scaled-linear betas 0.00085 - 0.012, 1000 steps): the
# defaults of ComfyUI's KarrasScheduler and ExponentialScheduler.
SD_SIGMA_MAX, SD_SIGMA_MIN = 14.614642, 0.0291675


class SigmaError(ValueError):
    """A list of sigmas a Sampler cannot run; ``field`` names the Sampler's input at fault."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def karras(steps: int, sigma_max: float, sigma_min: float, rho: float) -> Sigmas:
    first, last = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    ramp = _ramp(steps)
    return Sigmas(tuple((first + r * (last - first)) ** rho for r in ramp) + (0.0,))


def exponential(steps: int, sigma_max: float, sigma_min: float) -> Sigmas:
    top, bottom = math.log(sigma_max), math.log(sigma_min)
    return Sigmas(tuple(math.exp(top + r * (bottom - top)) for r in _ramp(steps)) + (0.0,))


def polyexponential(steps: int, sigma_max: float, sigma_min: float, rho: float) -> Sigmas:
    """log sigma falls from log sigma_max to log sigma_min along a ramp raised to ``rho``
    (1: the exponential schedule; above 1 more steps at high noise, below 1 at low)."""
    top, bottom = math.log(sigma_max), math.log(sigma_min)
    return Sigmas(tuple(math.exp(bottom + (1.0 - r) ** rho * (top - bottom)) for r in _ramp(steps)) + (0.0,))


def variance_preserving(steps: int, beta_d: float, beta_min: float, eps_s: float) -> Sigmas:
    """The continuous VP SDE's noise levels (Song et al. 2021) at times evenly spaced from
    1 down to ``eps_s``: sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1)."""
    times = [1.0 + r * (eps_s - 1.0) for r in _ramp(steps)]
    return Sigmas(tuple(math.sqrt(math.expm1(beta_d * t * t / 2 + beta_min * t)) for t in times) + (0.0,))


def align_your_steps(model_type: str, steps: int, denoise: float) -> Sigmas:
    """The AYS schedule for ``steps`` steps; below denoise 1 only its last
    round(steps x denoise) steps run (the window), as ComfyUI's node does."""
    levels = AYS_SIGMAS[model_type]
    if steps + 1 != len(levels):
        levels = loglinear(levels, steps + 1)
    values = tuple(levels[:-1]) + (0.0,)
    start = 0 if denoise >= 1.0 else steps - round(steps * denoise)
    return Sigmas(values, start=start)


def loglinear(levels: Sequence[float], count: int) -> tuple[float, ...]:
    """``count`` values spread like decreasing ``levels``: interpolated linearly in
    log sigma over evenly spaced positions from the first to the last."""
    logs = [math.log(v) for v in levels]
    out = []
    for i in range(count):
        position = i * (len(logs) - 1) / (count - 1) if count > 1 else 0.0
        low = min(int(math.floor(position)), len(logs) - 2)
        share = position - low
        out.append(math.exp(logs[low] + share * (logs[low + 1] - logs[low])))
    return tuple(out)


def split(sigmas: Sigmas, step: int) -> tuple[Sigmas, Sigmas]:
    """The first ``step`` steps of the window (handing on a still-noisy latent) and the rest."""
    middle = min(sigmas.start + step, sigmas.stop)
    return Sigmas(sigmas.values, sigmas.start, middle), Sigmas(sigmas.values, middle, sigmas.end)


def _ramp(steps: int) -> list[float]:
    return [i / (steps - 1) if steps > 1 else 0.0 for i in range(steps)]


def timesteps_for(kind: str, sigmas: Sigmas, alphas_cumprod: Sequence[float], sampler: str) -> dict[str, list]:
    """The ``set_timesteps`` arguments that make a scheduler of ``kind`` ("sigmas" or
    "timesteps", ``SamplerSpec.sigma_list``) walk ``sigmas``' levels."""
    values = list(sigmas.values)
    if len(values) < 2:
        raise SigmaError("sigmas", "the list of sigmas has no step to run (it needs at least two values)")
    if any(b > a for a, b in zip(values, values[1:])) or values[-1] < 0:
        raise SigmaError("sigmas", "the sigmas must decrease from the noisiest step to the last (>= 0)")
    if kind == "sigmas":
        return {"sigmas": values}
    if kind != "timesteps":
        raise SigmaError("sampler", f"the {sampler} sampler cannot take a list of sigmas")
    if values[-1] != 0:
        raise SigmaError("sigmas", f"the {sampler} sampler ends its schedule at 0, but this list ends at {values[-1]:g}; "
                         "use euler, or split the list (SplitSigmas) instead of cutting it")
    log_sigmas = [0.5 * math.log((1.0 - a) / a) for a in alphas_cumprod]
    steps = [_nearest_step(math.log(s), log_sigmas) for s in values[:-1]]
    if len(set(steps)) != len(steps):
        raise SigmaError("sigmas", f"two of the sigmas fall on the same training step, which the {sampler} sampler "
                         "cannot run twice; use fewer steps or euler")
    return {"timesteps": steps}


def _nearest_step(log_sigma: float, log_sigmas: list[float]) -> int:
    """The training step whose noise level is nearest ``log_sigma`` (in log sigma)."""
    return min(range(len(log_sigmas)), key=lambda t: abs(log_sigmas[t] - log_sigma))
