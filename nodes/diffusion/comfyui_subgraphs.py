"""ComfyUI subgraphs, inlined: a subgraph instance becomes the nodes inside it.

ComfyUI's UI format (schema 1, frontend 1.24+) keeps reusable groups of nodes in
``definitions.subgraphs``: each definition has its own ``nodes`` and ``links``, a list of
``inputs`` and ``outputs``, and two virtual nodes, the input node (id -10) whose output
slot *i* is the instance's input *i*, and the output node (id -20) whose input slot *j*
is the instance's output *j*. A node of the outer graph whose ``type`` is a definition's
id is an instance of it.

nodeflow has no subgraphs, so each instance is replaced by its inner nodes, with ids
``"<instance id>:<inner id>"`` (ComfyUI's own execution ids for them), their own titles,
and positions moved to where the instance sits. Links through the input and output
nodes are rewired to what feeds the instance and to what the instance fed. Subgraphs
inside subgraphs are inlined the same way, to a bounded depth, and the inlined graph to
the importer's node limit: instances of instances multiply (ten of a subgraph that holds
ten of another, thirty levels down), so the count is checked as nodes are made, before a
hostile file can fill the memory.
"""

from __future__ import annotations

from typing import Any

from nodeflow.files.workflow import WorkflowError

from nodes.diffusion.comfyui import MAX_NODES, ComfyNode, Ref, _is_int, _list, link_ends, read_ui_graph

INPUT_NODE, OUTPUT_NODE = "-10", "-20"
MAX_DEPTH = 32  # subgraphs inside subgraphs; a definition that contains itself must end


def subgraph_definitions(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Definition id -> definition, for every subgraph the file defines."""
    definitions = data.get("definitions")
    raw = definitions.get("subgraphs") if isinstance(definitions, dict) else None
    found: dict[str, dict[str, Any]] = {}
    for index, entry in enumerate(_list(raw)):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            raise WorkflowError(f"ComfyUI definitions.subgraphs[{index}] needs an 'id'")
        if not isinstance(entry.get("nodes"), list):
            raise WorkflowError(f"ComfyUI subgraph {entry.get('name') or entry['id']!r} has no 'nodes' list")
        found[entry["id"]] = entry
    return found


def inline_subgraphs(nodes: list[ComfyNode], definitions: dict[str, dict[str, Any]], depth: int = 0) -> list[ComfyNode]:
    """``nodes`` with every subgraph instance replaced by its (inlined) inner nodes."""
    if not any(n.type in definitions for n in nodes):
        return nodes
    if depth >= MAX_DEPTH:
        raise WorkflowError(f"ComfyUI subgraphs are nested more than {MAX_DEPTH} deep (does one contain itself?)")
    out: list[ComfyNode] = []
    substitutes: dict[tuple[str, int], Any] = {}  # a Ref to replace -> its replacement
    for node in nodes:
        definition = definitions.get(node.type)
        if definition is None:
            out.append(node)
            continue
        prefix = f"{node.id}:"
        inner = read_ui_graph(definition, prefix, definitions)
        if len(out) + len(inner) > MAX_NODES:
            name = definition.get("name") or node.type
            raise WorkflowError(
                f"ComfyUI node {node.id} (subgraph {str(name)[:80]!r}, {depth + 1} levels down): inlining the "
                f"subgraphs gives more than {MAX_NODES} nodes, the limit (do instances of subgraphs repeat inside each other?)"
            )
        _place(inner, node, definition)
        # The input node's slot i is the definition's input i: the instance's input of that
        # name (its list may leave out the promoted widgets, frontends 1.2x, or be missing);
        # by position only when the instance's names are not the definition's.
        names = [e.get("name") if isinstance(e, dict) else None for e in _list(definition.get("inputs"))]
        for slot, name in enumerate(node.slots):
            if name not in names:
                substitutes[(prefix + INPUT_NODE, slot)] = node.inputs.get(name)
        for slot, name in enumerate(names):
            if isinstance(name, str) and (name in node.slots or (prefix + INPUT_NODE, slot) not in substitutes):
                substitutes[(prefix + INPUT_NODE, slot)] = node.inputs.get(name)
        for slot, ref in _output_sources(definition, prefix).items():
            substitutes[(node.id, slot)] = ref
        out.extend(inner)
    for node in out:
        for name, value in list(node.inputs.items()):
            replaced = _substituted(value, substitutes)
            if replaced is None and isinstance(value, Ref) and name in node.covered:
                replaced = node.covered[name]  # the instance gives no value: the inner widget's own
            node.inputs[name] = replaced
    return inline_subgraphs(out, definitions, depth + 1)


def _substituted(value: Any, substitutes: dict[tuple[str, int], Any]) -> Any:
    for _ in range(MAX_DEPTH * 4):
        if not isinstance(value, Ref) or (value.node, value.slot) not in substitutes:
            return value
        value = substitutes[(value.node, value.slot)]
    raise WorkflowError("ComfyUI subgraph inputs and outputs feed each other in a loop")


def _output_sources(definition: dict[str, Any], prefix: str) -> dict[int, Ref]:
    """The instance's output slot j -> the inner output that feeds the output node's slot j."""
    sources: dict[int, Ref] = {}
    for ends in filter(None, map(link_ends, _list(definition.get("links")))):
        origin, origin_slot, target, target_slot = ends
        if str(target) == OUTPUT_NODE and _is_int(target_slot) and _is_int(origin_slot):
            sources[target_slot] = Ref(prefix + str(origin), origin_slot)
    return sources


def _place(inner: list[ComfyNode], instance: ComfyNode, definition: dict[str, Any]) -> None:
    """Move the inner nodes so that their top-left corner is where the instance sits; an
    inner node inherits the instance's mode (a muted or bypassed instance is all muted or bypassed)."""
    placed = [n.pos for n in inner if n.pos is not None]
    for node in inner:
        if instance.mode != "normal":
            node.mode = instance.mode
        if instance.pos is None:
            node.pos = None
        elif node.pos is not None and placed:
            left, top = min(p[0] for p in placed), min(p[1] for p in placed)
            node.pos = (instance.pos[0] + node.pos[0] - left, instance.pos[1] + node.pos[1] - top)
