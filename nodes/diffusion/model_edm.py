"""Marking a model as trained in continuous EDM form (ComfyUI's ModelSamplingContinuousEDM).

A checkpoint's file does not say that its UNet was trained with EDM's preconditioning
(CosXL and other SDXL-EDM fine-tunes); this node says it, with the sigma range the
model was trained on, and the Sampler then runs diffusers' EDM schedulers (impl/edm.py).
"""

from __future__ import annotations

from dataclasses import replace

from nodeflow import Choice, Float, Node, Output, RunContext, Socket

from nodes.diffusion.impl.edm import EDM_KINDS, PLAYGROUND_V2_5, edm_config
from nodes.diffusion.types import MODEL, DiffusionModel, LatentFormat


class ModelSamplingEDM(Node):
    type = "ModelSamplingEDM"
    display_name = "Model Prediction (EDM)"
    category = "loaders"
    description = (
        "Says the UNet was trained in continuous EDM form (Karras et al. 2022): timesteps are "
        "log(sigma) / 4 and its output is mixed with the input by EDM's preconditioning. "
        "v_prediction is the SDXL-EDM (CosXL) kind, edm EDM's own, edm_playground_v2.5 EDM's with "
        "Playground v2.5's own latent space (the Sampler converts the SDXL latents in and out). The Sampler then runs "
        "euler or DPM-Solver++ as diffusers' EDM schedulers, between sigma_max and sigma_min."
    )

    model = Socket(MODEL)
    prediction = Choice(tuple(EDM_KINDS), default="v_prediction",
                        tooltip="v_prediction: v with sigma_data 1 (CosXL); edm: EDM's F-prediction, sigma_data 0.5; "
                        "edm_playground_v2.5: that, in Playground v2.5's latent space")
    sigma_max = Float(120.0, min=0.001, max=1000.0, step=0.001, tooltip="the noisiest level the model was trained on")
    sigma_min = Float(0.002, min=0.0001, max=1000.0, step=0.001, tooltip="the least noisy level")
    outputs = (Output("model", MODEL),)

    @classmethod
    def check_values(cls, values: dict) -> dict[str, str]:
        if values.get("sigma_min", 0.002) >= values.get("sigma_max", 120.0):
            return {"sigma_min": f"sigma_min {values['sigma_min']} must be below sigma_max {values['sigma_max']}"}
        return {}

    def run(self, ctx: RunContext, model: DiffusionModel, prediction: str, sigma_max: float,
            sigma_min: float) -> DiffusionModel:
        latent_format = LatentFormat(**PLAYGROUND_V2_5) if prediction == "edm_playground_v2.5" else None
        return replace(model, scheduler_config=edm_config(prediction, sigma_max, sigma_min), sampling="edm",
                       latent_format=latent_format)
