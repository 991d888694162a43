"""ComfyUI group nodes (the frontend's feature before subgraphs), inlined.

A UI-format file keeps each group node's definition in ``extra.groupNodes`` (name ->
``{"nodes", "links", "external", "config"}``); a node of the graph whose type is
``workflow>NAME`` (``workflow/NAME`` in files before frontend 1.2.63) is an instance of
one. Nothing in the file says which of the instance's inputs, outputs and widget values
belongs to which inner node: ComfyUI's frontend derives that from the definition, and so
does this module, by the same rules:

- inner nodes are addressed by their index in ``nodes``; a definition link is
  ``[origin index, origin slot, target index, target slot, ...]``, with ``None`` as the
  origin of a link that came from outside the group;
- the instance's widgets are the inner nodes' widgets in node order (a seed's "control
  after generate" value follows it), then the inner widgets converted to inputs that no
  inner link feeds;
- its inputs are the inner nodes' input slots that no inner link feeds, in node order,
  then those converted widgets (which the instance shows as inputs);
- its outputs are the inner nodes' outputs, in node order, except those used only inside
  the group (``external`` lists outputs used both inside and out); ``config`` can hide
  an input or output;
- an unlinked PrimitiveNode and a Reroute used only inside count for nothing.

Inlining happens on the file's JSON, before it is read: each instance is replaced by its
inner nodes (ids ``"<instance id>:<index>"``, ComfyUI's own execution ids for them, their
titles, positions moved to where the instance sits, the instance's mode, and the
instance's own title, which the importer keeps as a titled frame around them in
``ui.groups``), its widget values are written into them by name, and the links are rewired. A group inside a group
is inlined the same way, to a bounded depth, and so is a group node inside a subgraph's
definition (the file's ``extra.groupNodes`` defines it; its links to the definition's input
and output nodes are kept for the subgraph inliner).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from nodeflow.files.workflow import WorkflowError

from nodes.diffusion.comfyui import GROUP_TITLES_KEY

PREFIXES = ("workflow>", "workflow/")
MAX_DEPTH = 16  # group nodes inside group nodes; a group that contains itself must end


@dataclass
class _Interface:
    """What the frontend makes of one group definition."""

    widgets: list[tuple[str, int, str]] = field(default_factory=list)  # name, inner index, inner widget
    inputs: list[tuple[str, int, int]] = field(default_factory=list)  # name, inner index, inner slot
    outputs: list[tuple[int, int]] = field(default_factory=list)  # inner index, inner slot
    links_to: dict[int, dict[int, list[Any]]] = field(default_factory=dict)  # inner links by target


def group_definitions(data: dict[str, Any]) -> dict[str, Any]:
    extra = data.get("extra")
    groups = extra.get("groupNodes") if isinstance(extra, dict) else None
    return groups if isinstance(groups, dict) else {}


def group_name(type_name: Any) -> str | None:
    """``NAME`` for a node type ``workflow>NAME`` or ``workflow/NAME``."""
    if isinstance(type_name, str):
        for prefix in PREFIXES:
            if type_name.startswith(prefix):
                return type_name[len(prefix):]
    return None


def inline_group_nodes(data: dict[str, Any], widget_names: Any, max_nodes: int,
                       groups: dict[str, Any] | None = None) -> dict[str, Any]:
    """A copy of the UI document ``data`` (a file, or one of its subgraph definitions,
    whose group nodes the file's ``extra.groupNodes`` defines: ``groups``) with every group
    node instance replaced by its inner nodes. ``widget_names(type) -> tuple | None`` gives
    a ComfyUI node type's widget names (None: a type nodeflow cannot import); more than
    ``max_nodes`` nodes once inlined (groups of groups multiply) is refused before they are built."""
    groups = group_definitions(data) if groups is None else groups
    nodes = data.get("nodes")
    if not isinstance(nodes, list) or not any(isinstance(n, dict) and group_name(n.get("type")) is not None for n in nodes):
        return data
    out = dict(data)
    out["nodes"] = [copy.deepcopy(n) for n in nodes]
    out["links"] = copy.deepcopy(data.get("links")) if isinstance(data.get("links"), list) else []
    expander = _Expander(groups, widget_names, max_nodes)
    for _ in range(MAX_DEPTH + 1):
        if not expander.expand_once(out):
            return out
    raise WorkflowError(f"ComfyUI group nodes are nested more than {MAX_DEPTH} deep (does one contain itself?)")


class _Expander:
    def __init__(self, groups: dict[str, Any], widget_names: Any, max_nodes: int):
        self.groups = groups
        self.widget_names = widget_names
        self.max_nodes = max_nodes
        self.interfaces: dict[str, _Interface] = {}
        self.sizes: dict[str, int] = {}

    def size(self, name: str, instance: str, depth: int = 0) -> int:
        """How many nodes one instance of group ``name`` becomes, groups inside it inlined;
        past ``max_nodes`` it is refused, before an interface that large is built."""
        if name in self.sizes:
            return self.sizes[name]
        if depth > MAX_DEPTH:
            raise WorkflowError(f"ComfyUI group {name!r} contains itself")
        total = 0
        for inner in self.definition(name, instance)["nodes"]:
            inner_group = group_name(inner["type"])
            total += 1 if inner_group is None else self.size(inner_group, instance, depth + 1)
            if total > self.max_nodes:
                raise WorkflowError(f"the ComfyUI workflow has more than {self.max_nodes} nodes once its group nodes "
                                    f"are inlined (group node {instance}, group {name!r}); the limit is {self.max_nodes}")
        self.sizes[name] = total
        return total

    # ------------------------------------------------------------- the interface
    def definition(self, name: str, instance: str) -> dict[str, Any]:
        where = f"ComfyUI group node {instance} (group {name!r})"
        if name not in self.groups:
            raise WorkflowError(f"{where}: the file's extra.groupNodes does not define this group")
        definition = self.groups[name]
        if not isinstance(definition, dict) or not isinstance(definition.get("nodes"), list):
            raise WorkflowError(f"{where}: the definition has no 'nodes' list")
        if not definition["nodes"]:
            raise WorkflowError(f"{where}: the definition has no inner nodes")
        for index, inner in enumerate(definition["nodes"]):
            if not isinstance(inner, dict) or not isinstance(inner.get("type"), str):
                raise WorkflowError(f"{where}: inner node {index} needs a 'type'")
        count = len(definition["nodes"])
        for index, link in enumerate(_list_or_fail(definition.get("links"), f"{where}: 'links' must be a list")):
            if not (isinstance(link, list) and len(link) >= 4 and (link[0] is None or _index(link[0], count))
                    and _index(link[2], count) and all(_is_int(v) and v >= 0 for v in (link[1], link[3]))):
                raise WorkflowError(f"{where}: links[{index}] is not [origin, slot, target, slot] of inner nodes")
        _list_or_fail(definition.get("external", []), f"{where}: 'external' must be a list")
        return definition

    def interface(self, name: str, instance: str) -> _Interface:
        if name in self.interfaces:
            return self.interfaces[name]
        self.size(name, instance)
        definition = self.definition(name, instance)
        where = f"ComfyUI group node {instance} (group {name!r})"
        nodes = definition["nodes"]
        links_from: dict[int, dict[int, list[Any]]] = {}
        links_to: dict[int, dict[int, list[Any]]] = {}
        for link in definition.get("links") or []:
            if link[0] is None:
                continue  # came from outside the group: that slot is one of the instance's inputs
            links_from.setdefault(link[0], {}).setdefault(link[1], []).append(link)
            links_to.setdefault(link[2], {})[link[3]] = link
        external: dict[int, set[int]] = {}
        used_outside: dict[int, int] = {}  # inner index -> outputs at least, for a node saved without its list
        for entry in definition.get("external") or []:
            # Some frontends saved the node object instead of its index; the frontend then
            # matches nothing, and neither does this (the object only tells an output exists).
            if not (isinstance(entry, list) and len(entry) >= 2 and _is_int(entry[1])):
                continue
            if _is_int(entry[0]):
                external.setdefault(entry[0], set()).add(entry[1])
            held = entry[0].get("index") if isinstance(entry[0], dict) else entry[0]
            if _is_int(held):
                used_outside[held] = max(used_outside.get(held, 0), entry[1] + 1)
        config = definition.get("config") if isinstance(definition.get("config"), dict) else {}

        found = _Interface(links_to=links_to)
        seen: dict[str, int] = {}
        converted: list[tuple[int, dict[str, Any], int, str]] = []
        for index, inner in enumerate(nodes):
            kind = inner["type"]
            if kind == "PrimitiveNode" and index not in links_from:
                continue  # not linked: the frontend skips it
            if kind == "Reroute" and index in links_to and index in links_from and 0 not in external.get(index, set()):
                continue  # a reroute used inside only
            node_config = _dict(config.get(str(index)))
            inner_group = group_name(kind)
            if inner_group is not None:
                widgets: tuple[str, ...] | None = tuple(w[0] for w in self.interface(inner_group, instance).widgets)
            else:
                widgets = self.widget_names(kind)
            if widgets is None:
                raise WorkflowError(f"{where}: inner node {index} is a {kind}, a node type nodeflow cannot import")
            slots = [s if isinstance(s, dict) else {} for s in _list(inner.get("inputs"))]
            converted_names = {s.get("name") for s in slots
                               if isinstance(s.get("widget"), dict) and isinstance(s.get("name"), str)}
            for widget in widgets:
                if widget in converted_names:
                    continue
                label = _input_name(inner, widget, seen, node_config)
                found.widgets.append((label, index, widget))
            for slot, entry in enumerate(slots):
                name = entry.get("name") if isinstance(entry.get("name"), str) else ""
                if isinstance(entry.get("widget"), dict):
                    if slot not in links_to.get(index, {}):
                        converted.append((index, inner, slot, name))
                    continue
                if slot in links_to.get(index, {}):
                    continue
                if kind == "Reroute":
                    name = entry.get("type") if isinstance(entry.get("type"), str) else name
                label = _input_name(inner, name, seen, node_config)
                if _dict(_dict(node_config.get("input")).get(name)).get("visible") is False:
                    continue
                found.inputs.append((label, index, slot))
            for slot in range(_output_count(inner, links_from.get(index, {}), used_outside.get(index, 0))):
                used_inside = slot in links_from.get(index, {}) and slot not in external.get(index, set())
                visible = _dict(_dict(node_config.get("output")).get(str(slot))).get("visible", not used_inside)
                if visible:
                    found.outputs.append((index, slot))
        for index, inner, slot, name in converted:  # after every node, as the frontend adds them
            label = _input_name(inner, name, seen, _dict(config.get(str(index))))
            found.widgets.append((label, index, name))
            found.inputs.append((label, index, slot))
        self.interfaces[name] = found
        return found

    # ------------------------------------------------------------- inlining
    def expand_once(self, doc: dict[str, Any]) -> bool:
        nodes: list[Any] = doc["nodes"]
        if not any(isinstance(n, dict) and group_name(n.get("type")) is not None for n in nodes):
            return False
        links: list[Any] = doc["links"]
        out: list[Any] = []
        for position, raw in enumerate(nodes):
            name = group_name(raw.get("type")) if isinstance(raw, dict) else None
            if name is None:
                out.append(raw)
                continue
            node_id = raw.get("id")
            size = self.size(name, str(node_id))
            if len(out) + size + len(nodes) - position - 1 > self.max_nodes:
                raise WorkflowError(f"the ComfyUI workflow has more than {self.max_nodes} nodes once its group nodes "
                                    f"are inlined (group node {node_id}, group {name!r}); the limit is {self.max_nodes}")
            out.extend(self.expand(raw, name, links))
        doc["nodes"] = out
        return True

    def expand(self, instance: dict[str, Any], name: str, links: list[Any]) -> list[dict[str, Any]]:
        node_id = instance.get("id")
        if not isinstance(node_id, (int, str)) or isinstance(node_id, bool):
            raise WorkflowError(f"ComfyUI group node {name!r} has no valid 'id'")
        face = self.interface(name, str(node_id))
        where = f"ComfyUI group node {node_id} (group {name!r})"
        definition = self.groups[name]
        inner_nodes = [copy.deepcopy(n) for n in definition["nodes"]]
        prefix = f"{node_id}:"
        titles = [*_titles(instance), _own_title(instance, name)]  # kept as a frame around the inner nodes
        for index, inner in enumerate(inner_nodes):
            inner["id"] = f"{prefix}{index}"
            inner[GROUP_TITLES_KEY] = titles
            for slot in _list(inner.get("inputs")):
                if isinstance(slot, dict):
                    slot["link"] = None  # ids of the graph the group was made in
            if instance.get("mode") in (2, 4):
                inner["mode"] = instance["mode"]
        _place(inner_nodes, instance)

        # widget values: the inner node's own, then the instance's, by name
        values = {index: self._own_values(inner) for index, inner in enumerate(inner_nodes)}
        for (_, index, widget), value in _instance_values(instance.get("widgets_values"), face.widgets, inner_nodes).items():
            values[index][widget] = value
        for index, inner in enumerate(inner_nodes):
            inner["widgets_values"] = values[index]

        # links inside the group
        for number, link in enumerate(definition.get("links") or []):
            if link[0] is None:
                continue
            link_id = f"{prefix}link{number}"
            links.append([link_id, f"{prefix}{link[0]}", link[1], f"{prefix}{link[2]}", link[3],
                          link[5] if len(link) > 5 else "*"])
            _set_link(inner_nodes[link[2]], link[3], link_id, where)

        # links into the instance: slot inputs by position, converted widgets by name
        plain = [s for s in _list(instance.get("inputs")) if isinstance(s, dict) and not isinstance(s.get("widget"), dict)]
        by_label = {label: (index, slot) for label, index, slot in face.inputs}
        widget_by_label = {label: (index, widget) for label, index, widget in face.widgets}
        for position, entry in enumerate(plain):
            if _no_link(entry.get("link")):
                continue
            if position >= len(face.inputs):
                raise WorkflowError(f"{where}: input {position} ({entry.get('name')!r}) is not an input of the group")
            _, index, slot = face.inputs[position]
            _set_link(inner_nodes[index], slot, entry["link"], where)
        for entry in _list(instance.get("inputs")):
            if not isinstance(entry, dict) or not isinstance(entry.get("widget"), dict) or _no_link(entry.get("link")):
                continue
            label = entry["widget"].get("name")
            if not isinstance(label, str):
                raise WorkflowError(f"{where}: an input's widget has no name")
            if label in by_label:  # a converted inner widget: the instance shows it as an input
                index, slot = by_label[label]
                _set_link(inner_nodes[index], slot, entry["link"], where)
            elif label in widget_by_label:  # a widget of the instance converted to an input
                index, widget = widget_by_label[label]
                inputs = inner_nodes[index].setdefault("inputs", [])
                inputs.append({"name": widget, "widget": {"name": widget}, "link": entry["link"]})
            else:
                raise WorkflowError(f"{where}: input {label!r} is not a widget of the group")

        # links out of the instance: to the inner node behind each output
        for link in links:
            origin, slot = _link_origin(link)
            if str(origin) != str(node_id) or not _is_int(slot):
                continue
            if slot >= len(face.outputs):
                raise WorkflowError(f"{where}: output {slot} is used, but the group has {len(face.outputs)} outputs")
            index, inner_slot = face.outputs[slot]
            _set_link_origin(link, f"{prefix}{index}", inner_slot)
        return inner_nodes

    def _own_values(self, inner: dict[str, Any]) -> dict[str, Any]:
        from nodes.diffusion.comfyui import _widget_values

        inner_group = group_name(inner.get("type"))
        names = (tuple(w[0] for w in self.interfaces[inner_group].widgets) if inner_group in self.interfaces
                 else self.widget_names(inner.get("type")) or ())
        if inner_group is not None and inner_group in self.interfaces:
            face = self.interfaces[inner_group]
            own = _instance_values(inner.get("widgets_values"), face.widgets, self.groups[inner_group]["nodes"])
            return {widget[0]: value for widget, value in own.items()}
        return _widget_values(inner.get("widgets_values"), tuple(names))


def _titles(node: dict[str, Any]) -> list[str]:
    """The titles of the group instances ``node`` was itself inlined from (a group in a group)."""
    found = node.get(GROUP_TITLES_KEY)
    return list(found) if isinstance(found, list) else []


def _own_title(instance: dict[str, Any], name: str) -> str:
    """What the frontend shows on a group node: its title, else the group's name."""
    title = instance.get("title")
    return title if isinstance(title, str) and title.strip() else name


def _instance_values(values: Any, widgets: list[tuple[str, int, str]], inner_nodes: list[dict[str, Any]]) -> dict[tuple[str, int, str], Any]:
    """The instance's widget values by group widget (values by name, or in order); a
    seed's or a primitive's "control after generate" value that follows it is skipped."""
    from nodes.diffusion.comfyui import SEED_WIDGETS, SEED_CONTROLS, _is_seed_control, _widget_values

    by_label = {widget[0]: widget for widget in widgets}

    def controlled(label: str, value: Any) -> bool:
        _, index, inner_widget = by_label[label]
        if inner_nodes[index].get("type") == "PrimitiveNode":
            return isinstance(value, str) and value in SEED_CONTROLS
        return inner_widget in SEED_WIDGETS and _is_seed_control(value)

    found = _widget_values(values, tuple(by_label), controlled)
    return {by_label[label]: value for label, value in found.items()}


def _input_name(inner: dict[str, Any], name: str, seen: dict[str, int], config: dict[str, Any]) -> str:
    """The name the frontend gives an inner input on the group: its own, or prefixed by the
    inner node's title (or type) when an earlier node took it."""
    custom = _dict(_dict(config.get("input")).get(name)).get("name")
    label = next((s.get("label") for s in _list(inner.get("inputs"))
                  if isinstance(s, dict) and s.get("name") == name and isinstance(s.get("label"), str)), None)
    label = custom if isinstance(custom, str) else label if label is not None else name
    key = label
    title = inner.get("title") if isinstance(inner.get("title"), str) else inner.get("type")
    if (inner.get("type") == "PrimitiveNode" and inner.get("title")) or label in seen:
        key = label = f"{title} {name}"
        if label in seen:
            label = f"{title} {seen[label]} {name}"
    seen[key] = seen.get(key, 1) + 1
    return label


def _place(inner_nodes: list[dict[str, Any]], instance: dict[str, Any]) -> None:
    """Move the inner nodes so that their top-left corner is where the instance sits, as
    the frontend's "Convert to nodes" does."""
    from nodes.diffusion.comfyui import _ui_pair

    at = _ui_pair(instance.get("pos"))
    placed = [(n, _ui_pair(n.get("pos"))) for n in inner_nodes]
    known = [p for _, p in placed if p is not None]
    for node, pos in placed:
        if at is None or pos is None or not known:
            node.pop("pos", None)
            continue
        left, top = min(p[0] for p in known), min(p[1] for p in known)
        node["pos"] = [at[0] + pos[0] - left, at[1] + pos[1] - top]


def _output_count(inner: dict[str, Any], linked: dict[int, list[Any]], used_outside: int) -> int:
    """How many outputs an inner node has: its saved list's length, or, for a node saved
    without one (hand-reduced files), as many as its links and 'external' show."""
    if isinstance(inner.get("outputs"), list):
        return len(inner["outputs"])
    return max([used_outside, *(slot + 1 for slot in linked)])


def _set_link(inner: dict[str, Any], slot: int, link_id: Any, where: str) -> None:
    inputs = inner.get("inputs")
    if not isinstance(inputs, list) or slot >= len(inputs) or not isinstance(inputs[slot], dict):
        raise WorkflowError(f"{where}: inner node {inner['id']} ({inner['type']}) has no input slot {slot}")
    inputs[slot]["link"] = link_id


def _link_origin(link: Any) -> tuple[Any, Any]:
    if isinstance(link, list) and len(link) >= 5:
        return link[1], link[2]
    if isinstance(link, dict):
        return link.get("origin_id"), link.get("origin_slot")
    return None, None


def _set_link_origin(link: Any, origin: str, slot: int) -> None:
    if isinstance(link, list):
        link[1], link[2] = origin, slot
    else:
        link["origin_id"], link["origin_slot"] = origin, slot


def _no_link(value: Any) -> bool:
    return not isinstance(value, (int, str)) or isinstance(value, bool)


def _index(value: Any, count: int) -> bool:
    return _is_int(value) and 0 <= value < count


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _list_or_fail(value: Any, message: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise WorkflowError(message)
    return value


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
