"""JSON Schemas (draft 2020-12) for workflow files, generated from the code.

- :func:`workflow_schema`: the document layout, whatever nodes are installed. Shipped as
  ``docs/workflow.schema.json`` (a test keeps it in step with this module).
- :func:`registry_schema`: the same, with each node type's ``values`` constrained by
  its widgets, for editors and tools that know the installed node types.

The loader (:mod:`nodeflow.files.workflow`) is the authority; the schema describes valid
current-version files for other tools. What a schema cannot say (unique node ids,
links between existing nodes, type-compatible links) the validator checks.

``python -m nodeflow.files.schema`` prints the document schema; ``--nodes`` prints the schema
for the installed node types.
"""

from __future__ import annotations

import copy
import json
import sys
from typing import Any

from nodeflow.model.graph import MODES, NodeMode
from nodeflow.model.node import Node
from nodeflow.model.registry import NodeRegistry
from nodeflow.files.workflow import MAX_LINKS, MAX_NODES, WORKFLOW_FORMAT, WORKFLOW_VERSION

DRAFT = "https://json-schema.org/draft/2020-12/schema"


def workflow_schema() -> dict[str, Any]:
    name = {"type": "string", "minLength": 1}
    pair = {"type": "array", "prefixItems": [{"type": "number"}, {"type": "number"}], "minItems": 2, "maxItems": 2}
    return {
        "$schema": DRAFT,
        "title": "nodeflow workflow",
        "description": f"A nodeflow node graph, format version {WORKFLOW_VERSION}. See docs/workflow-format.md.",
        "type": "object",
        "required": ["format", "version"],
        "additionalProperties": False,
        "properties": {
            "format": {"const": WORKFLOW_FORMAT},
            "version": {"const": WORKFLOW_VERSION},
            "meta": {"type": "object", "description": "Free-form information (title, description, author)."},
            "nodes": {"type": "array", "maxItems": MAX_NODES, "items": {"$ref": "#/$defs/node"}},
            "links": {"type": "array", "maxItems": MAX_LINKS, "items": {"$ref": "#/$defs/link"}},
            "ui": {"$ref": "#/$defs/ui"},
        },
        "$defs": {
            "name": name,
            "node": {
                "type": "object",
                "required": ["id", "type"],
                "additionalProperties": False,
                "properties": {
                    "id": {"$ref": "#/$defs/name", "description": "Unique within the workflow."},
                    "type": {"$ref": "#/$defs/name", "description": "The node type, e.g. \"KSampler\"."},
                    "title": {"type": "string", "default": ""},
                    "mode": {"enum": list(MODES), "default": NodeMode.NORMAL.value},
                    "version": {
                        "type": "integer",
                        "minimum": 1,
                        "description": "Version of the node type the values follow; absent means the installed one.",
                    },
                    "values": {"type": "object", "description": "Widget values by field name.", "default": {}},
                },
            },
            "link": {
                "type": "object",
                "required": ["from", "to"],
                "additionalProperties": False,
                "properties": {
                    "from": _end("output"),
                    "to": _end("input"),
                },
            },
            "ui": {
                "type": "object",
                "description": "Editor state; ignored when running headless.",
                "properties": {
                    "nodes": {
                        "type": "object",
                        "additionalProperties": {
                            "type": "object",
                            "properties": {"pos": pair, "size": pair},
                        },
                    },
                    "viewport": {"type": "object"},
                    "groups": {"type": "array"},
                },
            },
        },
    }


def registry_schema(registry: NodeRegistry) -> dict[str, Any]:
    """:func:`workflow_schema` with node types limited to ``registry``'s and their values checked."""
    schema = workflow_schema()
    node = schema["$defs"]["node"]
    types = registry.types()
    node["properties"]["type"] = {"enum": sorted(cls.type for cls in types)}
    rules = [
        {
            "if": {"properties": {"type": {"const": cls.type}}, "required": ["type"]},
            "then": {"properties": {"values": _values_schema(cls)}},
        }
        for cls in sorted(types, key=lambda c: c.type)
    ]
    if rules:  # the meta-schema wants a non-empty allOf
        node["allOf"] = rules
    return schema


def schema_text(schema: dict[str, Any] | None = None) -> str:
    """The schema as written to docs/workflow.schema.json."""
    return json.dumps(schema if schema is not None else workflow_schema(), indent=2) + "\n"


def _end(port: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["node", port],
        "additionalProperties": False,
        "properties": {"node": {"$ref": "#/$defs/name"}, port: {"$ref": "#/$defs/name"}},
    }


def _values_schema(cls: type[Node]) -> dict[str, Any]:
    properties = {}
    for name, widget in cls.widgets().items():
        field_schema = copy.deepcopy(widget.json_schema())
        field_schema["default"] = widget.default
        if widget.tooltip:
            field_schema["description"] = widget.tooltip
        properties[name] = field_schema
    return {"type": "object", "properties": properties, "additionalProperties": False}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--nodes"]:
        from nodeflow.model.registry import default_registry

        sys.stdout.write(schema_text(registry_schema(default_registry())))
    elif not args:
        sys.stdout.write(schema_text())
    else:
        print("usage: python -m nodeflow.files.schema [--nodes]", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
