"""Explicit noise schedules: lists of sigmas (the SIGMAS value) and how a Sampler runs one.

A schedule here is what ComfyUI's custom-sampling nodes pass around: the k-diffusion
noise levels sigma = sqrt((1 - alpha-bar) / alpha-bar) of each step, from the noisiest
down to (usually) 0, one more value than there are steps. The lists are computed in
plain Python (no torch, so the editor can plot them without loading anything):

- Karras et al. 2022: sigma_i = (max^(1/rho) + i/(n-1) (min^(1/rho) - max^(1/rho)))^rho;
- exponential: evenly spaced in log sigma from max to min;
- Align Your Steps (Sabour et al. 2024): the 10-step schedules the paper published for
  SD 1.5 and SDXL, log-linearly interpolated for other step counts;
- Laplace (Hang et al. 2024, "Improved Noise Schedule for Diffusion Training"): log sigma spread like a Laplace distribution around mu;
- and three that read the model's own noise levels (``MODEL_SCHEDULES``, also the
  Sampler's schedules of those names): beta (Lee et al. 2024, "Beta Sampling is All You
  Need"): the training steps at the quantiles of a Beta(alpha, beta) distribution, so
  steps cluster at both ends; kl_optimal (the AYS paper's closed form): evenly spaced in
  arctan sigma; linear_quadratic (Mochi's): 1 - sigma/sigma_max rises linearly to a
  threshold over the first half of the steps, then quadratically to 1.

Each is followed by 0 (Laplace excepted: ComfyUI's ends at sigma_min, and so does ours). A Sampler runs a list with a diffusers scheduler that takes one
(declared per sampler in ``SamplerSpec.sigma_list``): EulerDiscreteScheduler takes the
sigmas themselves (``set_timesteps(sigmas=...)``); the DPM-Solver++, Heun and DDPM
schedulers take training timesteps (``set_timesteps(timesteps=...)``), so each sigma
becomes the nearest training step, whose own noise level is then used.
"""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

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


# ------------------------------------------------ schedules over the model's own levels
# The Sampler's schedules that are computed here as a list (diffusers has no setting that
# gives the same levels) and run as one; only samplers with ``SamplerSpec.sigma_list`` can.
MODEL_SCHEDULES = ("beta", "kl_optimal", "linear_quadratic")
# ComfyUI's BetaSamplingScheduler defaults (the paper's alpha = beta = 0.6).
BETA_ALPHA = BETA_BETA = 0.6


def model_levels(alphas_cumprod: Sequence[float]) -> tuple[float, ...]:
    """The sigma of each training step, sqrt((1 - alpha-bar) / alpha-bar), step 0 first."""
    return tuple(math.sqrt((1.0 - a) / a) for a in alphas_cumprod)


def edm_levels(sigma_min: float, sigma_max: float, count: int = 1000) -> tuple[float, ...]:
    """A continuous (EDM) model has no training steps; ComfyUI stands in ``count`` levels
    evenly spaced in log sigma, smallest first, and so do we."""
    low, high = math.log(sigma_min), math.log(sigma_max)
    return tuple(math.exp(low + i * (high - low) / (count - 1)) for i in range(count))


def beta(steps: int, levels: Sequence[float], alpha: float = BETA_ALPHA, beta_: float = BETA_BETA) -> Sigmas:
    """The model's levels at the training steps nearest the Beta(alpha, beta) quantiles
    1, 1 - 1/steps, ..., 1/steps of its step range; a step that rounds to the one before
    it is dropped (so a large ``steps`` can give fewer steps, as in ComfyUI)."""
    from scipy.stats import beta as distribution

    last = len(levels) - 1
    picked: list[int] = []
    for i in range(steps):
        # i x (1 / steps), not i / steps: the quantile as numpy's linspace (and so ComfyUI)
        # computes it, since Beta(1, 1) and others put some exactly on a half step, where
        # the last bit decides the rounding (half to even, as numpy's rint).
        step = int(round(float(distribution.ppf(1.0 - i * (1.0 / steps), alpha, beta_)) * last))
        if not picked or step != picked[-1]:
            picked.append(step)
    return Sigmas(tuple(float(levels[t]) for t in picked) + (0.0,))


def kl_optimal(steps: int, sigma_max: float, sigma_min: float) -> Sigmas:
    """Evenly spaced in arctan sigma from sigma_max to sigma_min (one step: sigma_max)."""
    top, bottom = math.atan(sigma_max), math.atan(sigma_min)
    return Sigmas(tuple(math.tan(top + r * (bottom - top)) for r in _ramp(steps)) + (0.0,))


def linear_quadratic(steps: int, sigma_max: float, threshold: float = 0.025, linear_steps: int | None = None) -> Sigmas:
    """Mochi's schedule: with s = sigma / sigma_max, 1 - s rises linearly from 0 to
    ``threshold`` over ``linear_steps`` (half the steps), then along the parabola that
    continues that line and reaches 1 (sigma 0) at the end."""
    if steps == 1:
        return Sigmas((sigma_max, 0.0))
    linear = steps // 2 if linear_steps is None else linear_steps
    rise = [i * threshold / linear for i in range(linear)]
    gap = linear - threshold * steps  # what the parabola must add over the quadratic steps
    quadratic = steps - linear
    a = gap / (linear * quadratic ** 2)
    b = threshold / linear - 2 * gap / quadratic ** 2
    c = a * linear ** 2
    rise += [a * i * i + b * i + c for i in range(linear, steps)]
    return Sigmas(tuple((1.0 - x) * sigma_max for x in rise) + (0.0,))


def for_model(schedule: str, steps: int, denoise: float, levels: Sequence[float]) -> Sigmas:
    """The Sampler's ``schedule`` (one of MODEL_SCHEDULES) for ``steps`` over the model's
    ``levels`` (smallest first); below denoise 1 the window is its last
    int(steps x denoise) steps, as the Sampler's other schedules run."""
    if schedule == "beta":
        whole = beta(steps, levels)
    elif schedule == "kl_optimal":
        whole = kl_optimal(steps, levels[-1], levels[0])
    elif schedule == "linear_quadratic":
        whole = linear_quadratic(steps, levels[-1])
    elif schedule == "karras":  # Karras et al.'s rho 7 over the model's whole range, as ComfyUI's
        whole = karras(steps, levels[-1], levels[0], 7.0)
    elif schedule == "exponential":
        whole = exponential(steps, levels[-1], levels[0])
    else:
        raise ValueError(f"{schedule!r} is not a schedule over the model's levels")
    if denoise >= 1.0:
        return whole
    return Sigmas(whole.values, start=max(0, whole.steps - min(int(steps * denoise), steps)))


def laplace(steps: int, sigma_max: float, sigma_min: float, mu: float, beta_: float) -> Sigmas:
    """log sigma = mu - beta sign(1/2 - x) log(1 - 2|1/2 - x| + 1e-5) at x evenly spaced
    over [0, 1], clamped to [sigma_min, sigma_max]: steps gather around e^mu. ComfyUI's
    list has ``steps`` levels and no final 0 (it ends at sigma_min, a step fewer)."""
    out = []
    for x in _ramp(steps):
        side = (0.5 > x) - (0.5 < x)
        out.append(min(max(math.exp(mu - beta_ * side * math.log(1.0 - 2.0 * abs(0.5 - x) + 1e-5)), sigma_min), sigma_max))
    return Sigmas(tuple(out))


# ------------------------------------------------------------ editing a list
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


def parse(text: str) -> Sigmas:
    """The numbers in ``text`` (commas, spaces or anything else between them), in order."""
    return Sigmas(tuple(float(n) for n in _NUMBER.findall(text)))


# The edits act on the window only (what ComfyUI's node would get as its list) and keep
# the levels around it: a window that starts part way starts from the input latent,
# noised to its first level, and one that stops early hands on a noisy latent.
def set_first(sigmas: Sigmas, sigma: float) -> Sigmas:
    """The window's first (noisiest) level replaced by ``sigma``."""
    i = sigmas.start
    return Sigmas(sigmas.values[:i] + (sigma,) + sigmas.values[i + 1:], sigmas.start, sigmas.end)


def split_denoise(sigmas: Sigmas, denoise: float) -> tuple[Sigmas, Sigmas]:
    """Split so that the second part runs the last round(steps x denoise) of the window's steps."""
    run = sigmas.stop - sigmas.start
    return split(sigmas, run - round(run * denoise))


def extend(sigmas: Sigmas, steps: int, start_at: float, end_at: float, spacing: str) -> Sigmas:
    """Each step of the window whose first level lies in [end_at, start_at] (start_at < 0:
    no upper bound) divided into ``steps`` steps, the new levels placed between its two
    along ``spacing`` (linear; cosine: more near the lower; sine: more near the upper)."""
    top = math.inf if start_at < 0 else start_at
    shape = {"linear": lambda x: x, "cosine": lambda x: math.sin(x * math.pi / 2),
             "sine": lambda x: 1 - math.cos(x * math.pi / 2)}[spacing]
    cuts = [shape(i / steps) for i in range(1, steps)]
    out: list[float] = []
    added = 0
    for i, (here, following) in enumerate(zip(sigmas.values, sigmas.values[1:])):
        out.append(here)
        if sigmas.start <= i < sigmas.stop and end_at <= here <= top:
            out.extend(here + c * (following - here) for c in cuts)
            added += len(cuts)
    out.append(sigmas.values[-1])
    return Sigmas(tuple(out), sigmas.start, None if sigmas.end is None else sigmas.stop + added)


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
    if kind == "assigned":
        return {"assigned": values}
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


def assign(scheduler: Any, values: Sequence[float], device: Any = None) -> None:
    """Make ``scheduler`` (a k-diffusion-style diffusers class whose ``step`` reads only its
    ``sigmas`` and ``timesteps``: Euler ancestral, LMS) walk ``values``, after its own
    ``set_timesteps`` for as many steps: each level's timestep interpolated in log sigma
    between the training steps, as diffusers maps its own sigmas to timesteps."""
    import numpy as np
    import torch

    alphas = scheduler.alphas_cumprod.double().clamp(min=2.0 ** -24).numpy()
    log_sigmas = 0.5 * np.log((1.0 - alphas) / alphas)
    levels = np.asarray(values[:-1], dtype=np.float64)
    timesteps = np.interp(np.log(np.maximum(levels, 1e-10)), log_sigmas, np.arange(len(log_sigmas)))
    scheduler.sigmas = torch.tensor(list(values), dtype=torch.float32, device=device)
    scheduler.timesteps = torch.tensor(timesteps, dtype=torch.float32, device=device)
    scheduler.num_inference_steps = len(values) - 1
    scheduler._step_index, scheduler._begin_index = None, None
    if hasattr(scheduler, "derivatives"):  # LMS: the multistep history of the old schedule
        scheduler.derivatives = []


def _nearest_step(log_sigma: float, log_sigmas: list[float]) -> int:
    """The training step whose noise level is nearest ``log_sigma`` (in log sigma)."""
    return min(range(len(log_sigmas)), key=lambda t: abs(log_sigmas[t] - log_sigma))
