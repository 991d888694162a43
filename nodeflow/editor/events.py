"""What the editor controller tells its views, as types.

The controller forwards the graph's own edit events (:data:`nodeflow.model.graph.GraphEvent`)
and adds these. Views dispatch on the class (``isinstance`` or ``match``), never on a
name string, and the status bar knows an error by its :class:`StatusKind`, not by how
the message happens to begin.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Callable

from nodeflow.model.graph import GraphEvent


class StatusKind(str, Enum):
    INFO = "info"
    ERROR = "error"  # a refusal or a failure: shown in red until the next message


@dataclass(frozen=True)
class StatusChanged:
    message: str
    kind: StatusKind = StatusKind.INFO


@dataclass(frozen=True)
class GraphReplaced:
    """New, Open or a restored recovery copy: a different graph (and file) is shown."""

    graph: Any


@dataclass(frozen=True)
class Saved:
    path: Path


@dataclass(frozen=True)
class HistoryChanged:
    """An edit was done, undone or redone."""


@dataclass(frozen=True)
class SelectionChanged:
    """The controller changed the selection (select all, paste), not the user's click."""


@dataclass(frozen=True)
class RunBegan:
    pass


@dataclass(frozen=True)
class RunEnded:
    status: str


EditorEvent = GraphEvent | StatusChanged | GraphReplaced | Saved | HistoryChanged | SelectionChanged | RunBegan | RunEnded
Listener = Callable[[EditorEvent], None]
