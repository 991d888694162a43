"""Model file names as ComfyUI saved them, made to name the same file here.

ComfyUI lists the models in a subfolder with the system's own separator, so a workflow
saved on Windows names ``"sdxl\\\\juggernaut.safetensors"`` (one backslash in the value)
where nodeflow, like ComfyUI on Linux or macOS, lists ``"sdxl/juggernaut.safetensors"``.
Read as it is, such a name finds no file on Linux (a backslash is an ordinary character
in a file name there), so the importer writes the model-name widgets with ``/``.
Only these widgets are touched: a backslash in a prompt or a file prefix stays as written.
"""

from __future__ import annotations

from typing import Any, Iterable

# ComfyUI widget names that name a file in one of its model folders.
MODEL_NAME_WIDGETS = frozenset({
    "ckpt_name", "config_name", "vae_name", "lora_name", "control_net_name", "model_name", "unet_name",
    "clip_name", "clip_name1", "clip_name2", "style_model_name", "gligen_name", "hypernetwork_name",
})


def portable_model_name(value: Any) -> Any:
    """``value`` with Windows separators turned into ``/``; other values unchanged."""
    return value.replace("\\", "/") if isinstance(value, str) and "\\" in value else value


def normalise_model_names(nodes: Iterable[Any]) -> None:
    """Rewrite, in place, the model-name widgets of ComfyUI nodes (``.inputs`` by name)."""
    for node in nodes:
        for name in MODEL_NAME_WIDGETS.intersection(node.inputs):
            node.inputs[name] = portable_model_name(node.inputs[name])
