"""Continuous EDM sampling (ComfyUI's ModelSamplingContinuousEDM) with diffusers' EDM schedulers.

Some SD-family models are trained in the EDM formulation of Karras et al. 2022 rather
than on 1000 discrete steps: the UNet takes c_noise = log(sigma) / 4 as its timestep and
its input scaled by 1 / sqrt(sigma^2 + sigma_data^2), and its output is combined with the
input by EDM's c_skip / c_out (SDXL-EDM "CosXL" models: v-prediction, sigma_data 1;
EDM's own F-prediction: sigma_data 0.5). diffusers' EDMEulerScheduler and
EDMDPMSolverMultistepScheduler do exactly this preconditioning (their prediction types
"v_prediction" and "epsilon" are the two), so a model marked EDM samples with them:
the Sampler's euler and DPM-Solver++ samplers have EDM twins; the others have none.

Schedules: karras is EDM's own; every other choice is exponential (evenly spaced in log
sigma), which is what ComfyUI's normal and simple schedules give for a continuous model.
"""

from __future__ import annotations

from typing import Any, Mapping

from nodes.diffusion.impl.samplers import SamplerSpec

EDM_SAMPLERS: dict[str, SamplerSpec] = {
    "euler": SamplerSpec("EDMEulerScheduler", description="Euler, EDM preconditioning", sigma_list="sigmas"),
    "dpmpp_2m": SamplerSpec("EDMDPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2},
                            description="DPM-Solver++(2M), EDM preconditioning"),
    "dpmpp_2m_sde": SamplerSpec("EDMDPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2},
                                description="DPM-Solver++(2M) SDE, EDM preconditioning"),
    "dpmpp_3m_sde": SamplerSpec("EDMDPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 3},
                                description="DPM-Solver++(3M) SDE, EDM preconditioning"),
}
# ComfyUI's sampling kinds diffusers' EDM schedulers express: prediction type, sigma_data.
EDM_KINDS = {"v_prediction": ("v_prediction", 1.0), "edm": ("epsilon", 0.5), "edm_playground_v2.5": ("epsilon", 0.5)}
# Playground v2.5's latent space: its VAE config's per-channel statistics and scaling
# (playgroundai/playground-v2.5-1024px-aesthetic), on SDXL's autoencoder (scaling 0.13025).
PLAYGROUND_V2_5 = {"mean": (-1.6574, 1.886, -1.383, 2.5155), "std": (8.4927, 5.9022, 6.5498, 5.2299), "scale": 0.5,
                   "outside_scale": 0.13025}


class EDMError(ValueError):
    """A sampler or setting EDM sampling cannot use; ``field`` names the Sampler's input."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def edm_config(kind: str, sigma_max: float, sigma_min: float) -> dict[str, Any]:
    """The scheduler config of a model sampled with EDM ``kind`` between the sigmas."""
    prediction, sigma_data = EDM_KINDS[kind]
    return {"_class_name": "EDMEulerScheduler", "sigma_min": sigma_min, "sigma_max": sigma_max,
            "sigma_data": sigma_data, "prediction_type": prediction, "sigma_schedule": "karras", "rho": 7.0,
            "num_train_timesteps": 1000, "final_sigmas_type": "zero"}


def edm_spec(sampler: str) -> SamplerSpec:
    if sampler not in EDM_SAMPLERS:
        raise EDMError("sampler", f"the model samples in continuous EDM form, which diffusers' EDM schedulers run "
                       f"for the samplers {', '.join(EDM_SAMPLERS)}; {sampler} has no EDM version")
    return EDM_SAMPLERS[sampler]


def make_edm_scheduler(sampler: str, schedule: str, config: Mapping[str, Any]) -> Any:
    import diffusers

    spec = edm_spec(sampler)
    settings = {key: value for key, value in config.items() if not key.startswith("_")}
    settings.update(spec.settings, sigma_schedule="karras" if schedule == "karras" else "exponential")
    return getattr(diffusers, spec.scheduler_class).from_config(settings)
