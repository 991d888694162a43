"""ComfyUI mappings for regional conditioning, sigma schedules and block merges (issue 11).

Kept apart from comfyui.py's tables so those stay short; comfyui.py adds these to its
``MAPPINGS`` once its helpers exist. Widget names and order are ComfyUI's.
"""

from __future__ import annotations

from typing import Any

from nodes.diffusion.comfyui import Builder, ComfyNode, Mapping, _one_to_one, _same

_MASK_AREAS = {"default": "default", "mask bounds": "mask bounds"}


REGION_MAPPINGS: dict[str, Mapping] = {
    "ConditioningSetAreaPercentage": _same("ConditioningSetAreaPercentage", ("conditioning",),
                                           ("width", "height", "x", "y", "strength"), ("conditioning",)),
    "ConditioningSetMask": Mapping(
        ("strength", "set_cond_area"),
        _one_to_one("ConditioningSetMask", {"conditioning": "conditioning", "mask": "mask"},
                    {"strength": "strength", "set_cond_area": "area"}, ("conditioning",),
                    {"set_cond_area": _MASK_AREAS.__getitem__}), ("ConditioningSetMask",)),
}


# ----------------------------------------------------------- explicit sigma lists
_AYS_MODELS = {"SD1": "SD1", "SDXL": "SDXL"}  # SVD is a video model
# Always a list: no Sampler widget says them.
_ALWAYS_LISTS = ("AlignYourStepsScheduler", "PolyexponentialScheduler", "VPScheduler", "LaplaceScheduler", "ManualSigmas")
# They change a list, so the schedule they read must be one (its own node) too.
_EDITS = ("SetFirstSigma", "ExtendIntermediateSigmas")
_SPLITS = ("SplitSigmas", "SplitSigmasDenoise")
# The schedules imported as Sampler widgets, with no list node of their own to edit.
_WIDGETS_ONLY = ("BasicScheduler", "SDTurboScheduler")


def needs_sigma_list(b: Builder, source: ComfyNode) -> bool:
    """Whether the schedule ``source`` makes has no Sampler widget equivalent, so it
    becomes nodeflow's own SIGMAS node: Align Your Steps, Laplace, a typed-in list and
    the edits of a list always; Karras / exponential with another than SD's own range
    (or rho 7), a beta schedule with another alpha / beta than 0.6; a split of a list;
    and any schedule a list edit reads (downstream)."""
    return _own_list(b, source) or _edited_downstream(b, source, 0)


def _own_list(b: Builder, source: ComfyNode) -> bool:
    from nodes.diffusion.comfyui import _SIGMA_RANGE, _is_number

    if source.type in _ALWAYS_LISTS or source.type in _EDITS:
        return True
    if source.type in ("KarrasScheduler", "ExponentialScheduler"):
        rho = b.resolved(source, "rho") if source.type == "KarrasScheduler" else None
        return (any(_is_number(v := b.resolved(source, name)) and abs(v - default) > 1e-3
                    for name, default in _SIGMA_RANGE.items())
                or (_is_number(rho) and rho != 7.0))
    if source.type == "BetaSamplingScheduler":
        return any(_is_number(v := b.resolved(source, name)) and abs(v - 0.6) > 1e-9 for name in ("alpha", "beta"))
    if source.type in _SPLITS:
        inner = _inner(b, source)
        return inner is not None and _own_list(b, inner)
    return False


def _inner(b: Builder, c: ComfyNode) -> ComfyNode | None:
    from nodes.diffusion.comfyui import Ref

    ref = b.resolved(c, "sigmas")
    return b.comfy.get(ref.node) if isinstance(ref, Ref) else None


def _edited_downstream(b: Builder, c: ComfyNode, depth: int) -> bool:
    """Whether a list edit reads ``c``'s schedule, directly or through splits."""
    from nodes.diffusion.comfyui import MAX_RESOLVE_HOPS, Ref

    if depth > MAX_RESOLVE_HOPS:
        return False
    for other in b.comfy.values():
        if other.type in _EDITS or other.type in _SPLITS:
            ref = b.resolved(other, "sigmas")
            if isinstance(ref, Ref) and ref.node == c.id and (
                    other.type in _EDITS or _edited_downstream(b, other, depth + 1)):
                return True
    return False


def _when_listed(build: Any) -> Any:
    """A scheduler node's builder that adds its node only when a sampler needs the list
    (otherwise the sampler reads it as widgets and it has no node of its own)."""

    def maybe(b: Builder, c: ComfyNode) -> None:
        if needs_sigma_list(b, c):
            build(b, c)

    return maybe


def _editing(build: Any) -> Any:
    """A list edit's builder: its schedule must be a list nodeflow has a node for."""

    def checked(b: Builder, c: ComfyNode) -> None:
        inner = _inner(b, c)
        if inner is not None and (inner.type in _WIDGETS_ONLY or (inner.type in _SPLITS and _split_of_widgets(b, inner))):
            b.problem(c, f"its sigmas come from {inner.type} (node {inner.id}), which nodeflow imports as the "
                         "Sampler's own schedule, not as a list of sigmas a node could edit; use KarrasScheduler, "
                         "ExponentialScheduler or BetaSamplingScheduler for the list")
            return
        build(b, c)

    return checked


def _split_of_widgets(b: Builder, split_node: ComfyNode) -> bool:
    inner = _inner(b, split_node)
    return inner is not None and (inner.type in _WIDGETS_ONLY or (inner.type in _SPLITS and _split_of_widgets(b, inner)))


def _build_beta(b: Builder, c: ComfyNode) -> None:
    values: dict[str, Any] = {}
    for name in ("steps", "alpha", "beta"):
        b.value(c, name, values, name)
    node_id = b.add(c, "BetaSamplingScheduler", values=values)
    b.link(c, "model", node_id, "model")
    b.output(c, 0, node_id, "sigmas")


REGION_MAPPINGS.update({
    "AlignYourStepsScheduler": Mapping(
        ("model_type", "steps", "denoise"),
        _one_to_one("AlignYourStepsScheduler", {}, {"model_type": "model_type", "steps": "steps", "denoise": "denoise"},
                    ("sigmas",), {"model_type": _AYS_MODELS.__getitem__}), ("AlignYourStepsScheduler",)),
    "KarrasScheduler": Mapping(
        ("steps", "sigma_max", "sigma_min", "rho"),
        _when_listed(_one_to_one("KarrasScheduler", {}, {n: n for n in ("steps", "sigma_max", "sigma_min", "rho")},
                                 ("sigmas",))), ("KarrasScheduler",)),
    "ExponentialScheduler": Mapping(
        ("steps", "sigma_max", "sigma_min"),
        _when_listed(_one_to_one("ExponentialScheduler", {}, {n: n for n in ("steps", "sigma_max", "sigma_min")},
                                 ("sigmas",))), ("ExponentialScheduler",)),
    # alpha = beta = 0.6 is the Sampler's beta schedule (widgets); others its own node.
    "BetaSamplingScheduler": Mapping(("steps", "alpha", "beta"), _when_listed(_build_beta), ("BetaSamplingScheduler",)),
    "PolyexponentialScheduler": _same("PolyexponentialScheduler", (), ("steps", "sigma_max", "sigma_min", "rho"), ("sigmas",)),
    "VPScheduler": _same("VPScheduler", (), ("steps", "beta_d", "beta_min", "eps_s"), ("sigmas",)),
    "LaplaceScheduler": _same("LaplaceScheduler", (), ("steps", "sigma_max", "sigma_min", "mu", "beta"), ("sigmas",)),
    "ManualSigmas": _same("ManualSigmas", (), ("sigmas",), ("sigmas",)),
    "SplitSigmas": Mapping(
        ("step",), _when_listed(_one_to_one("SplitSigmas", {"sigmas": "sigmas"}, {"step": "step"},
                                            ("high_sigmas", "low_sigmas"))), ("SplitSigmas",)),
    "SplitSigmasDenoise": Mapping(
        ("denoise",), _when_listed(_one_to_one("SplitSigmasDenoise", {"sigmas": "sigmas"}, {"denoise": "denoise"},
                                               ("high_sigmas", "low_sigmas"))), ("SplitSigmasDenoise",)),
    "SetFirstSigma": Mapping(("sigma",), _editing(_same("SetFirstSigma", ("sigmas",), ("sigma",), ("sigmas",)).build),
                             ("SetFirstSigma",)),
    "ExtendIntermediateSigmas": Mapping(
        ("steps", "start_at_sigma", "end_at_sigma", "spacing"),
        _editing(_same("ExtendIntermediateSigmas", ("sigmas",), ("steps", "start_at_sigma", "end_at_sigma", "spacing"),
                       ("sigmas",)).build), ("ExtendIntermediateSigmas",)),
})

REGION_REFUSED = {
    "FlipSigmas": "a flipped schedule runs from less noise to more (unsampling an image back to noise), and "
                  "nodeflow's Sampler runs a schedule only from more noise to less, as diffusers' schedulers do",
}


# ------------------------------------------------------------------ block merges
def _sdxl_merge_widgets() -> dict[str, str]:
    from nodes.diffusion.merge_blocks import SDXL_BLOCKS

    return {comfy: ours for ours, comfy in SDXL_BLOCKS.items()}


def _sd1_merge_widgets() -> dict[str, str]:
    from nodes.diffusion.merge_blocks import SD1_BLOCKS

    return {comfy: ours for ours, comfy in SD1_BLOCKS.items()}


_MERGE_INPUTS = {"model1": "model1", "model2": "model2"}
REGION_MAPPINGS.update({
    "ModelMergeBlocks": Mapping(
        ("input", "middle", "out"),
        _one_to_one("ModelMergeBlocks", _MERGE_INPUTS, {n: n for n in ("input", "middle", "out")}, ("model",)),
        ("ModelMergeBlocks",)),
    "ModelMergeSDXL": Mapping(
        tuple(_sdxl_merge_widgets()), _one_to_one("ModelMergeSDXL", _MERGE_INPUTS, _sdxl_merge_widgets(), ("model",)),
        ("ModelMergeSDXL",)),
    # ComfyUI registers ModelMergeSD2 as the same class: SD 2.x has SD 1.x's blocks.
    **{name: Mapping(tuple(_sd1_merge_widgets()),
                     _one_to_one("ModelMergeSD1", _MERGE_INPUTS, _sd1_merge_widgets(), ("model",)), ("ModelMergeSD1",))
       for name in ("ModelMergeSD1", "ModelMergeSD2")},
})


# ------------------------------------------------------------ continuous EDM models
_EDM_REFUSED = {
    "eps": "diffusers' EDM schedulers have no noise prediction with EDM's input scaling (their epsilon is EDM's "
           "F-prediction, ComfyUI's 'edm')",
    "cosmos_rflow": "a rectified-flow video model, not an SD-family one",
}


def _build_edm(b: Builder, c: ComfyNode) -> None:
    values: dict[str, Any] = {}
    kind = b.resolved(c, "sampling")
    if kind in _EDM_REFUSED:
        b.problem(c, f"sampling {kind!r} has no nodeflow equivalent: {_EDM_REFUSED[kind]}")
    else:
        b.value(c, "sampling", values, "prediction", {"v_prediction": "v_prediction", "edm": "edm", "edm_playground_v2.5": "edm_playground_v2.5"}.__getitem__)
    b.value(c, "sigma_max", values, "sigma_max")
    b.value(c, "sigma_min", values, "sigma_min")
    node_id = b.add(c, "ModelSamplingEDM", values=values)
    b.link(c, "model", node_id, "model")
    b.output(c, 0, node_id, "model")


REGION_MAPPINGS["ModelSamplingContinuousEDM"] = Mapping(("sampling", "sigma_max", "sigma_min"), _build_edm,
                                                        ("ModelSamplingEDM",))
