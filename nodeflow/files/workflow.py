"""Workflow files: one JSON format for the editor and for headless runs.

Reading is forgiving about *content* and strict about *shape*. A malformed file (bad
JSON, wrong layout, a newer format, limits exceeded) raises :class:`WorkflowError`
naming where. Anything well-formed loads, even when it cannot run: unknown node types
and bad values are kept as they are (so the editor can show them and a re-save writes
them back), links to missing nodes become load-time problems. The validator reports
the rest. See docs/workflow-format.md for the layout.

Writing is deterministic (nodes and links in a stable order, one field per line) so
saved workflows diff well, and atomic (see :mod:`nodeflow.files.atomic`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from nodeflow.model import jsontext
from nodeflow.files.atomic import write_atomically
from nodeflow.model.graph import Graph, Link, NodeInstance, NodeMode
from nodeflow.files.migrations import MigrationError, migrate, upgrade_node_values
from nodeflow.model.errors import NodeflowError
from nodeflow.model.registry import NodeRegistry
from nodeflow.model.problems import Problem, ProblemCode, node_order_key
from nodeflow.model.values import is_int, json_type, show

WORKFLOW_FORMAT = "nodeflow.workflow"
WORKFLOW_VERSION = 1

# Limits checked before anything is built, so a hostile or broken file fails fast.
MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_NODES = 5_000
MAX_LINKS = 20_000
MAX_DEPTH = 64  # JSON nesting; real workflows need about 6
MAX_STRING_LENGTH = 1_000_000

TOP_KEYS = ("format", "version", "meta", "nodes", "links", "ui")
NODE_KEYS = ("id", "type", "title", "mode", "version", "values")


class WorkflowError(NodeflowError, ValueError):
    """A file that is not a readable workflow; the message says where and why."""


@dataclass
class Workflow:
    """A loaded workflow: the graph, the editor's extra UI state, and load-time problems.

    Node positions and sizes live on the graph's nodes; ``ui`` holds the rest of the
    file's ``ui`` block (viewport, groups, ...). ``meta`` is free-form information about
    the workflow (title, description, author), kept verbatim.
    """

    graph: Graph
    ui: dict[str, Any] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return workflow_to_dict(self.graph, self.ui, self.meta)

    def save(self, path: str | os.PathLike[str]) -> None:
        save_workflow(path, self.graph, self.ui, self.meta)


# ============================================================================ reading
# Opening a file (which may be an image or another tool's format) starts at the front
# door, nodeflow.files.open; this module reads only nodeflow's own documents.
def read_document(text: str | bytes) -> Any:
    """Parsed JSON of a workflow file's bytes or text, within the size limit."""
    if len(text) > MAX_FILE_BYTES:
        raise WorkflowError(f"the file is larger than the limit of {MAX_FILE_BYTES // (1024 * 1024)} MB")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise WorkflowError(f"the file is not UTF-8 text (bad byte at offset {exc.start})") from None
    return _parse_json(text)


def is_native(data: Any) -> bool:
    """Whether parsed ``data`` claims to be a nodeflow document (it has a "format")."""
    return not (isinstance(data, dict) and "format" not in data)


def native_workflow(data: Any, registry: NodeRegistry, owned: bool = False) -> Workflow:
    """The :class:`Workflow` in a native document (any version). ``data`` is left as it
    is unless ``owned`` (the caller parsed it and hands it over)."""
    version = _check_document(data)
    return _build(data if owned else _copy_json(data), version, registry)


def check_limits(data: Any) -> None:
    """Refuse parsed JSON over the size limits, before anything looks inside it."""
    if isinstance(data, dict):
        _check_limits(data)


def _check_document(data: Any) -> int:
    """The format version of ``data``, once it is known to be a workflow within limits."""
    if not isinstance(data, dict):
        raise WorkflowError(f"the top level must be a JSON object, not {json_type(data)}")
    version = _check_format(data)
    _check_limits(data)
    return version


def _build(data: dict[str, Any], version: int, registry: NodeRegistry) -> Workflow:
    """The workflow in ``data`` (at format ``version``); takes parts of ``data`` over as they are."""
    try:
        data = migrate(data, WORKFLOW_VERSION)
    except MigrationError as exc:
        raise WorkflowError(f"cannot upgrade this version {version} workflow: {exc}") from None
    _check_keys(data, TOP_KEYS, "the top level")

    raw_nodes = _get(data, "nodes", list, [], "the top level")
    raw_links = _get(data, "links", list, [], "the top level")
    if len(raw_nodes) > MAX_NODES:
        raise WorkflowError(f"the workflow has {len(raw_nodes)} nodes; the limit is {MAX_NODES}")
    if len(raw_links) > MAX_LINKS:
        raise WorkflowError(f"the workflow has {len(raw_links)} links; the limit is {MAX_LINKS}")
    meta = _get(data, "meta", dict, {}, "the top level")
    ui = _get(data, "ui", dict, {}, "the top level")
    placements = _read_placements(ui)

    graph = Graph(registry)
    problems: list[Problem] = []
    first_index: dict[str, int] = {}
    renames: dict[str, Mapping[str, str]] = {}  # node id -> ports renamed since its saved version
    for index, raw in enumerate(raw_nodes):
        node_id = _add_node(graph, index, raw, placements, problems, renames)
        if node_id in first_index:
            raise WorkflowError(f"duplicate node id {node_id!r} (nodes[{first_index[node_id]}] and nodes[{index}])")
        first_index[node_id] = index
    link_index: dict[tuple[str, str], int] = {}
    for index, raw in enumerate(raw_links):
        _add_link(graph, index, raw, link_index, problems, renames)
    return Workflow(graph, _ui_without_placements(ui, graph), problems, meta)


def _parse_json(text: str) -> Any:
    try:
        return jsontext.loads(text, object_pairs_hook=_object_without_duplicates)
    except jsontext.JSONTextError as exc:
        if "nested too deeply" in str(exc):
            raise WorkflowError(f"the JSON is nested too deeply (the limit is {MAX_DEPTH} levels)") from None
        raise WorkflowError(str(exc)) from None


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        owner = f" (in the object with id {result['id']!r})" if isinstance(result.get("id"), str) else ""
        raise WorkflowError(f"duplicate key {duplicate!r} in a JSON object{owner}; one of the values would be lost")
    return result


_MAX_INT_BITS = int(jsontext.MAX_INT_DIGITS * 3.3219)  # what Python can still print (and JSON write)


def _check_limits(data: dict[str, Any]) -> None:
    """Nesting depth, string lengths and numbers JSON can write, in one pass without recursion.

    Only containers go on the stack (scalars are checked in place) and paths are
    worked out only for the error message, which keeps this a few ms for 1,000 nodes.
    """
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        container, depth = stack.pop()
        items = container.values() if isinstance(container, dict) else container
        for item in items:
            if isinstance(item, str):
                if len(item) > MAX_STRING_LENGTH:
                    path = _path_to(data, item)
                    raise WorkflowError(
                        f"the text at {path} is {len(item)} characters long; the limit is {MAX_STRING_LENGTH}"
                    )
            elif isinstance(item, float):
                if item != item or item in (math.inf, -math.inf):
                    raise WorkflowError(f"the number at {_path_to(data, item)} is {item}; numbers must be finite")
            elif isinstance(item, int):
                if item.bit_length() > _MAX_INT_BITS:
                    raise WorkflowError(
                        f"the number at {_path_to(data, item)} is {show(item)} "
                        f"(the limit is {jsontext.MAX_INT_DIGITS:,} digits)"
                    )
            elif isinstance(item, (dict, list)):
                if depth >= MAX_DEPTH:
                    raise WorkflowError(
                        f"the JSON is nested more than {MAX_DEPTH} levels deep (at {_path_to(data, item)})"
                    )
                stack.append((item, depth + 1))


def _path_to(root: Any, target: Any) -> str:
    """Where ``target`` (found by identity) sits in ``root``, e.g. ``nodes[2].values.seed``."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(root, ())]
    while stack:
        value, path = stack.pop()
        if value is target:
            return _path_text(path)
        if isinstance(value, dict) and len(path) <= MAX_DEPTH:
            stack.extend((item, path + (key,)) for key, item in value.items())
        elif isinstance(value, list) and len(path) <= MAX_DEPTH:
            stack.extend((item, path + (index,)) for index, item in enumerate(value))
    return "an unknown place"


def _check_format(data: dict[str, Any]) -> int:
    """The file's format version, after checking it is a workflow this code can read."""
    name = data.get("format")
    if name is None:
        raise WorkflowError(f"not a nodeflow workflow: the 'format' key is missing (expected {WORKFLOW_FORMAT!r})")
    if name != WORKFLOW_FORMAT:
        shown = repr(name) if isinstance(name, str) else show(name)
        raise WorkflowError(f"not a nodeflow workflow: 'format' is {shown}, expected {WORKFLOW_FORMAT!r}")
    version = data.get("version")
    if version is None:
        raise WorkflowError("the 'version' key is missing")
    if not is_int(version) or version < 0:
        raise WorkflowError(f"'version' must be a whole number of at least 0, not {show(version)}")
    if version > WORKFLOW_VERSION:
        raise WorkflowError(
            f"this workflow was saved by a newer nodeflow (format version {show(version)}; this nodeflow reads "
            f"versions up to {WORKFLOW_VERSION}); please update nodeflow"
        )
    return version


def _read_placements(ui: dict[str, Any]) -> dict[str, tuple[tuple[float, float], tuple[float, float] | None]]:
    """``ui.nodes``: node id -> (pos, size)."""
    entries = _get(ui, "nodes", dict, {}, "'ui'")
    placements = {}
    for node_id, entry in entries.items():
        if not isinstance(entry, dict):
            raise WorkflowError(f"ui.nodes[{node_id!r}] must be an object, not {json_type(entry)}")
        pos = _pair(entry.get("pos", (0, 0)), node_id, "pos")
        size = entry.get("size")
        placements[node_id] = (pos, None if size is None else _pair(size, node_id, "size"))
    return placements


def _pair(value: Any, node_id: str, key: str) -> tuple[float, float]:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        x, y = value
        if _is_coordinate(x) and _is_coordinate(y):
            return (x, y)
    shape = "[x, y]" if key == "pos" else "[width, height]"
    raise WorkflowError(f"ui.nodes[{node_id!r}].{key} must be two numbers {shape}, not {show(value)}")


MAX_COORDINATE = 1e9  # canvas units; far beyond any real layout, well inside float range


def _is_coordinate(value: Any) -> bool:
    """A finite number (not bool, a subclass of int) of sensible size: a position saved in a
    PNG or a file must read back as the same number (Infinity and NaN are not JSON)."""
    return type(value) in (int, float) and -MAX_COORDINATE <= value <= MAX_COORDINATE


def _add_node(
    graph: Graph, index: int, raw: Any, placements: dict, problems: list[Problem], renames: dict[str, Mapping[str, str]]
) -> str:
    where = f"nodes[{index}]"
    if not isinstance(raw, dict):
        raise WorkflowError(f"{where} must be an object, not {json_type(raw)}")
    node_id = raw.get("id")
    if not isinstance(node_id, str) or not node_id:
        raise WorkflowError(f"{where}: 'id' must be a non-empty string, not {show(node_id)}")
    where = f"nodes[{index}] (id {node_id!r})"
    _check_keys(raw, NODE_KEYS, where)
    type_name = raw.get("type")
    if not isinstance(type_name, str) or not type_name:
        raise WorkflowError(f"{where}: 'type' must be a non-empty string, not {show(type_name)}")
    title = _get(raw, "title", str, "", where)
    mode = _get(raw, "mode", str, NodeMode.NORMAL, where)  # an unknown mode is the validator's to report
    values = _get(raw, "values", dict, {}, where)
    stored = raw.get("version")
    if stored is not None and (not is_int(stored) or stored < 1):
        raise WorkflowError(f"{where}: 'version' must be a whole number of at least 1, not {show(stored)}")
    if node_id in graph.nodes:
        return node_id  # the caller reports the duplicate with both indices

    cls = graph.registry.get(type_name)
    version = stored
    if cls is not None and stored is not None:
        values, version, renames[node_id] = upgrade_node_values(cls, node_id, values, stored, problems)
    pos, size = placements.get(node_id, ((0, 0), None))
    node = graph.add_node(type_name, values, node_id, title, mode, pos, size, check=False)
    node.version = version
    return node_id


def _add_link(
    graph: Graph, index: int, raw: Any, link_index: dict[tuple[str, str], int], problems: list[Problem],
    renames: dict[str, Mapping[str, str]],
) -> None:
    if not isinstance(raw, dict):
        raise WorkflowError(f"links[{index}] must be an object with 'from' and 'to', not {json_type(raw)}")
    if raw.keys() != {"from", "to"}:
        _check_keys(raw, ("from", "to"), f"links[{index}]")
    source, output = _link_end(raw, "from", "output", index)
    target, input_name = _link_end(raw, "to", "input", index)
    output = renames.get(source, {}).get(output, output)
    input_name = renames.get(target, {}).get(input_name, input_name)

    nodes = graph.nodes
    if source not in nodes or target not in nodes:
        # Reported on the end that exists, so the editor can mark it.
        missing = source if source not in nodes else target
        at, field = (target, input_name) if target in nodes else (source, None)
        known = at in nodes
        problems.append(
            Problem(
                ProblemCode.DANGLING_LINK,
                f"the link {Link(source, output, target, input_name)} was dropped: there is no node {missing!r}",
                at if known else None,
                nodes[at].type if known else None,
                field if known else None,
            )
        )
        return
    first = link_index.setdefault((target, input_name), index)
    if first != index:
        raise WorkflowError(
            f"links[{index}]: input {input_name!r} of node {target!r} already has a link (links[{first}])"
        )
    graph.connect(source, output, target, input_name, check=False)


def _link_end(raw: dict[str, Any], key: str, port: str, index: int) -> tuple[str, str]:
    end = raw.get(key)
    if isinstance(end, dict) and len(end) == 2:
        node_id, name = end.get("node"), end.get(port)
        if isinstance(node_id, str) and isinstance(name, str) and node_id and name:
            return node_id, name
    raise WorkflowError(
        f"links[{index}]: {key!r} must be an object {{\"node\": id, \"{port}\": name}}, not {show(end)}"
    )


def _ui_without_placements(ui: dict[str, Any], graph: Graph) -> dict[str, Any]:
    """The ``ui`` block minus what moved onto the graph (positions, sizes) and minus
    entries for nodes that are not in it."""
    rest = dict(ui)
    entries = rest.pop("nodes", {})
    kept = {}
    for node_id, entry in entries.items():
        extra = {k: v for k, v in entry.items() if k not in ("pos", "size")}
        if extra and node_id in graph.nodes:
            kept[node_id] = extra
    if kept:
        rest["nodes"] = kept
    return rest


# ============================================================================ writing
def workflow_to_dict(
    graph: Graph, ui: dict[str, Any] | None = None, meta: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The JSON document for ``graph``, in a stable order; ``ui`` adds the editor's state
    beyond node positions (which the graph holds)."""
    order = sorted(graph.nodes, key=node_order_key)
    document: dict[str, Any] = {"format": WORKFLOW_FORMAT, "version": WORKFLOW_VERSION}
    if meta:
        document["meta"] = _copy_json(meta)
    document["nodes"] = [_node_entry(graph, graph.nodes[node_id]) for node_id in order]
    links = sorted(graph.iter_links(), key=lambda l: (node_order_key(l.target), l.input))
    document["links"] = [
        {"from": {"node": l.source, "output": l.output}, "to": {"node": l.target, "input": l.input}} for l in links
    ]
    ui_block = _ui_entry(graph, order, ui or {})
    if ui_block:
        document["ui"] = ui_block
    return document


def workflow_to_json(graph: Graph, ui: dict[str, Any] | None = None, meta: dict[str, Any] | None = None) -> str:
    """The file text for ``graph``: :func:`workflow_to_dict`, laid out for readable diffs.
    Raises WorkflowError naming the node and field of a value JSON cannot hold."""
    document = workflow_to_dict(graph, ui, meta)
    try:
        return _render(document) + "\n"
    except _Unwritable as exc:
        path = exc.path
        if len(path) >= 4 and path[0] == "nodes" and path[2] == "values":
            node = document["nodes"][path[1]]
            where = f'node {node["id"]} ({node["type"]}) field "{path[3]}"'
        else:
            where = _path_text(path)
        raise WorkflowError(f"cannot save {where}: {exc.reason}") from None


def save_workflow(
    path: str | os.PathLike[str], graph: Graph, ui: dict[str, Any] | None = None, meta: dict[str, Any] | None = None
) -> None:
    """Write ``graph`` to ``path`` atomically: the previous file survives any failure."""
    # A lone surrogate (JSON allows "\ud800") has no UTF-8 form; written as that same
    # escape, it reads back unchanged.
    write_atomically(path, workflow_to_json(graph, ui, meta).encode("utf-8", "backslashreplace"))


def _node_entry(graph: Graph, node: NodeInstance) -> dict[str, Any]:
    cls = graph.registry.get(node.type)
    entry: dict[str, Any] = {"id": node.id, "type": node.type, "title": node.title, "mode": node.mode}
    version = node.version if node.version is not None else (cls.version if cls is not None else None)
    if version is not None:
        entry["version"] = version
    if cls is not None:  # declaration order, then anything the class does not declare
        declared = [name for name in cls.inputs if name in node.values]
        names = declared + [name for name in node.values if name not in cls.inputs]
    else:
        names = list(node.values)
    entry["values"] = {name: _copy_json(node.values[name]) for name in names}
    return entry


def _ui_entry(graph: Graph, order: list[str], ui: dict[str, Any]) -> dict[str, Any]:
    extras = ui.get("nodes", {})
    nodes = {}
    for node_id in order:
        node = graph.nodes[node_id]
        extra = {k: v for k, v in sorted(extras.get(node_id, {}).items()) if k not in ("pos", "size")}
        if tuple(node.pos) == (0, 0) and node.size is None and not extra:
            continue  # the default; headless-built graphs get no ui block at all
        entry: dict[str, Any] = {"pos": [_number(v) for v in node.pos]}
        if node.size is not None:
            entry["size"] = [_number(v) for v in node.size]
        nodes[node_id] = {**entry, **_copy_json(extra)}
    block: dict[str, Any] = {"nodes": nodes} if nodes else {}
    for key in sorted(k for k in ui if k != "nodes"):
        block[key] = _copy_json(ui[key])
    return block


def _number(value: float) -> float | int:
    """120.0 is written as 120: shorter, and equal when read back."""
    value = float(value)  # also turns numpy scalars from a GUI into plain numbers
    return int(value) if value.is_integer() else value


class _Unwritable(Exception):
    def __init__(self, path: tuple[Any, ...], reason: str):
        super().__init__(reason)
        self.path, self.reason = path, reason


# Subtrees written on one line: a link, a node's ui entry, each value.
def _is_inline(path: tuple[Any, ...]) -> bool:
    return (
        (len(path) == 2 and path[0] == "links")
        or (len(path) == 3 and path[:2] == ("ui", "nodes"))
        or (len(path) == 4 and path[0] == "nodes" and path[2] == "values")
    )


def _render(value: Any, path: tuple[Any, ...] = (), level: int = 0) -> str:
    """JSON text, indented by structure rather than by depth (see ``_is_inline``)."""
    flat = isinstance(value, (list, tuple)) and not any(isinstance(v, (dict, list, tuple)) for v in value)
    if not isinstance(value, (dict, list, tuple)) or _is_inline(path) or flat or not value:
        try:
            return json.dumps(value, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise _Unwritable(path, str(exc)) from None
    inner, outer = "  " * (level + 1), "  " * level
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise _Unwritable(path, "object keys must be strings")
        items = [
            f"{inner}{json.dumps(k, ensure_ascii=False)}: {_render(v, path + (k,), level + 1)}" for k, v in value.items()
        ]
        return "{\n" + ",\n".join(items) + "\n" + outer + "}"
    items = [f"{inner}{_render(v, path + (i,), level + 1)}" for i, v in enumerate(value)]
    return "[\n" + ",\n".join(items) + "\n" + outer + "]"


# ============================================================================ helpers
def _get(obj: dict[str, Any], key: str, kind: type, default: Any, where: str) -> Any:
    value = obj.get(key, default)
    if not isinstance(value, kind):
        raise WorkflowError(f"{where}: {key!r} must be {_KIND_NAMES[kind]}, not {show(value)}")
    return value


_KIND_NAMES = {list: "a list", dict: "an object", str: "a string"}


def _check_keys(obj: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = [key for key in obj if key not in allowed]
    if unknown:
        raise WorkflowError(f"{where}: unknown key {unknown[0]!r} (expected {', '.join(allowed)})")


def _copy_json(value: Any) -> Any:
    """A deep copy of JSON-shaped data (much faster than copy.deepcopy); depth is
    bounded by MAX_DEPTH, checked before."""
    if isinstance(value, dict):
        return {key: _copy_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy_json(item) for item in value]
    return value




def _path_text(path: tuple[Any, ...]) -> str:
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    return text or "the top level"
