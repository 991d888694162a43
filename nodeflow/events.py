"""Events the executor emits while it runs; the CLI and the editor listen to them.

They are plain frozen records so that a GUI thread can receive them from a worker
thread through a queue without sharing mutable state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Union


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


@dataclass(frozen=True)
class Progress:
    node_id: str
    step: int
    total: int
    preview: Any = None  # e.g. a PIL image of the current estimate; None when not offered


@dataclass(frozen=True)
class RunFinished:
    status: Literal["ok", "error", "interrupted", "invalid"]
    seconds: float
    executed: tuple[str, ...] = ()
    cached: tuple[str, ...] = ()
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)


Event = Union[RunStarted, NodeStarted, NodeCached, NodeFinished, NodeFailed, Progress, RunFinished]
EventHandler = Callable[[Event], None]
