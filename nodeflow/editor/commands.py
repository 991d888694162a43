"""Undoable edits of the graph model.

Every change the editor makes is a :class:`Command` with ``do``/``undo`` against a
:class:`~nodeflow.model.graph.Graph`; the view never edits the model directly and undo
never restores GUI snapshots. A command records what it needs to reverse itself the
first time it runs (ids it created, the link it replaced, the value it overwrote), so
redo after undo recreates exactly the same ids and links.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from nodeflow.model.graph import Graph, GraphError, Link, NodeInstance


class Command:
    label: str = "edit"

    def do(self, graph: Graph) -> None:
        raise NotImplementedError

    def undo(self, graph: Graph) -> None:
        raise NotImplementedError

    def merge(self, newer: "Command") -> bool:
        """Absorb ``newer`` (just done) into this command; True if it did.

        Lets a slider drag or a node drag become one undo step instead of hundreds."""
        return False


def _restore(graph: Graph, nodes: Iterable[NodeInstance], links: Iterable[Link]) -> None:
    """Put removed nodes and links back exactly as they were (ids included)."""
    for node in nodes:
        added = graph.add_node(
            node.type, copy.deepcopy(node.values), node.id, node.title, node.mode, node.pos, node.size, check=False
        )
        added.version = node.version
    for link in sorted(set(links), key=lambda l: (l.target, l.input)):
        if graph.link_into(link.target, link.input) is None:
            graph.connect(link.source, link.output, link.target, link.input, check=False)


@dataclass
class AddNode(Command):
    type: str
    pos: tuple[float, float] = (0.0, 0.0)
    values: dict[str, Any] | None = None
    title: str = ""
    node_id: str | None = None  # fixed after the first do(), so redo reuses it
    label: str = "add node"

    def do(self, graph: Graph) -> None:
        node = graph.add_node(self.type, copy.deepcopy(self.values), self.node_id, self.title, pos=self.pos)
        self.node_id = node.id

    def undo(self, graph: Graph) -> None:
        assert self.node_id is not None
        graph.remove_node(self.node_id)


@dataclass
class RemoveNodes(Command):
    node_ids: Sequence[str]
    removed: list[NodeInstance] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    label: str = "delete"

    def do(self, graph: Graph) -> None:
        self.removed, self.links = [], []
        for node_id in self.node_ids:
            node, links = graph.remove_node(node_id)
            self.removed.append(node)
            self.links.extend(links)

    def undo(self, graph: Graph) -> None:
        _restore(graph, self.removed, self.links)


@dataclass
class Connect(Command):
    """Link an output to an input; an occupied input has its old link replaced, and
    undo puts the old link back (one step for the user)."""

    source: str
    output: str
    target: str
    input: str
    replaced: Link | None = None
    label: str = "link"

    def do(self, graph: Graph) -> None:
        _, self.replaced = graph.connect(self.source, self.output, self.target, self.input, replace=True)

    def undo(self, graph: Graph) -> None:
        graph.disconnect(self.target, self.input)
        if self.replaced is not None:
            r = self.replaced
            graph.connect(r.source, r.output, r.target, r.input, check=False)


@dataclass
class Disconnect(Command):
    target: str
    input: str
    link: Link | None = None
    label: str = "unlink"

    def do(self, graph: Graph) -> None:
        self.link = graph.disconnect(self.target, self.input)

    def undo(self, graph: Graph) -> None:
        assert self.link is not None
        graph.connect(self.link.source, self.link.output, self.link.target, self.link.input, check=False)


MERGE_WINDOW_S = 1.0  # edits of the same thing closer together than this are one undo step


@dataclass
class SetValue(Command):
    node_id: str
    name: str
    value: Any
    old: Any = None
    at: float = field(default_factory=time.monotonic)
    label: str = "change value"

    def do(self, graph: Graph) -> None:
        self.old = graph.set_value(self.node_id, self.name, self.value)
        self.value = graph.nodes[self.node_id].values[self.name]  # canonical form

    def undo(self, graph: Graph) -> None:
        try:
            graph.set_value(self.node_id, self.name, self.old)
        except GraphError:
            # The old value came from a file and was never valid; put it back as it was.
            graph.nodes[self.node_id].values[self.name] = self.old

    def merge(self, newer: Command) -> bool:
        if (
            isinstance(newer, SetValue)
            and (newer.node_id, newer.name) == (self.node_id, self.name)
            and newer.at - self.at < MERGE_WINDOW_S
        ):
            self.value, self.at = newer.value, newer.at
            return True
        return False


@dataclass
class Move(Command):
    """Move nodes to new positions: ``{node id: (x, y)}``."""

    positions: dict[str, tuple[float, float]]
    old: dict[str, tuple[float, float]] = field(default_factory=dict)
    label: str = "move"

    def do(self, graph: Graph) -> None:
        self.old = {nid: graph.move(nid, pos) for nid, pos in self.positions.items()}

    def undo(self, graph: Graph) -> None:
        for nid, pos in self.old.items():
            graph.move(nid, pos)


@dataclass
class SetMode(Command):
    node_ids: Sequence[str]
    mode: str
    old: dict[str, str] = field(default_factory=dict)
    label: str = "bypass"

    def do(self, graph: Graph) -> None:
        self.old = {nid: graph.set_mode(nid, self.mode) for nid in self.node_ids}

    def undo(self, graph: Graph) -> None:
        for nid, mode in self.old.items():
            graph.set_mode(nid, mode)


@dataclass
class SetTitle(Command):
    node_id: str
    title: str
    old: str = ""
    label: str = "rename"

    def do(self, graph: Graph) -> None:
        self.old = graph.set_title(self.node_id, self.title)

    def undo(self, graph: Graph) -> None:
        graph.set_title(self.node_id, self.old)


@dataclass(frozen=True)
class Clip:
    """Copied nodes and the links among them (links to outside nodes are not kept)."""

    nodes: tuple[NodeInstance, ...]
    links: tuple[Link, ...]

    @classmethod
    def of(cls, graph: Graph, node_ids: Iterable[str]) -> "Clip":
        chosen = [nid for nid in graph.nodes if nid in set(node_ids)]
        inside = set(chosen)
        links = tuple(l for l in graph.iter_links() if l.source in inside and l.target in inside)
        return cls(tuple(copy.deepcopy(graph.nodes[nid]) for nid in chosen), links)


@dataclass
class Paste(Command):
    """Add a clip's nodes under fresh ids, shifted by ``offset``, with their links."""

    clip: Clip
    offset: tuple[float, float] = (40.0, 40.0)
    new_ids: dict[str, str] = field(default_factory=dict)  # clip id -> graph id
    label: str = "paste"

    def do(self, graph: Graph) -> None:
        ids = dict(self.new_ids)
        for node in self.clip.nodes:
            new_id = ids.get(node.id) or graph.new_id()
            pos = (node.pos[0] + self.offset[0], node.pos[1] + self.offset[1])
            added = graph.add_node(
                node.type, copy.deepcopy(node.values), new_id, node.title, node.mode, pos, node.size, check=False
            )
            added.version = node.version
            ids[node.id] = new_id
        for link in self.clip.links:
            graph.connect(ids[link.source], link.output, ids[link.target], link.input, check=False)
        self.new_ids = ids

    def undo(self, graph: Graph) -> None:
        for new_id in self.new_ids.values():
            graph.remove_node(new_id)


@dataclass
class Compound(Command):
    """Several commands as one undo step; a failure part-way rolls back what was done."""

    commands: list[Command]
    label: str = "edit"

    def do(self, graph: Graph) -> None:
        done: list[Command] = []
        try:
            for command in self.commands:
                command.do(graph)
                done.append(command)
        except Exception:
            for command in reversed(done):
                command.undo(graph)
            raise

    def undo(self, graph: Graph) -> None:
        for command in reversed(self.commands):
            command.undo(graph)


class History:
    """The undo and redo stacks. ``revision`` identifies the current state, so the
    editor knows it is clean again after undoing back to the saved point."""

    def __init__(self, limit: int = 500):
        self.limit = limit
        self._undo: list[tuple[Command, int]] = []
        self._redo: list[tuple[Command, int]] = []
        self._serial = 0

    @property
    def revision(self) -> int:
        return self._undo[-1][1] if self._undo else 0

    def can_undo(self) -> bool:
        return bool(self._undo)

    def can_redo(self) -> bool:
        return bool(self._redo)

    def push(self, command: Command, graph: Graph) -> None:
        """Do ``command`` and record it; if it raises, nothing is recorded."""
        command.do(graph)
        self._redo.clear()
        if self._undo and self._undo[-1][0].merge(command):
            self._serial += 1
            self._undo[-1] = (self._undo[-1][0], self._serial)
            return
        self._serial += 1
        self._undo.append((command, self._serial))
        del self._undo[: -self.limit]

    def undo(self, graph: Graph) -> Command | None:
        if not self._undo:
            return None
        command, serial = self._undo.pop()
        command.undo(graph)
        self._redo.append((command, serial))
        return command

    def redo(self, graph: Graph) -> Command | None:
        if not self._redo:
            return None
        command, serial = self._redo.pop()
        command.do(graph)
        self._undo.append((command, serial))
        return command

    def clear(self) -> None:
        self._undo.clear()
        self._redo.clear()
