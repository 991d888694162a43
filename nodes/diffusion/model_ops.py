"""Changing loaded models: how a UNet's output is read, and merging weights of two models.

Every node returns a new model record; the input (which the executor caches) is never
changed. Merging makes a copy of the first model's network with the merged weights, so
it costs that model's memory once more.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any, Callable

from nodeflow import Bool, Choice, Float, Node, NodeError, Output, RunContext, Socket

from nodes.diffusion.types import CLIP, MODEL, DiffusionModel, TextEncoders


class ModelSampling(Node):
    type = "ModelSampling"
    display_name = "Model Prediction"
    category = "loaders"
    description = (
        "Says what the UNet predicts (noise, v or the clean image x0) and whether its "
        "schedule is rescaled to zero terminal SNR, for checkpoints whose files do not say "
        "it (v-prediction SD 1.5 fine-tunes, zero-SNR models); lcm marks a "
        "latent-consistency-distilled model (noise prediction), which runs with the lcm sampler."
    )

    model = Socket(MODEL)
    prediction = Choice(("epsilon", "v_prediction", "sample", "lcm"), default="epsilon",
                        tooltip="epsilon: the noise; v_prediction: v; sample: the clean latent (x0); "
                        "lcm: an LCM-distilled noise predictor")
    zero_snr = Bool(False, tooltip="rescale the noise schedule to zero terminal SNR (Lin et al. 2023)")
    outputs = (Output("model", MODEL),)

    def run(self, ctx: RunContext, model: DiffusionModel, prediction: str, zero_snr: bool) -> DiffusionModel:
        kind = "epsilon" if prediction == "lcm" else prediction
        config = dict(model.scheduler_config, prediction_type=kind, rescale_betas_zero_snr=zero_snr)
        if zero_snr:
            config["timestep_spacing"] = "trailing"  # the paper's fix 2: sample from the last step
        return replace(model, scheduler_config=config, sampling="lcm" if prediction == "lcm" else "")


def _merged(first: Any, second: Any, combine: Callable[[Any, Any], Any], skip: tuple[str, ...] = (),
            by_name: Callable[[str], Callable[[Any, Any], Any]] | None = None) -> Any:
    """A copy of network ``first`` whose weights are ``combine(first's, second's)``, or
    ``by_name(weight name)(first's, second's)`` (a ratio per block, merge_blocks.py)."""
    import torch

    theirs = second.state_dict()
    merged = copy.deepcopy(first)
    with torch.no_grad():
        for name, tensor in merged.state_dict().items():
            other = theirs.get(name)
            if other is None or other.shape != tensor.shape or name.endswith(skip) or not tensor.is_floating_point():
                continue
            tensor.copy_((by_name(name) if by_name else combine)(tensor, other.to(tensor)))
    return merged


def _check_same(first: Any, second: Any, what: str, field: str) -> None:
    if first.family.name != second.family.name:
        raise NodeError(f"cannot merge a {first.family.name} {what} with a {second.family.name} one", field=field)


class ModelMerge(Node):
    type = "ModelMerge"
    display_name = "Merge Models"
    category = "loaders"
    description = (
        "Combines the UNet weights of two models of one family: blend (ratio x model1 + "
        "(1 - ratio) x model2), add (model1 + model2) or subtract (model1 - multiplier x "
        "model2, e.g. to extract a difference to add elsewhere)."
    )

    model1 = Socket(MODEL)
    model2 = Socket(MODEL)
    operation = Choice(("blend", "add", "subtract"), default="blend")
    ratio = Float(1.0, min=-10.0, max=10.0, step=0.01, tooltip="blend: model1's share; subtract: the multiplier")
    outputs = (Output("model", MODEL),)

    def run(self, ctx: RunContext, model1: DiffusionModel, model2: DiffusionModel, operation: str, ratio: float) -> DiffusionModel:
        _check_same(model1, model2, "model", "model2")
        unet = _merged(model1.unet, model2.unet, _COMBINE[operation](ratio))
        return replace(model1, unet=unet, source=f"{model1.source} {operation} {model2.source}")


class CLIPMerge(Node):
    type = "CLIPMerge"
    display_name = "Merge Text Encoders"
    category = "loaders"
    description = "Combines the text-encoder weights of two models of one family, as Merge Models does for UNets."

    clip1 = Socket(CLIP)
    clip2 = Socket(CLIP)
    operation = Choice(("blend", "add", "subtract"), default="blend")
    ratio = Float(1.0, min=-10.0, max=10.0, step=0.01, tooltip="blend: clip1's share; subtract: the multiplier")
    outputs = (Output("clip", CLIP),)

    def run(self, ctx: RunContext, clip1: TextEncoders, clip2: TextEncoders, operation: str, ratio: float) -> TextEncoders:
        _check_same(clip1, clip2, "text encoder", "clip2")
        combine = _COMBINE[operation](ratio)
        encoders = [_merged(a, b, combine, skip=("position_ids", "logit_scale"))
                    for a, b in zip(clip1.encoders, clip2.encoders)]
        return replace(clip1, encoders=encoders, source=f"{clip1.source} {operation} {clip2.source}")


_COMBINE: dict[str, Callable[[float], Callable[[Any, Any], Any]]] = {
    "blend": lambda r: (lambda a, b: a * r + b * (1.0 - r)),
    "add": lambda r: (lambda a, b: a + b),
    "subtract": lambda r: (lambda a, b: a - b * r),
}
