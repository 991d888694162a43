"""The training noise schedule of a scheduler config, in closed form (NumPy, no diffusers).

Training noises a clean latent x0 to step t in one jump, because Gaussians add up:
x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps, where alpha_bar_t is the product
of (1 - beta_s) over the steps s <= t. The betas are the schedule: ``linear`` from
beta_start to beta_end, ``scaled_linear`` linear in sqrt(beta) (Stable Diffusion's),
``squaredcos_cap_v2`` the cosine schedule (Nichol and Dhariwal), or a config's own
``trained_betas``. Everything else (sigma = sqrt((1 - a) / a), SNR = a / (1 - a)) follows.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
# The classic settings of each beta schedule, for the comparison plot.
CLASSIC = {
    "linear (DDPM 1e-4..0.02)": {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02},
    "scaled-linear (SD 0.00085..0.012)": {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    "cosine": {"beta_schedule": "squaredcos_cap_v2"},
}


def betas(config: Mapping[str, Any]) -> np.ndarray:
    steps = int(config.get("num_train_timesteps", 1000))
    if config.get("trained_betas"):
        return np.asarray(config["trained_betas"], dtype=np.float64)
    kind = config.get("beta_schedule", "linear")
    start, end = float(config.get("beta_start", 0.0001)), float(config.get("beta_end", 0.02))
    if kind == "linear":
        return np.linspace(start, end, steps, dtype=np.float64)
    if kind == "scaled_linear":
        return np.linspace(start ** 0.5, end ** 0.5, steps, dtype=np.float64) ** 2
    if kind == "squaredcos_cap_v2":
        def alpha_bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        return np.array([min(1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), 0.999) for i in range(steps)])
    raise ValueError(f"unknown beta schedule {kind!r}; known: {', '.join(BETA_SCHEDULES)}")


def alpha_bar(config: Mapping[str, Any]) -> np.ndarray:
    """alpha-bar at every train timestep 0 .. T-1 (the share of signal variance left)."""
    return np.cumprod(1.0 - betas(config))


def level_to_timestep(level: float, config: Mapping[str, Any]) -> int:
    """A fraction of the training schedule (0 = clean, 1 = the last, noisiest step) -> t."""
    steps = int(config.get("num_train_timesteps", 1000))
    return int(round(min(max(level, 0.0), 1.0) * (steps - 1)))


def measure(a: np.ndarray, axis: str) -> np.ndarray:
    """alpha-bar -> the quantity plotted: ``sigma``, ``alpha_bar`` or ``log_snr`` (log10)."""
    a = np.clip(a, 1e-12, 1 - 1e-12)
    if axis == "sigma":
        return np.sqrt((1 - a) / a)
    if axis == "log_snr":
        return np.log10(a / (1 - a))
    return a
