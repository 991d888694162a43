"""The graph model: the single source of truth for the editor, the validator, the
workflow files and the executor.

Nodes are :class:`NodeInstance` records; a :class:`Link` joins one node's output to
another node's input. The links table (``links``, keyed by target input) is the one
source of topology: it is what is saved, what the planner walks (its own depth-first
walk over each node's inputs in declaration order, so a plan's order is deterministic;
see :func:`nodeflow.engine.plan.build_plan`), and what two small indexes (links into
and out of each node) are kept beside for ancestry and neighbours. networkx answers the
questions it is best at, on a ``DiGraph`` built from the links when asked (:attr:`dag`):
naming every loop of a graph that has one (validation) and layered layouts (the
editor). It is imported only then, so listing and validating a graph without a loop
never pay for importing it.

Edits refuse what is wrong with a :class:`GraphError` whose message says why. A
workflow read from disk may be wrong in ways an edit would refuse (unknown types,
mismatched links, cycles); it is loaded with ``check=False`` so nothing in it is lost
and :mod:`nodeflow.model.validation` can report every problem at once.
"""

from __future__ import annotations

import copy
import difflib
import itertools
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Callable, Iterable, Iterator

from nodeflow.model.fields import FieldError, Socket, Widget
from nodeflow.model.node import Node
from nodeflow.model.registry import NodeRegistry
from nodeflow.model.types import is_compatible

class NodeMode(StrEnum):
    """How a node takes part in a run (a ``str``: files store the value)."""

    NORMAL = "normal"
    BYPASS = "bypass"  # does not run; each output passes on its first input of the same type



_ATOMIC = (str, int, float, bool, type(None))  # values that copying may share
MODES: tuple[str, ...] = tuple(NodeMode)


class GraphError(ValueError):
    """An edit the graph refuses; ``node_id``/``field`` say where, the message says why."""

    def __init__(self, message: str, node_id: str | None = None, field: str | None = None):
        super().__init__(message)
        self.node_id = node_id
        self.field = field


@dataclass
class NodeInstance:
    id: str
    type: str
    values: dict[str, Any] = field(default_factory=dict)
    title: str = ""
    mode: str = NodeMode.NORMAL  # a str: a file may name a mode that validation then reports
    pos: tuple[float, float] = (0.0, 0.0)
    size: tuple[float, float] | None = None
    # The node type version its values follow, as read from a file; None means the
    # installed class's version. Kept so a re-save writes unknown types back unchanged.
    version: int | None = None


@dataclass(frozen=True)
class Link:
    source: str
    output: str
    target: str
    input: str

    def __str__(self) -> str:
        return f"{self.source}.{self.output} -> {self.target}.{self.input}"


# ------------------------------------------------------------------ edit events
# What a subscriber (the editor's canvas) is told after each edit: one small frozen
# type per kind of change, so listeners dispatch on the type, not on a name string.
@dataclass(frozen=True)
class NodeAdded:
    node: NodeInstance


@dataclass(frozen=True)
class NodeRemoved:
    node: NodeInstance
    links: tuple[Link, ...]


@dataclass(frozen=True)
class LinkAdded:
    link: Link
    replaced: Link | None


@dataclass(frozen=True)
class LinkRemoved:
    link: Link


@dataclass(frozen=True)
class ValueChanged:
    node: NodeInstance
    name: str
    old: Any
    value: Any


@dataclass(frozen=True)
class NodeChanged:
    """The node's title or mode changed."""

    node: NodeInstance


@dataclass(frozen=True)
class NodeMoved:
    node: NodeInstance


GraphEvent = NodeAdded | NodeRemoved | LinkAdded | LinkRemoved | ValueChanged | NodeChanged | NodeMoved
Listener = Callable[[GraphEvent], None]


class Graph:
    def __init__(self, registry: NodeRegistry):
        self.registry = registry
        self.nodes: dict[str, NodeInstance] = {}
        # Each input takes at most one link, so links are keyed by their target end.
        self.links: dict[tuple[str, str], Link] = {}
        self._into: dict[str, set[Link]] = {}  # node id -> links into it (an index of ``links``)
        self._out: dict[str, set[Link]] = {}  # node id -> links out of it
        self._listeners: list[Listener] = []
        self._ids = itertools.count(1)

    # ------------------------------------------------------------------ queries
    def node_class(self, node_id: str) -> type[Node] | None:
        return self.registry.get(self.nodes[node_id].type)

    def link_into(self, node_id: str, input_name: str) -> Link | None:
        return self.links.get((node_id, input_name))

    def links_into(self, node_id: str) -> list[Link]:
        return list(self._into.get(node_id, ()))

    def links_from(self, node_id: str) -> list[Link]:
        return list(self._out.get(node_id, ()))

    def iter_links(self) -> Iterator[Link]:
        return iter(list(self.links.values()))

    def ancestors(self, node_ids: Iterable[str]) -> set[str]:
        """The given nodes and everything upstream of them."""
        result: set[str] = set()
        pending = [node_id for node_id in node_ids if node_id in self.nodes]
        while pending:
            node_id = pending.pop()
            if node_id not in result:
                result.add(node_id)
                pending.extend(link.source for link in self._into.get(node_id, ()))
        return result

    @property
    def dag(self):
        """A networkx ``DiGraph`` of this graph as it is now: one edge per connected pair
        of nodes, its ``links`` attribute the set of links between them. Built on each
        access (cheap next to what networkx then computes); edits go through the Graph."""
        import networkx as nx

        view = nx.DiGraph()
        view.add_nodes_from(self.nodes)
        for link in self.links.values():
            if view.has_edge(link.source, link.target):
                view.edges[link.source, link.target]["links"].add(link)
            else:
                view.add_edge(link.source, link.target, links={link})
        return view

    def find_node(self, ref: str) -> str:
        """The id of the node whose id or (unique) title is ``ref``, as users name nodes
        on the command line and in scripts."""
        ref = str(ref)
        if ref in self.nodes:
            return ref
        titled = [nid for nid, node in self.nodes.items() if node.title == ref]
        if len(titled) == 1:
            return titled[0]
        if titled:
            raise GraphError(f"more than one node is titled {ref!r} ({', '.join(titled)}); use the id")
        names = list(self.nodes) + [n.title for n in self.nodes.values() if n.title]
        hint = difflib.get_close_matches(ref, names, n=1)
        raise GraphError(f"there is no node with id or title {ref!r}" + (f"; did you mean {hint[0]!r}?" if hint else ""))

    def output_nodes(self) -> list[str]:
        return [
            nid
            for nid, node in self.nodes.items()
            if (cls := self.registry.get(node.type)) is not None and cls.output_node
        ]

    def check_link(self, source: str, output: str, target: str, input_name: str) -> str | None:
        """Why this link may not be made (replacing an occupied input is allowed), or None."""
        for node_id in (source, target):
            if node_id not in self.nodes:
                return f"there is no node {node_id!r}"
        if source == target:
            return "a node cannot feed itself"
        src_cls, dst_cls = self.node_class(source), self.node_class(target)
        if src_cls is None or dst_cls is None:
            missing = self.nodes[source if src_cls is None else target].type
            return f"node type {missing!r} is not installed"
        out = src_cls.output(output)
        if out is None:
            return f"{src_cls.type} has no output {output!r}"
        inp = dst_cls.inputs.get(input_name)
        if inp is None:
            return f"{dst_cls.type} has no input {input_name!r}"
        if not is_compatible(out.data_type, inp.data_type):
            return f"{src_cls.type}.{output} gives {out.type}, but {dst_cls.type}.{input_name} takes {inp.data_type}"
        if target in self.ancestors([source]):
            return "the link would make a cycle"
        return None

    # -------------------------------------------------------------------- edits
    def new_id(self) -> str:
        while True:
            candidate = str(next(self._ids))
            if candidate not in self.nodes:
                return candidate

    def add_node(
        self,
        type_name: str,
        values: dict[str, Any] | None = None,
        node_id: str | None = None,
        title: str = "",
        mode: str = NodeMode.NORMAL,
        pos: tuple[float, float] = (0.0, 0.0),
        size: tuple[float, float] | None = None,
        check: bool = True,
    ) -> NodeInstance:
        """Add a node; values not given take the declared defaults.

        With ``check=False`` (loading files) unknown types and bad values are kept as
        they are, for the validator to report.
        """
        node_id = node_id if node_id is not None else self.new_id()
        if not isinstance(node_id, str) or not node_id:
            raise GraphError(f"invalid node id {node_id!r}")
        if node_id in self.nodes:
            raise GraphError(f"a node with id {node_id!r} already exists", node_id)
        cls = self.registry.get(type_name)
        if check and cls is None:
            raise GraphError(f"unknown node type {type_name!r}", node_id)
        if mode not in MODES:
            if check:
                raise GraphError(f"mode must be one of {', '.join(MODES)}, not {mode!r}", node_id)
        full = cls.default_values() if cls is not None else {}
        for name, value in (values or {}).items():
            if check:
                full[name] = self._checked_value(cls, node_id, name, value)  # type: ignore[arg-type]
            else:
                full[name] = value
        node = NodeInstance(node_id, type_name, full, title, mode, tuple(pos), size)  # type: ignore[arg-type]
        self.nodes[node_id] = node
        self._emit(NodeAdded(node))
        return node

    def remove_node(self, node_id: str) -> tuple[NodeInstance, list[Link]]:
        """Remove a node and its links; returns both so the removal can be undone."""
        node = self._node(node_id)
        removed = self.links_into(node_id) + self.links_from(node_id)
        for link in removed:
            self._drop_link(link)
        del self.nodes[node_id]
        self._into.pop(node_id, None)
        self._out.pop(node_id, None)
        self._emit(NodeRemoved(node, tuple(removed)))
        return node, removed

    def connect(
        self,
        source: str,
        output: str,
        target: str,
        input_name: str,
        replace: bool = False,
        check: bool = True,
    ) -> tuple[Link, Link | None]:
        """Link ``source.output`` to ``target.input``. An occupied input is refused
        unless ``replace`` (the editor's drag-onto-occupied-pin), which drops the old
        link. Returns ``(new link, replaced link or None)``."""
        replaced = self.links.get((target, input_name))
        if check:
            reason = self.check_link(source, output, target, input_name)
            if reason is None and replaced is not None and not replace:
                reason = f"input {input_name!r} already has a link (from {replaced.source}.{replaced.output})"
            if reason:
                raise GraphError(f"cannot link {source}.{output} to {target}.{input_name}: {reason}", target, input_name)
        else:
            self._node(source)
            self._node(target)
        if replaced is not None:
            self._drop_link(replaced)
        link = Link(source, output, target, input_name)
        self._index(link)
        self._emit(LinkAdded(link, replaced))
        return link, replaced

    def disconnect(self, target: str, input_name: str) -> Link:
        link = self.links.get((target, input_name))
        if link is None:
            raise GraphError(f"input {target}.{input_name} is not connected", target, input_name)
        self._drop_link(link)
        self._emit(LinkRemoved(link))
        return link

    def set_value(self, node_id: str, name: str, value: Any) -> Any:
        """Set a widget value after checking it; returns the previous value."""
        node = self._node(node_id)
        cls = self.registry.get(node.type)
        if cls is None:
            raise GraphError(f"unknown node type {node.type!r}", node_id)
        value = self._checked_value(cls, node_id, name, value)
        old = node.values.get(name)
        node.values[name] = value
        self._emit(ValueChanged(node, name, old, value))
        return old

    def set_mode(self, node_id: str, mode: str) -> str:
        node = self._node(node_id)
        if mode not in MODES:
            raise GraphError(f"mode must be one of {', '.join(MODES)}, not {mode!r}", node_id)
        old, node.mode = node.mode, mode
        self._emit(NodeChanged(node))
        return old

    def set_title(self, node_id: str, title: str) -> str:
        node = self._node(node_id)
        old, node.title = node.title, str(title)
        self._emit(NodeChanged(node))
        return old

    def move(self, node_id: str, pos: tuple[float, float]) -> tuple[float, float]:
        node = self._node(node_id)
        old, node.pos = node.pos, (float(pos[0]), float(pos[1]))
        self._emit(NodeMoved(node))
        return old

    def copy(self) -> "Graph":
        """An independent copy (values deep-copied), e.g. the executor's snapshot of a run.

        Built in bulk rather than edit by edit (it is on the path of every run). The node
        and link tables are each read in one step (``list`` of a dict holds the GIL), so
        copying from a worker thread while the GUI edits cannot fail half-way; a link whose
        node vanished in between is left out.
        """
        nodes, links = list(self.nodes.values()), list(self.links.values())
        other = Graph(self.registry)
        for node in nodes:
            values = dict(node.values)  # one step, like the tables above
            if not all(type(v) in _ATOMIC for v in values.values()):
                values = copy.deepcopy(values)
            other.nodes[node.id] = NodeInstance(
                node.id, node.type, values, node.title, node.mode, node.pos, node.size, node.version
            )
        for link in links:
            if link.source in other.nodes and link.target in other.nodes:
                other._index(link)
        return other

    # ---------------------------------------------------------------- listeners
    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event)`` with a :data:`GraphEvent` after each edit; returns an
        unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    # ------------------------------------------------------------------ helpers
    def _node(self, node_id: str) -> NodeInstance:
        try:
            return self.nodes[node_id]
        except KeyError:
            raise GraphError(f"there is no node {node_id!r}") from None

    def _checked_value(self, cls: type[Node], node_id: str, name: str, value: Any) -> Any:
        field_decl = cls.inputs.get(name)
        if field_decl is None:
            raise GraphError(f"{cls.type} has no field {name!r}", node_id, name)
        if isinstance(field_decl, Socket) or not isinstance(field_decl, Widget):
            raise GraphError(f"{cls.type}.{name} is a socket; it takes a link, not a value", node_id, name)
        try:
            return field_decl.validate(value)
        except FieldError as exc:
            raise GraphError(f"{cls.type}.{name}: {exc}", node_id, name) from None

    def _index(self, link: Link) -> None:
        self.links[(link.target, link.input)] = link
        self._into.setdefault(link.target, set()).add(link)
        self._out.setdefault(link.source, set()).add(link)

    def _drop_link(self, link: Link) -> None:
        del self.links[(link.target, link.input)]
        self._into[link.target].discard(link)
        self._out[link.source].discard(link)

    def _emit(self, event: GraphEvent) -> None:
        for listener in list(self._listeners):
            listener(event)
