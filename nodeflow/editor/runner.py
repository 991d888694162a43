"""Running a graph from the editor: the executor works in a worker thread and its
events come back through a queue that the render loop drains with :meth:`Runner.poll`.

No execution logic lives here: this only starts the executor, forwards interrupt
and keeps what the view shows (node states, progress, previews, result pictures).
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from PIL import Image

from nodeflow.engine.events import (
    FileWritten,
    NodeCached,
    NodeFailed,
    NodeFinished,
    NodeStarted,
    Progress,
    RunFinished,
    RunStarted,
)
from nodeflow.model.graph import Graph
from nodeflow.editor.images import images_in_outputs, to_pil_images

# What the view colours a node by. "idle" means "not part of the last run".
NODE_STATES = ("idle", "queued", "running", "cached", "done", "error")
STRIP_LIMIT = 64  # per-step previews kept from the last run

# Node code (a run) and the editor's calls into node hooks (insight plots) may import the
# same libraries, and not every library imports safely from two threads at once; so they
# take turns: a run holds this lock throughout, a hook call waits for it.
NODE_CODE_LOCK = threading.Lock()


# What the worker thread puts on the queue besides the executor's own events.
@dataclass(frozen=True)
class WorkerDone:
    result: Any  # the executor's RunResult


@dataclass(frozen=True)
class WorkerFailed:
    message: str  # the run could not start (e.g. a graph that does not validate)


@dataclass(frozen=True)
class TaskDone:
    result: Any  # what a task (see Runner.start_task) returned
    status: str  # ok | error | interrupted, for the view
    error: str | None = None
    images: tuple[tuple[str, Image.Image], ...] = ()  # pictures for the result panel (a sweep's sheet)


@dataclass
class RunView:
    """Everything about the current (or last) run that the editor displays."""

    status: str = "idle"  # idle | running | ok | error | interrupted
    node_states: dict[str, str] = field(default_factory=dict)
    planned: tuple[str, ...] = ()
    finished_nodes: int = 0
    step: tuple[str, int, int] | None = None  # (node id, step, total) of the node sampling now
    current: str | None = None  # the node running now (e.g. loading a model: no steps yet)
    started_at: float = 0.0
    ended_at: float | None = None
    live_preview: Image.Image | None = None
    step_previews: list[Image.Image] = field(default_factory=list)
    images: list[tuple[str, Image.Image]] = field(default_factory=list)
    error: str | None = None
    error_node: str | None = None
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    written: list[Path] = field(default_factory=list)  # files the run wrote, in order

    @property
    def elapsed(self) -> float:
        if not self.started_at:
            return 0.0
        return (self.ended_at or time.monotonic()) - self.started_at

    @property
    def fraction(self) -> float:
        """Overall progress in [0, 1]: finished nodes plus the running node's steps."""
        if not self.planned:
            return 1.0 if self.status in ("ok",) else 0.0
        partial = self.step[1] / self.step[2] if self.step and self.step[2] else 0.0
        return min(1.0, (self.finished_nodes + partial) / len(self.planned))


ExecutorFactory = Callable[[Any], Any]


def _default_executor(registry: Any) -> Any:
    from nodeflow.engine.executor import Executor  # imported on first run: opening the editor stays fast

    return Executor(registry)


class Runner:
    def __init__(self, registry: Any, executor_factory: ExecutorFactory | None = None, run_options: dict | None = None):
        self.registry = registry
        self._factory = executor_factory or _default_executor
        self._executor: Any = None  # kept across runs so its cache makes re-runs fast
        self._events: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self.run_options = dict(run_options or {})
        self.view = RunView()
        self._task_stop: Callable[[], None] | None = None  # a task's own interrupt (set while one runs)
        self.task_items: list[Any] = []  # what the running task sent besides executor events, for its owner

    def executor(self) -> Any:
        """The executor runs use (made now if no run has made it yet)."""
        if self._executor is None:
            self._executor = self._factory(self.registry)
        return self._executor

    @property
    def running(self) -> bool:
        # Still "running" until poll() has applied the final events, so the view never
        # shows a finished run with stale node states.
        return (self._thread is not None and self._thread.is_alive()) or self.view.status == "running"

    def start(self, graph: Graph, outputs: list[str] | None = None, settings: dict[str, Any] | None = None) -> None:
        """Run a snapshot of ``graph`` (later edits do not touch the running copy);
        ``settings`` are added to the run options' settings for this run only."""
        if self.running:
            raise RuntimeError("a run is already in progress")
        if self._executor is None:
            self._executor = self._factory(self.registry)
        snapshot = graph.copy()
        self.view = RunView(status="running", started_at=time.monotonic())
        options = dict(self.run_options)
        if settings:
            from nodeflow.model.context import RunSettings

            options["settings"] = (options.get("settings") or RunSettings()).replace(**settings)
        self._thread = threading.Thread(target=self._work, args=(snapshot, outputs, options), name="nodeflow-run", daemon=True)
        self._thread.start()

    def start_task(self, work: Callable[[Any, Callable[[Any], None]], TaskDone],
                   stop: Callable[[], None] | None = None) -> None:
        """Run ``work(executor, send)`` on the run thread, with the executor runs keep (its
        cache included): many runs in one go, such as a sweep's points. Executor events it
        passes to ``send`` update :attr:`view` as a run's do (each run inside starts the node
        states afresh); anything else it sends is put on :attr:`task_items` by :meth:`poll`
        for the task's owner. ``work`` returns a :class:`TaskDone`; :meth:`interrupt` calls ``stop``."""
        if self.running:
            raise RuntimeError("a run is already in progress")
        executor = self.executor()
        self.view = RunView(status="running", started_at=time.monotonic())
        self.task_items = []
        self._task_stop = stop or (lambda: None)

        def task() -> None:
            try:
                with NODE_CODE_LOCK:
                    done = work(executor, self._events.put)
            except Exception as exc:  # a bug in the task must not leave the view running
                self._events.put(WorkerFailed(str(exc) or type(exc).__name__))
            else:
                self._events.put(done)

        self._thread = threading.Thread(target=task, name="nodeflow-task", daemon=True)
        self._thread.start()

    def forget_last_run(self) -> None:
        """Show no run (after New/Open: the last graph's pictures are not this one's)."""
        if not self.running:
            self.view = RunView()

    def interrupt(self) -> None:
        if self._executor is not None and self.running:
            if self._task_stop is not None:
                self._task_stop()
            self._executor.interrupt()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the worker ends and apply its events (for scripts and tests)."""
        if self._thread is not None:
            self._thread.join(timeout)
        self.poll()

    def _work(self, graph: Graph, outputs: list[str] | None, options: dict[str, Any]) -> None:
        try:
            with NODE_CODE_LOCK:
                result = self._executor.run(graph, outputs, on_event=self._events.put, **options)
        except Exception as exc:  # e.g. a graph that does not validate
            self._events.put(WorkerFailed(str(exc) or type(exc).__name__))
        else:
            self._events.put(WorkerDone(result))

    def poll(self, limit: int = 1000) -> bool:
        """Apply queued events to :attr:`view`; True if anything changed."""
        changed = False
        for _ in range(limit):
            try:
                item = self._events.get_nowait()
            except queue.Empty:
                break
            self._apply(item)
            changed = True
        return changed

    # ----------------------------------------------------------------- events
    def _apply(self, event: Any) -> None:
        view = self.view
        states = view.node_states
        if isinstance(event, RunStarted):
            if self._task_stop is not None:  # the next run of a task: a fresh start for the nodes
                view.node_states.clear()
                view.finished_nodes, view.error, view.error_node = 0, None, None
            view.planned = tuple(event.planned)
            for node_id in event.planned:
                states[node_id] = "queued"
        elif isinstance(event, NodeStarted):
            states[event.node_id] = "running"
            view.step, view.current = None, event.node_id
        elif isinstance(event, NodeCached):
            states[event.node_id] = "cached"
            view.finished_nodes += 1
        elif isinstance(event, NodeFinished):
            states[event.node_id] = "done"
            view.finished_nodes += 1
            view.step = None
        elif isinstance(event, NodeFailed):
            states[event.node_id] = "error"
            view.error, view.error_node = event.message, event.node_id
        elif isinstance(event, Progress):
            view.step = (event.node_id, event.step, event.total)
            pictures = to_pil_images(event.preview) if event.preview is not None else []
            if pictures:
                view.live_preview = pictures[0]
                view.step_previews.append(pictures[0])
                del view.step_previews[:-STRIP_LIMIT]
        elif isinstance(event, RunFinished):
            if self._task_stop is None:  # a task goes on after each of its runs
                self._finish(event.status, event.error)
        elif isinstance(event, FileWritten):
            if self._task_stop is None:  # a task's runs write to its own staging folders
                view.written.append(event.path)
        elif isinstance(event, WorkerDone):
            result = event.result
            view.outputs = dict(result.outputs)
            view.images = images_in_outputs(view.outputs, order=getattr(result, "executed", ()))
            for problem in getattr(result, "problems", ()):  # a graph that did not validate
                if problem.node_id is not None:
                    states[problem.node_id] = "error"
                    view.error_node = view.error_node or problem.node_id
            self._finish(result.status, getattr(result, "error", None))
        elif isinstance(event, TaskDone):
            self._task_stop = None
            view.images = list(event.images)
            self._finish(event.status, event.error)
        elif isinstance(event, WorkerFailed):
            self._task_stop = None
            self._finish("error", event.message)
        else:
            self.task_items.append(event)

    def _finish(self, status: str, error: str | None) -> None:
        view = self.view
        view.status = status
        view.ended_at = view.ended_at or time.monotonic()
        view.step = view.current = None
        if error and not view.error:
            view.error = error
        for node_id, state in view.node_states.items():
            if state in ("queued", "running"):
                view.node_states[node_id] = "idle"
