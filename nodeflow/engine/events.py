"""Events the executor emits while it runs; the CLI and the editor listen to them.

They are plain frozen records so that a GUI thread can receive them from a worker
thread through a queue without sharing mutable state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Callable, Union


class RunStatus(StrEnum):
    """How a run ended (a ``str``: JSON reports and comparisons with "ok" are unchanged)."""

    OK = "ok"
    ERROR = "error"
    INTERRUPTED = "interrupted"
    INVALID = "invalid"


@dataclass(frozen=True)
class RunStarted:
    planned: tuple[str, ...]  # node ids the run needs, in execution order


@dataclass(frozen=True)
class NodeStarted:
    node_id: str
    node_type: str


@dataclass(frozen=True)
class NodeCached:
    node_id: str
    node_type: str


@dataclass(frozen=True)
class NodeFinished:
    node_id: str
    node_type: str
    seconds: float


@dataclass(frozen=True)
class NodeFailed:
    node_id: str
    node_type: str
    message: str
    field: str | None = None  # the input at fault, when the node named one (NodeError.field)


@dataclass(frozen=True)
class FileWritten:
    node_id: str
    path: Path


@dataclass(frozen=True)
class Progress:
    node_id: str
    step: int
    total: int
    preview: Any = None  # e.g. a PIL image of the current estimate; None when not offered


@dataclass(frozen=True)
class RunFinished:
    status: RunStatus
    seconds: float
    executed: tuple[str, ...] = ()
    cached: tuple[str, ...] = ()
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)


Event = Union[RunStarted, NodeStarted, NodeCached, NodeFinished, NodeFailed, FileWritten, Progress, RunFinished]
EventHandler = Callable[[Event], None]
