"""nodeflow's node types in the shape of ComfyUI's ``/object_info``, built from the same
declarations ``nodeflow nodes --json`` prints (``Node.describe()``).

Two kinds of entries: every installed nodeflow node type (under its own name), and the
ComfyUI node types that an importer can convert (e.g. ``KSampler``), so a ComfyUI client
that checks a type exists before submitting finds it. The latter list only their widget
names (an importer knows how to map them, not their full typed declaration) and say which
nodeflow types they become.
"""

from __future__ import annotations

from typing import Any

from nodeflow.files.importers import importers
from nodeflow.model.registry import NodeRegistry

_TYPES = {"int": "INT", "seed": "INT", "float": "FLOAT", "string": "STRING", "bool": "BOOLEAN", "file": "STRING"}
_OPTIONS = ("default", "min", "max", "step", "tooltip", "multiline")


def input_spec(described: dict[str, Any]) -> list[Any]:
    """One input as ComfyUI's ``[TYPE or choices, {options}]``."""
    kind = described.get("kind")
    options = {k: described[k] for k in _OPTIONS if described.get(k) is not None}
    if kind == "seed":
        options["control_after_generate"] = True
    if kind == "file":
        options["nodeflow_folder"] = described.get("folder", "")
    if kind == "choice":
        return [list(described.get("choices", [])), options]
    if kind == "socket":
        return [str(described.get("type")), options]
    return [_TYPES.get(str(kind), str(described.get("type"))), options]


def node_info(described: dict[str, Any]) -> dict[str, Any]:
    required: dict[str, Any] = {}
    optional: dict[str, Any] = {}
    for item in described["inputs"]:
        (optional if item.get("optional") else required)[item["name"]] = input_spec(item)
    outputs = described["outputs"]
    return {
        "input": {"required": required, "optional": optional},
        "input_order": {"required": list(required), "optional": list(optional)},
        "output": [str(o["type"]) for o in outputs],
        "output_is_list": [False] * len(outputs),
        "output_name": [o["name"] for o in outputs],
        "output_tooltips": [o.get("tooltip", "") for o in outputs],
        "name": described["type"],
        "display_name": described.get("display_name") or described["type"],
        "description": described.get("description", ""),
        "python_module": "nodeflow",
        "category": described.get("category", ""),
        "output_node": bool(described.get("output_node")),
    }


def imported_info(name: str, widgets: list[str], creates: list[str], source: str) -> dict[str, Any]:
    required = {widget: ["*", {}] for widget in widgets}
    return {
        "input": {"required": required, "optional": {}},
        "input_order": {"required": list(required), "optional": []},
        "output": [], "output_is_list": [], "output_name": [],
        "name": name, "display_name": name,
        "description": f"a {source} node type nodeflow imports" + (f" as {', '.join(creates)}" if creates else ""),
        "python_module": "nodeflow.importers", "category": f"{source} (imported)", "output_node": False,
    }


def object_info(registry: NodeRegistry) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for importer in importers(registry):
        describe = getattr(importer, "describe_types", None)
        if describe is None:
            continue
        for name, spec in describe().items():
            out[name] = imported_info(name, list(spec.get("widgets", ())), list(spec.get("creates", ())), importer.name)
    for cls in registry.types():  # a nodeflow type of the same name wins: it is what runs
        out[cls.type] = node_info(cls.describe())
    return out
