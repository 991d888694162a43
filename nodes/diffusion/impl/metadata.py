"""What a saved image carries: the workflow that made it, and a readable summary.

The host passes the workflow document in ``ctx.settings.workflow`` (the CLI and the
editor do); ``settings.embed_workflow = False`` (``nodeflow run --no-metadata``) or
the save node's own switch turns it off. The summary is written in the
``parameters`` layout image viewers know::

    a red circle on a blue background
    Negative prompt: blurry
    Steps: 20, Sampler: dpmpp_2m, Schedule: normal, CFG scale: 7.0, Seed: 42, Model: shapes

It is read off the graph upstream of the save node: the nearest Sampler, its Noise and
guider, the prompts feeding the guider and the model loader.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from nodeflow import RunContext
from nodeflow.files.pngmeta import PARAMETERS_KEY, WORKFLOW_KEY, DocumentView, png_info

_PROMPT_TYPES = ("TextEncoder",)
_MODEL_TYPES = ("Checkpoint", "UNet")


def image_metadata(ctx: RunContext, embed: bool = True) -> Any:
    """The Pillow ``PngInfo`` for images saved by node ``ctx.node_id``, or None when
    embedding is off or the host gave no workflow."""
    document = ctx.settings.workflow
    if not embed or not ctx.settings.embed_workflow or not isinstance(document, Mapping):
        return None
    texts = {WORKFLOW_KEY: workflow_text(document)}
    summary = parameters_text(document, ctx.node_id)
    if summary:
        texts[PARAMETERS_KEY] = _utf8_safe(summary)
    return png_info(texts)


def workflow_text(document: Mapping[str, Any]) -> str:
    """The workflow as it goes into a PNG: compact JSON that is valid UTF-8 (a lone surrogate,
    legal in JSON text, is written as its ``\\udXXX`` escape) and reads back to the same
    document. Non-finite numbers are refused (ValueError) rather than written as ``Infinity``;
    validation refuses them before a run starts."""
    return _utf8_safe(json.dumps(document, ensure_ascii=False, allow_nan=False, separators=(",", ":")))


def _utf8_safe(text: str) -> str:
    # Surrogates only occur inside JSON strings, where backslashreplace's \udXXX is the JSON escape.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def parameters_text(document: Mapping[str, Any], save_node: str) -> str:
    """The human-readable summary of how the image saved by ``save_node`` was made."""
    view = DocumentView(document)
    sampler = view.first_upstream(save_node, ("Sampler",))
    if sampler is None:
        return ""
    values = _values(sampler)
    fields: list[tuple[str, Any]] = [
        ("Steps", values.get("steps")),
        ("Sampler", values.get("sampler")),
        ("Schedule", values.get("schedule")),
    ]
    if values.get("denoise") not in (None, 1, 1.0):
        fields.append(("Denoise", values.get("denoise")))
    positive = negative = None
    guider = view.source(sampler["id"], "guider")
    if guider is not None:
        guide_values = _values(guider)
        if guider.get("type") == "CFG":
            fields.append(("CFG scale", guide_values.get("scale")))
            positive = _prompt(view, guider["id"], "positive")
            negative = _prompt(view, guider["id"], "negative")
        else:
            positive = _prompt(view, guider["id"], "conditioning")
        model = view.first_upstream(guider["id"], _MODEL_TYPES)
        if model is not None:
            model_values = _values(model)
            fields.append(("Model", model_values.get("checkpoint", model_values.get("unet"))))
    noise = view.source(sampler["id"], "noise")
    if noise is not None and noise.get("type") == "Noise":
        fields.insert(3, ("Seed", _values(noise).get("seed")))
    lines = [positive or ""]
    if negative:
        lines.append(f"Negative prompt: {negative}")
    lines.append(", ".join(f"{name}: {value}" for name, value in fields if value is not None))
    return "\n".join(lines)


def _prompt(view: DocumentView, node_id: str, input_name: str) -> str | None:
    source = view.source(node_id, input_name)
    if source is None:
        return None
    encoder = view.first_upstream(source["id"], _PROMPT_TYPES)
    text = _values(encoder).get("text") if encoder is not None else None
    return text if isinstance(text, str) else None


def _values(node: Mapping[str, Any]) -> Mapping[str, Any]:
    values = node.get("values")
    return values if isinstance(values, Mapping) else {}
