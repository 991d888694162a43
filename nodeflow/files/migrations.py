"""Every upgrade of old workflow files: the format's, and each node type's.

Format steps: one registered step per format version.

A step is a small pure function taking the document at version ``N`` and returning a
new document at version ``N + 1``; :func:`migrate` chains them. Steps never touch the
registry: they move data between layouts, they do not judge it (the loader and the
validator do that afterwards). A step raises :class:`MigrationError` when the old
layout itself is malformed, naming where.

Node-type versions are separate: a node class declares its own upgrades
(:attr:`~nodeflow.model.node.Node.version`, ``renamed_ports``, ``migrate_values``) and
:func:`upgrade_node_values` applies them to one saved node, below the format steps.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Mapping

from nodeflow.model.errors import NodeflowError
from nodeflow.model.node import Node
from nodeflow.model.problems import Problem, ProblemCode
from nodeflow.model.values import json_type

Document = dict[str, Any]
Step = Callable[[Document], Document]


class MigrationError(NodeflowError, ValueError):
    """An old document that a step cannot upgrade; the message says where."""


_STEPS: dict[int, Step] = {}


def migration(from_version: int) -> Callable[[Step], Step]:
    """Register ``step`` as the upgrade from ``from_version`` to ``from_version + 1``."""

    def register(step: Step) -> Step:
        if from_version in _STEPS:
            raise ValueError(f"a migration from version {from_version} is already registered")
        _STEPS[from_version] = step
        return step

    return register


def migrate(document: Document, to_version: int) -> Document:
    """``document`` upgraded step by step to ``to_version`` (returned as is when current)."""
    version = document["version"]
    while version < to_version:
        step = _STEPS.get(version)
        if step is None:
            raise MigrationError(f"there is no upgrade from format version {version}")
        document = step(document)
        if document.get("version") != version + 1:  # a step that forgets to bump would loop
            raise AssertionError(f"migration from version {version} did not produce version {version + 1}")
        version += 1
    return document


# ------------------------------------------------------------------------ 0 -> 1
# Version 0, the pre-release layout:
#
#   {"format": "nodeflow.workflow", "version": 0,
#    "nodes": {"1": {"type": "Number", "inputs": {"value": 2}, "title": "",
#                    "bypass": false, "pos": [x, y], "size": [w, h]}},
#    "links": [["1", "value", "2", "a"]],
#    "viewport": {...}}
#
# Nodes were an object keyed by id, values were called "inputs", bypass was a flag,
# positions lived on the node and links were [source, output, target, input] lists.
# Node types had no versions yet, so every node is version 1 of its type.

_V0_NODE_KEYS = {"type", "inputs", "title", "bypass", "pos", "size"}


_V0_TOP_KEYS = {"format", "version", "nodes", "links", "viewport"}


@migration(0)
def _v0_to_v1(document: Document) -> Document:
    unknown_top = sorted(set(document) - _V0_TOP_KEYS)
    if unknown_top:
        raise MigrationError(f"unknown top-level key {unknown_top[0]!r} in a version 0 file")
    raw_nodes = document.get("nodes", {})
    if not isinstance(raw_nodes, dict):
        raise MigrationError(f"'nodes' must be an object keyed by node id in version 0, not {json_type(raw_nodes)}")
    nodes: list[Document] = []
    ui_nodes: dict[str, Document] = {}
    for node_id, raw in raw_nodes.items():
        if not isinstance(raw, dict):
            raise MigrationError(f"nodes[{node_id!r}] must be an object, not {json_type(raw)}")
        unknown = sorted(set(raw) - _V0_NODE_KEYS)
        if unknown:
            raise MigrationError(f"nodes[{node_id!r}]: unknown key {unknown[0]!r}")
        nodes.append(
            {
                "id": node_id,
                "type": raw.get("type"),
                "title": raw.get("title", ""),
                "mode": "bypass" if raw.get("bypass") is True else "normal",
                "version": 1,
                "values": raw.get("inputs", {}),
            }
        )
        placement = {key: raw[key] for key in ("pos", "size") if key in raw}
        if placement:
            ui_nodes[node_id] = placement

    raw_links = document.get("links", [])
    if not isinstance(raw_links, list):
        raise MigrationError(f"'links' must be a list in version 0, not {json_type(raw_links)}")
    links = []
    for index, raw in enumerate(raw_links):
        if not (isinstance(raw, list) and len(raw) == 4):
            raise MigrationError(f"links[{index}] must be a list [source, output, target, input] in version 0")
        source, output, target, input_name = raw
        links.append({"from": {"node": source, "output": output}, "to": {"node": target, "input": input_name}})

    upgraded: Document = {"format": document["format"], "version": 1, "nodes": nodes, "links": links}
    ui: Document = {}
    if ui_nodes:
        ui["nodes"] = ui_nodes
    if "viewport" in document:
        ui["viewport"] = document["viewport"]
    if ui:
        upgraded["ui"] = ui
    return upgraded




# ------------------------------------------------------------------ node-type upgrades
# Each node type owns its upgrades (Node.version, renamed_ports, migrate_values); this
# applies them to one saved node. A failing upgrade becomes a Problem, never a crash.
def upgrade_node_values(
    cls: type[Node], node_id: str, values: dict[str, Any], stored: int, problems: list[Problem]
) -> tuple[dict[str, Any], int | None, Mapping[str, str]]:
    """One node's values (saved by version ``stored`` of ``cls``) brought up to the installed class version, the version they now follow
    (None: the class's own), and the ports renamed since (for the node's links). Values
    that cannot be upgraded are kept as saved, with their links."""
    if stored > cls.version:
        problems.append(
            Problem(
                ProblemCode.NEWER_NODE_VERSION,
                f"saved by version {stored} of {cls.type}, but version {cls.version} is installed; "
                "update the node pack",
                node_id,
                cls.type,
            )
        )
        return values, stored, {}
    if stored == cls.version:
        return values, None, {}
    try:
        renamed = dict(cls.renamed_ports(stored))
        moved = {renamed.get(name, name): value for name, value in values.items()}
        upgraded = cls.migrate_values(copy.deepcopy(moved), stored)
        if not isinstance(upgraded, dict):
            raise TypeError(f"migrate_values returned {type(upgraded).__name__}, not a dict")
    except Exception as exc:  # a pack's bug must not stop the file from loading
        problems.append(
            Problem(
                ProblemCode.MIGRATION_FAILED,
                f"could not upgrade its values from version {stored} to {cls.version}: {exc}",
                node_id,
                cls.type,
            )
        )
        return values, stored, {}
    return upgraded, None, renamed
