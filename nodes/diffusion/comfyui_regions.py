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
