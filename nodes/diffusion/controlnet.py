"""ControlNet and T2I-Adapter: steering the UNet with a hint image (edges, depth, pose, ...).

The loader reads the model; the apply nodes attach it, with its hint image, strength and
part of the schedule, to conditioning. The guider then adds the model's residuals to the
UNet at every step where the hint is active (impl/controlnet.py). Chain apply nodes to
use several at once. A ControlNet Union is one network for several kinds of hint; the
union-type node says which kind the hint it is applied with is.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from nodeflow import Choice, FileChoice, Float, Node, NodeError, Output, RunContext, Socket

from nodes.diffusion import estimates
from nodes.diffusion.impl.paths import MODEL_EXTENSIONS
from nodes.diffusion.loaders import _field_options, _model_file_problems, _model_fingerprint, dtype_field
from nodes.diffusion.types import CONDITIONING, CONTROL_NET, IMAGE, VAE, Conditioning, ControlModel


class ControlNetLoader(Node):
    type = "ControlNetLoader"
    display_name = "Load ControlNet"
    category = "loaders"
    description = (
        "Loads a ControlNet (a single file in the original layout or under diffusers' names, or a "
        "diffusers folder), a ControlNet Union (xinsir's SDXL union and ProMax files, a diffusers "
        "folder, or a folder of xinsir's config_promax.json and _promax weights) or a T2I-Adapter (a diffusers folder), for SD 1.x/2.x and SDXL."
    )

    control_net_name = FileChoice(
        folder="controlnet", extensions=MODEL_EXTENSIONS["controlnet"], default="",
        tooltip="A ControlNet file or diffusers folder in a controlnet folder.",
    )
    dtype = dtype_field()
    field_options = classmethod(_field_options)
    fingerprint = classmethod(_model_fingerprint)
    check_host = classmethod(_model_file_problems)
    outputs = (Output("control_net", CONTROL_NET),)
    estimate_memory = classmethod(estimates.weights_loader("controlnet", "control_net_name"))

    @classmethod
    def output_facts(cls, values: Mapping[str, Any], settings: Any) -> dict[str, Any]:
        """``union_types``: how many control types the model knows (0 for a plain ControlNet),
        from a safetensors header's ``task_embedding`` shape or a folder's config; nothing
        when neither tells (a pickled file, a missing one)."""
        import json

        from nodes.diffusion.estimates import safetensors_header
        from nodes.diffusion.impl.paths import lone_model_layout, resolve_model_path

        try:
            path = resolve_model_path(values["control_net_name"], "controlnet", settings)
        except (NodeError, OSError, KeyError, TypeError):
            return {}
        if path.is_dir():
            config_name = (lone_model_layout(path, "controlnet") or ("config.json", ""))[0]
            try:
                config = json.loads((path / config_name).read_text())
            except (OSError, ValueError):
                return {}
            if not isinstance(config, dict):
                return {}
            # xinsir's own configs name ControlNetModel; their number of control types tells a union
            union = config.get("_class_name") == "ControlNetUnionModel" or "num_control_type" in config
            return {"union_types": int(config.get("num_control_type", 6)) if union else 0}
        header = safetensors_header(path) if path.suffix.lower() == ".safetensors" else None
        if header is None:
            return {}
        entry = header.get("task_embedding")
        shape = entry.get("shape") if isinstance(entry, dict) else None
        return {"union_types": int(shape[0]) if isinstance(shape, list) and shape else 0}

    def run(self, ctx: RunContext, control_net_name: str, dtype: str) -> ControlModel:
        from nodes.diffusion.impl.controlnet import load_control
        from nodes.diffusion.impl.ldm import CheckpointError
        from nodes.diffusion.impl.loading import resolve_dtype
        from nodes.diffusion.impl.paths import resolve_model_path

        try:
            path = resolve_model_path(control_net_name, "controlnet", ctx.settings)
        except NodeError as error:
            raise NodeError(error.message, field="control_net_name") from None
        try:
            return load_control(path, resolve_dtype(dtype, ctx.device), ctx.device)
        except CheckpointError as error:
            raise NodeError(f"{path.name}: {error}", field="control_net_name") from None


def _strength() -> Float:
    return Float(1.0, min=0.0, max=10.0, step=0.01, tooltip="how strongly the hint steers the image; 0 is off")


def _attach(cond: Conditioning, control: ControlModel, image: Any, strength: float, start: float, end: float) -> Conditioning:
    from nodes.diffusion.impl.controlnet import ControlHint

    hints = tuple(cond.extras.get("control", ())) + (ControlHint(control, image, strength, start, end),)
    return dataclasses.replace(cond, extras={**cond.extras, "control": hints})


class ControlNetApply(Node):
    type = "ControlNetApply"
    display_name = "Apply ControlNet"
    category = "conditioning"
    description = (
        "Attaches a ControlNet and its hint image to one conditioning (usually the prompt), for "
        "the whole schedule. The hint is resized to the latent's pixel size when it differs."
    )

    conditioning = Socket(CONDITIONING)
    control_net = Socket(CONTROL_NET)
    image = Socket(IMAGE, tooltip="the hint: an edge map, depth map, pose, ... as the ControlNet was trained on")
    strength = _strength()
    outputs = (Output("conditioning", CONDITIONING),)

    def run(self, ctx: RunContext, conditioning: Conditioning, control_net: ControlModel, image: Any, strength: float) -> Conditioning:
        return _attach(conditioning, control_net, image, strength, 0.0, 1.0)


class ControlNetApplyAdvanced(Node):
    type = "ControlNetApplyAdvanced"
    display_name = "Apply ControlNet (positive and negative)"
    category = "conditioning"
    description = (
        "Attaches a ControlNet and its hint image to both the positive and the negative "
        "conditioning, active from start to end of the schedule (as fractions)."
    )

    positive = Socket(CONDITIONING)
    negative = Socket(CONDITIONING)
    control_net = Socket(CONTROL_NET)
    image = Socket(IMAGE, tooltip="the hint image")
    vae = Socket(VAE, optional=True, tooltip="not needed: SD 1.x/2.x/XL ControlNets take the hint in pixels")
    strength = _strength()
    start_percent = Float(0.0, min=0.0, max=1.0, step=0.001, tooltip="where in the schedule the hint starts acting (0 = first step)")
    end_percent = Float(1.0, min=0.0, max=1.0, step=0.001, tooltip="where it stops (1 = last step)")
    outputs = (Output("positive", CONDITIONING), Output("negative", CONDITIONING))

    def run(
        self, ctx: RunContext, positive: Conditioning, negative: Conditioning, control_net: ControlModel, image: Any,
        vae: Any, strength: float, start_percent: float, end_percent: float,
    ) -> dict[str, Conditioning]:
        if start_percent > end_percent:
            raise NodeError(f"start {start_percent} is after end {end_percent}", field="start_percent")
        return {
            "positive": _attach(positive, control_net, image, strength, start_percent, end_percent),
            "negative": _attach(negative, control_net, image, strength, start_percent, end_percent),
        }


# The hint kinds of a ControlNet Union, in the order of the model's task embeddings (the
# model card's order, which ComfyUI's names follow; the last two only in ProMax files).
UNION_TYPES = (
    "openpose", "depth", "hed/pidi/scribble/ted", "canny/lineart/anime_lineart/mlsd", "normal", "segment", "tile",
    "repaint",
)


class SetUnionControlNetType(Node):
    type = "SetUnionControlNetType"
    display_name = "Set ControlNet Union Type"
    category = "conditioning"
    description = (
        "Says which kind of hint a ControlNet Union is given (a union model is one network for "
        "pose, depth, edges, ...). auto gives no type: the model reads the hint as it is."
    )

    control_net = Socket(CONTROL_NET, tooltip="a ControlNet Union model")
    control_type = Choice(("auto", *UNION_TYPES), default="auto",
                          tooltip="the kind of hint image; tile and repaint need a ProMax model")
    outputs = (Output("control_net", CONTROL_NET),)

    @classmethod
    def advise(cls, values: Mapping[str, Any], upstream: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        """Before a run, a warning on a type the loaded ControlNet cannot take (what run refuses)."""
        types, chosen = upstream.get("union_types"), values.get("control_type")
        if not isinstance(types, int) or chosen not in UNION_TYPES:
            return {}, {}
        if types == 0:
            return {}, {"control_type": "the loaded ControlNet is not a union model: only auto applies"}
        if UNION_TYPES.index(chosen) >= types:
            return {}, {"control_type": f"the loaded union model knows {types} control types: {chosen} needs ProMax"}
        return {}, {}

    def run(self, ctx: RunContext, control_net: ControlModel, control_type: str) -> ControlModel:
        if control_type == "auto":
            return dataclasses.replace(control_net, union_type=None)
        if control_net.kind != "controlnet_union":
            raise NodeError(
                f"{_name(control_net)} is not a ControlNet Union, so it takes no control type; use auto, "
                "or load a union model", field="control_type")
        index = UNION_TYPES.index(control_type)
        count = int(control_net.model.config.num_control_type)
        if index >= count:
            raise NodeError(
                f"{_name(control_net)} knows {count} control types, not {control_type!r}; tile and repaint need "
                "the ProMax union model", field="control_type")
        return dataclasses.replace(control_net, union_type=index)


def _name(control: ControlModel) -> str:
    from pathlib import Path

    return Path(control.source).name or "this ControlNet"
