"""Sampler and schedule names -> configured diffusers schedulers.

A *sampler* names a diffusers scheduler class (plus a few settings, e.g. DPM-Solver's
algorithm); a *schedule* names how the noise levels of the run are spaced. Both are
applied to the checkpoint's own scheduler config with ``from_config``, exactly as a
diffusers user would, so a nodeflow run and a pipeline run use the same numbers.

Which schedules a sampler supports is declared here (``SamplerSpec.sigma_schedules``), so
that validating a workflow needs no diffusers import; a test checks the declaration
against the scheduler classes (diffusers' ``from_config`` would otherwise drop an unknown
setting silently and run something else), and :func:`scheduler_overrides` re-checks it
before every run. Gaps in diffusers 0.42: ddpm, ddim, euler_ancestral and lcm take no
sigma schedule (karras / exponential). diffusers' ``use_beta_sigmas`` is not used for the
"beta" schedule: it spreads the Beta quantiles linearly between sigma_min and sigma_max,
while the beta schedule other tools use (ComfyUI's, the paper's) picks the model's own
levels at the quantiles of its training steps; so beta, kl_optimal and linear_quadratic
are computed as a list of sigmas (impl/sigmas.py, ``MODEL_SCHEDULES``) and run as one,
with the samplers that take a list.

Scheduler instances are stateful (step index, solver history): make a new one for
every run with :func:`make_scheduler`, never cache or share one.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Mapping

# The sigma options a schedule switches on or off; "normal" turns them all off so
# that a checkpoint config which enables one cannot change what "normal" means.
_SIGMA_OPTIONS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")


@dataclass(frozen=True)
class SamplerSpec:
    scheduler_class: str  # a class name in the diffusers package
    settings: Mapping[str, Any] = field(default_factory=dict)
    takes_eta: bool = False  # eta is a parameter of the class's step() (DDIM)
    sigma_schedules: bool = True  # the class takes karras / exponential sigmas
    description: str = ""
    # Its running latent is variance-preserving (alpha x0 + sigma_t eps) rather than
    # k-diffusion's x0 + sigma eps; a latent handed between samplers mid-schedule is
    # converted to and from the latter (nodes.diffusion.impl.sample).
    variance_preserving: bool = False
    # How the class takes an explicit list of sigmas (the Sampler's SIGMAS input,
    # impl/sigmas.py): "sigmas" as they are, "timesteps" as the nearest training steps,
    # "assigned" set on the scheduler after its own set_timesteps (a k-diffusion-style class
    # whose steps read only its sigmas and timesteps, impl/sigmas.assign), "" not at all.
    sigma_list: str = ""


SAMPLERS: dict[str, SamplerSpec] = {
    "ddpm": SamplerSpec("DDPMScheduler", sigma_schedules=False, description="ancestral DDPM (stochastic)",
                        variance_preserving=True, sigma_list="timesteps"),
    "ddim": SamplerSpec("DDIMScheduler", takes_eta=True, sigma_schedules=False, description="DDIM; eta 0 is deterministic, 1 is DDPM-like",
                        variance_preserving=True),
    "euler": SamplerSpec("EulerDiscreteScheduler", description="Euler (deterministic)", sigma_list="sigmas"),
    "euler_ancestral": SamplerSpec("EulerAncestralDiscreteScheduler", sigma_schedules=False, description="Euler ancestral (stochastic)",
                                   sigma_list="assigned"),
    "heun": SamplerSpec("HeunDiscreteScheduler", description="Heun, 2 model calls per step", sigma_list="timesteps"),
    "dpm_2": SamplerSpec("KDPM2DiscreteScheduler", description="DPM-Solver-2, 2 model calls per step"),
    "dpm_2_ancestral": SamplerSpec("KDPM2AncestralDiscreteScheduler", description="DPM-Solver-2 ancestral"),
    "lms": SamplerSpec("LMSDiscreteScheduler", description="linear multistep", sigma_list="assigned"),
    "dpmpp_2m": SamplerSpec(
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2},
        description="DPM-Solver++(2M)", variance_preserving=True, sigma_list="timesteps",
    ),
    "dpmpp_2m_sde": SamplerSpec(
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 2},
        description="DPM-Solver++(2M) SDE (stochastic)", variance_preserving=True, sigma_list="timesteps",
    ),
    # ComfyUI's dpmpp_2m_sde_heun: the same solver with the Heun-type correction of the
    # second-order term ((1 - e^-2h) / -2h + 1 rather than 1/2 of 1 - e^-2h).
    "dpmpp_2m_sde_heun": SamplerSpec(
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "solver_type": "heun"},
        description="DPM-Solver++(2M) SDE, Heun correction (stochastic)", variance_preserving=True, sigma_list="timesteps",
    ),
    "dpmpp_3m_sde": SamplerSpec(
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 3},
        description="DPM-Solver++(3M) SDE (stochastic)", variance_preserving=True, sigma_list="timesteps",
    ),
    "dpmpp_sde": SamplerSpec("DPMSolverSDEScheduler", description="DPM-Solver++ SDE, Brownian-tree noise"),
    "unipc": SamplerSpec("UniPCMultistepScheduler", description="UniPC multistep", variance_preserving=True),
    # ComfyUI's uni_pc and uni_pc_bh2: UniPC on the data prediction, third order (lower in
    # the first and last steps, as diffusers' warm-up and lower_order_final lower it), with
    # B(h) = h (bh1) or e^h - 1 (bh2). diffusers' bh1 step to a last sigma of 0 gives NaN
    # (B(h) is infinite there), so bh1 ends at the model's smallest sigma.
    "unipc_bh1": SamplerSpec(
        "UniPCMultistepScheduler",
        {"solver_type": "bh1", "solver_order": 3, "predict_x0": True, "lower_order_final": True,
         "disable_corrector": [], "final_sigmas_type": "sigma_min"},
        description="UniPC multistep, B(h) = h, third order (ComfyUI's uni_pc)", variance_preserving=True,
    ),
    "unipc_bh2": SamplerSpec(
        "UniPCMultistepScheduler",
        {"solver_type": "bh2", "solver_order": 3, "predict_x0": True, "lower_order_final": True,
         "disable_corrector": [], "final_sigmas_type": "zero"},
        description="UniPC multistep, B(h) = e^h - 1, third order (ComfyUI's uni_pc_bh2)", variance_preserving=True,
    ),
    # ComfyUI's deis: DEIS (Zhang & Chen 2023) third order. diffusers' is the multistep
    # exponential integrator with its polynomial in log rho (rho = sigma), ComfyUI's the
    # "tab" variant integrating it in VP time numerically; same order, not the same numbers.
    "deis": SamplerSpec(
        "DEISMultistepScheduler",
        {"algorithm_type": "deis", "solver_type": "logrho", "solver_order": 3, "lower_order_final": True},
        description="DEIS multistep, third order (diffusers' log-rho form of ComfyUI's deis)", variance_preserving=True,
    ),
    "lcm": SamplerSpec("LCMScheduler", sigma_schedules=False, description="LCM, for latent-consistency-distilled models",
                       variance_preserving=True),
}

# Schedules that set sigmas rather than timestep spacing.
SIGMA_SCHEDULES = frozenset({"karras", "exponential"})
# They span the model's whole sigma range, sigma(last train step) .. sigma(0), as Karras et
# al. define it and ComfyUI computes it: diffusers' multistep solvers (dpmpp_*, unipc) do so
# under any spacing, but its euler, heun, dpm_2, lms and dpmpp_sde take the range of the
# checkpoint's spaced timesteps (SD's "leading": sigma 7.4 rather than 14.6 at 8 steps), so a
# shared karras workflow drew differently per sampler. "linspace" spacing gives every
# scheduler the whole range and leaves the multistep solvers' sigmas as they were.
SCHEDULES: dict[str, dict[str, Any]] = {
    "normal": {},  # the checkpoint's own timestep spacing (what diffusers' pipelines use)
    "karras": {"use_karras_sigmas": True, "timestep_spacing": "linspace"},
    "exponential": {"use_exponential_sigmas": True, "timestep_spacing": "linspace"},
    "simple": {"timestep_spacing": "trailing"},  # evenly spaced, ending at the last train step
    "linear": {"timestep_spacing": "linspace"},
    # Lists of sigmas over the model's own levels (impl/sigmas.py, MODEL_SCHEDULES): the
    # scheduler is built as for "normal" and handed the list (SamplerSpec.sigma_list).
    "beta": {},
    "kl_optimal": {},
    "linear_quadratic": {},
}
# Kept in step with impl/sigmas.MODEL_SCHEDULES (a test checks), named here so that
# validation imports nothing.
LIST_SCHEDULES = frozenset({"beta", "kl_optimal", "linear_quadratic"})


class UnsupportedCombination(ValueError):
    """A sampler/schedule pair that diffusers cannot express; the message is for the user."""


@lru_cache(maxsize=None)
def _scheduler_class(name: str) -> type:
    import diffusers

    return getattr(diffusers, name)


@lru_cache(maxsize=None)
def _accepted_settings(name: str) -> frozenset[str]:
    return frozenset(inspect.signature(_scheduler_class(name).__init__).parameters)


def sigma_list_samplers() -> list[str]:
    """The samplers that can run an explicit list of sigmas (no diffusers import)."""
    return [name for name, spec in SAMPLERS.items() if spec.sigma_list]


def list_refusal(sampler: str, scheduler_class: str | None = None) -> str:
    """Why ``sampler`` (its diffusers class ``scheduler_class``, by default its declared one)
    cannot run a list of sigmas: said by validation and, for the API, by the run."""
    cls = scheduler_class or SAMPLERS[sampler].scheduler_class
    return (f"the {sampler} sampler cannot run the list of sigmas connected to it (diffusers' {cls} takes "
            f"neither sigmas nor timesteps); use one of: {', '.join(sigma_list_samplers())}")


def schedules_for(sampler: str) -> list[str]:
    """The schedules ``sampler`` supports, in declaration order (no diffusers import): karras
    and exponential run as lists of sigmas where the class cannot compute them itself."""
    spec = SAMPLERS[sampler]
    return [name for name in SCHEDULES
            if (spec.sigma_schedules or spec.sigma_list == "assigned" or name not in SIGMA_SCHEDULES)
            and (spec.sigma_list or name not in LIST_SCHEDULES)]


def runs_as_list(sampler: str, schedule: str) -> bool:
    """Whether ``schedule`` reaches ``sampler`` as a list of sigmas: the list schedules, and
    karras / exponential for a class that has no setting for them."""
    spec = SAMPLERS[sampler]
    if schedule in SIGMA_SCHEDULES:  # only where the list is taken as it is (nearest training steps can collide)
        return not spec.sigma_schedules and spec.sigma_list == "assigned"
    return bool(spec.sigma_list) and schedule in LIST_SCHEDULES


def unsupported_reason(sampler: str, schedule: str) -> str | None:
    """Why ``sampler`` cannot run with ``schedule``, for the user; None when it can."""
    if sampler in SAMPLERS and schedule in LIST_SCHEDULES and schedule not in schedules_for(sampler):
        return (f"the {schedule} schedule runs as a list of sigmas, which the {sampler} sampler cannot take "
                f"(diffusers' {SAMPLERS[sampler].scheduler_class} takes neither sigmas nor timesteps); "
                f"use one of the samplers {', '.join(sigma_list_samplers())}, or another schedule")
    if sampler in SAMPLERS and schedule in SCHEDULES and schedule not in schedules_for(sampler):
        return (f"the {sampler} sampler cannot use the {schedule} schedule (diffusers' "
                f"{SAMPLERS[sampler].scheduler_class} does not support it); choose one of: "
                f"{', '.join(schedules_for(sampler))}")
    return None


def eta_unsupported_reason(sampler: str, eta: float) -> str | None:
    """Why ``eta`` cannot be used with ``sampler``; None when it can."""
    if eta and sampler in SAMPLERS and not SAMPLERS[sampler].takes_eta:
        return f"eta applies only to the ddim sampler; {sampler} has no eta setting, set eta to 0"
    return None


def settings_accepted(sampler: str, schedule: str) -> bool:
    """Whether the installed diffusers class takes every setting ``schedule`` needs (for
    a list schedule: the list, in set_timesteps)."""
    spec = SAMPLERS[sampler]
    if schedule in LIST_SCHEDULES or runs_as_list(sampler, schedule):
        if spec.sigma_list == "assigned":  # set on the scheduler after set_timesteps (impl/sigmas.assign)
            return True
        takes = inspect.signature(_scheduler_class(spec.scheduler_class).set_timesteps).parameters
        return bool(spec.sigma_list) and spec.sigma_list in takes
    return set(SCHEDULES[schedule]) <= _accepted_settings(spec.scheduler_class)


def scheduler_overrides(sampler: str, schedule: str) -> dict[str, Any]:
    """The ``from_config`` keyword arguments for ``sampler`` with ``schedule``."""
    if sampler not in SAMPLERS:
        raise UnsupportedCombination(f"unknown sampler {sampler!r}; known: {', '.join(SAMPLERS)}")
    if schedule not in SCHEDULES:
        raise UnsupportedCombination(f"unknown schedule {schedule!r}; known: {', '.join(SCHEDULES)}")
    spec = SAMPLERS[sampler]
    reason = unsupported_reason(sampler, schedule)
    if reason is None and not settings_accepted(sampler, schedule):  # a diffusers version we do not know
        reason = f"the installed diffusers' {spec.scheduler_class} does not support the {schedule} schedule"
    if reason:
        raise UnsupportedCombination(reason)
    accepted = _accepted_settings(spec.scheduler_class)
    overrides = {option: False for option in _SIGMA_OPTIONS if option in accepted}
    overrides.update(spec.settings)
    overrides.update(SCHEDULES[schedule])
    return overrides


def make_scheduler(sampler: str, schedule: str, scheduler_config: Mapping[str, Any], **extra: Any) -> Any:
    """A fresh diffusers scheduler for one run."""
    overrides = scheduler_overrides(sampler, schedule)
    overrides.update(extra)
    return _scheduler_class(SAMPLERS[sampler].scheduler_class).from_config(dict(scheduler_config), **overrides)


@lru_cache(maxsize=None)
def step_parameters(name: str) -> frozenset[str]:
    """The keyword parameters of a scheduler class's ``step`` (eta, generator, ...)."""
    return frozenset(inspect.signature(_scheduler_class(name).step).parameters)


def schedule_sigmas(sampler: str, schedule: str, steps: int, scheduler_config: Mapping[str, Any]) -> dict[str, list[float]]:
    """The noise level of each step a run would take: ``sigma`` (noise/signal ratio),
    ``alpha_bar`` (the share of signal variance, 1 / (1 + sigma^2)) and ``timestep``.
    Read off the same scheduler :func:`make_scheduler` builds for a run, so the
    editor's plot shows exactly what sampling will use."""
    as_list = runs_as_list(sampler, schedule)
    scheduler = make_scheduler(sampler, "normal" if as_list else schedule, scheduler_config)
    listed = listed_schedule(schedule, steps, 1.0, scheduler) if as_list else None
    if listed is not None:  # the list's own levels, as the run walks them
        from nodes.diffusion.impl.sigmas import assign, timesteps_for

        timing = timesteps_for(SAMPLERS[sampler].sigma_list, listed, scheduler.alphas_cumprod.tolist(), sampler)
        if "assigned" in timing:
            scheduler.set_timesteps(len(listed.values) - 1)
            assign(scheduler, timing["assigned"])
        else:
            scheduler.set_timesteps(**timing)
    else:
        scheduler.set_timesteps(steps)
    timesteps = [float(t) for t in scheduler.timesteps]
    sigmas = getattr(scheduler, "sigmas", None)
    if sigmas is not None and len(sigmas) >= len(timesteps):
        sigma = [float(s) for s in sigmas[: len(timesteps)]]
    else:  # DDPM/DDIM-style schedulers keep alphas, not sigmas
        alphas = scheduler.alphas_cumprod
        sigma = [float(((1 - alphas[int(t)]) / alphas[int(t)]) ** 0.5) for t in timesteps]
    return {"sigma": sigma, "alpha_bar": [1.0 / (1.0 + s * s) for s in sigma], "timestep": timesteps}


def listed_schedule(schedule: str, steps: int, denoise: float, scheduler: Any) -> Any:
    """The list of sigmas (a ``Sigmas``) a list schedule (or karras / exponential, for a
    sampler that runs them as lists: :func:`runs_as_list`) gives over ``scheduler``'s
    training levels, its window the last ``denoise`` share of the steps; None for the
    schedules that are no lists."""
    if schedule not in LIST_SCHEDULES and schedule not in SIGMA_SCHEDULES:
        return None
    from nodes.diffusion.impl.sigmas import for_model, model_levels

    # A zero-terminal-SNR config's last alpha-bar is 0 (sigma infinite); diffusers' Euler
    # stands in 2^-24 there, and so do we.
    alphas = [max(float(a), 2.0 ** -24) for a in scheduler.alphas_cumprod]
    return for_model(schedule, steps, denoise, model_levels(alphas))
