"""The editor's Sweep, without a window: vary one or two fields of the selected nodes.

:class:`SweepSession` is what the Sweep dialog (:mod:`nodeflow.editor.sweep_dialog`)
shows and edits: the fields that can vary (widgets of the selected nodes not fed by a
link), up to two axes as ``NODE.FIELD`` plus a values text in the command line's
syntax (``1..4``, ``0.5..2:0.5``, ``4,6,8``, ``@FILE``), product or zip. :meth:`plan`
builds the sweep with :mod:`nodeflow.sweep` (every value checked by its field; an error
names the node and the field) and its cost against the editor's cache; :meth:`start`
runs it on the editor's run thread (:meth:`~nodeflow.editor.runner.Runner.start_task`),
on the executor single runs use, so work already done is not done again. No execution
logic here: the sweep package plans, runs and writes; this keeps the dialog's state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from nodeflow.editor.runner import TaskDone

MAX_AXES = 2

@dataclass(frozen=True)
class PointDone:
    """Sent from the run thread after each point."""

    index: int
    ok: bool
    error: str | None
    files: tuple[Path, ...]

@dataclass
class SweepState:
    status: str = "idle"  # idle | running | ok | error | interrupted
    total: int = 0
    done: int = 0  # points finished now or found done (resumed)
    skipped: int = 0
    failed: dict[int, str] = field(default_factory=dict)
    output_dir: Path | None = None
    sheet: Path | None = None
    sheet_image: Image.Image | None = None
    manifest: Path | None = None
    error: str | None = None
    seconds: float = 0.0

class SweepSession:
    def __init__(self, controller: Any):
        self.c = controller
        self.nodes: list[str] = []  # the selected nodes, when the dialog opened
        self.axes: list[tuple[str, str]] = []  # (NODE.FIELD, values text), at most MAX_AXES
        self.mode = "product"
        self.output_dir: Path | None = None  # None: a new folder per sweep under the output folder
        self.state = SweepState()
        self._sweep: Any = None

    # ------------------------------------------------------------ choosing
    def take_selection(self) -> str | None:
        """Vary fields of the nodes selected now; returns why not (nothing selected, no field)."""
        nodes = sorted(n for n in self.c.selection if n in self.c.graph.nodes)
        if not nodes:
            return "select the node(s) whose fields the sweep varies, then open Sweep again"
        self.nodes = nodes
        if not self.choices():
            return "the selected node(s) have no field a sweep can vary (fields fed by a link cannot)"
        self.axes = [axis for axis in self.axes if axis[0] in self.choices()][:MAX_AXES]
        if not self.axes:
            first = next(iter(self.choices()))
            self.axes = [(first, self.suggest(first))]
        return None

    def choices(self) -> dict[str, str]:
        """``NODE.FIELD`` -> a label (``Noise #5: seed``) for every field that can vary."""
        found = {}
        for node_id in self.nodes:
            cls = self.c.graph.node_class(node_id)
            for name in (cls.widgets() if cls is not None else {}):
                if self.c.graph.link_into(node_id, name) is None:
                    found[f"{node_id}.{name}"] = f"{self.c.label(node_id)}: {name}"
        return found

    def suggest(self, target: str) -> str:
        """A values text to start from: the field's current value (and the next, for numbers)."""
        node_id, _, name = target.rpartition(".")
        value = self.c.graph.nodes[node_id].values.get(name)
        if isinstance(value, bool) or value is None:
            return "" if value is None else str(value).lower()
        if isinstance(value, int):
            return f"{value}..{value + 1}"
        return str(value)

    def set_axis(self, index: int, target: str | None, spec: str | None = None) -> None:
        """Axis ``index`` (0 or 1) varies ``target`` over ``spec``; ``target`` None removes it."""
        axes = list(self.axes)
        if target is None:
            del axes[index:index + 1]
        elif index < len(axes):
            axes[index] = (target, axes[index][1] if spec is None and axes[index][0] == target else
                           spec if spec is not None else self.suggest(target))
        else:
            axes.append((target, spec if spec is not None else self.suggest(target)))
        self.axes = axes[:MAX_AXES]

    # ------------------------------------------------------------ planning
    def plan(self) -> Any:
        """The :class:`~nodeflow.sweep.Sweep` as chosen (costed against the cache), or the
        reason it cannot be built, as text naming the node and field."""
        from nodeflow.sweep import Sweep, SweepError, parse_axis

        if not self.axes:
            return "choose a field to vary"
        graph = self.c.graph.copy()
        try:
            axes = [parse_axis(f"{target}={spec.strip()}", graph, base_dir=self._base_dir())
                    for target, spec in self.axes]
            executor = self.c.runner.executor()
            options = self.c.runner.run_options

            return Sweep(graph, axes, self.mode, self.output_dir or self._new_folder(), options.get("settings"),
                         executor.device, self.c.ui, self.c.meta, source=str(self.c.path or self.c.opened_from or ""),
                         cached=executor.cache)
        except SweepError as exc:
            return self._readable(str(exc))
        except ValueError as exc:  # a device this machine lacks
            return str(exc)

    def cost_text(self, sweep: Any) -> str:
        plan = sweep.plan
        cached = sum(plan.cached.values())
        lines = [f"{len(plan.points)} point(s), {plan.total_executions} node execution(s) "
                 f"instead of {plan.naive} one by one",
                 "runs: " + ", ".join(f"{t} {n}" for t, n in sorted(plan.executions.items(), key=lambda kv: (-kv[1], kv[0])))]
        lines.append(f"already in the cache: {cached} step(s)" + (
            " (" + ", ".join(f"{t} {n}" for t, n in sorted(plan.cached.items())) + ")" if cached else ""))
        return "\n".join(lines)

    def _readable(self, message: str) -> str:
        """The sweep parser speaks the command line's ``--vary 5.seed=...:``; the dialog names the node."""
        message = message.removeprefix("--vary ")
        target, _, rest = message.partition(": ")
        node_id = target.partition("=")[0].rpartition(".")[0]
        if rest and node_id in self.c.graph.nodes:
            return f"{self.c.label(node_id)}: {rest}"
        return message

    def _base_dir(self) -> Path:
        source = self.c.path or self.c.opened_from
        return source.parent if source is not None else Path.cwd()

    def _new_folder(self) -> Path:
        root = Path(self.c.runner.run_options.get("output_dir", "output")) / "sweeps"
        stem = (self.c.path or self.c.opened_from or Path("sweep")).stem
        folder = root / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        n = 1
        while folder.exists():
            folder, n = root / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{n}", n + 1
        return folder

    # ------------------------------------------------------------ running
    @property
    def running(self) -> bool:
        return self.state.status == "running"

    def start(self) -> str | None:
        """Plan and run the sweep on the run thread; returns why not, or None."""
        if self.c.runner.running:
            return "a run is already in progress"
        sweep = self.plan()
        if isinstance(sweep, str):
            return sweep
        self._sweep = sweep
        self.state = SweepState(status="running", total=len(sweep.plan.points), output_dir=sweep.output_dir)
        input_dir = self.c.runner.run_options.get("input_dir", "input")

        def work(executor: Any, send: Any) -> TaskDone:
            backend = sweep.local_backend(executor, input_dir)
            try:
                result = sweep.run(backend, on_event=send, on_point=lambda outcome: send(PointDone(
                    outcome.index, outcome.status == "ok", outcome.error,
                    tuple(sweep.result.files.get(outcome.index, ())))))
            finally:
                backend.close()
            status = "interrupted" if result.interrupted else "ok" if result.ok else "error"
            error = result.error or next(iter(result.failed.values()), None)
            images = ()
            if result.sheet is not None and result.sheet.is_file():
                with Image.open(result.sheet) as sheet:
                    images = (("sheet", sheet.convert("RGB")),)
            send(result)
            return TaskDone(result, status, error, images)

        self.c.runner.start_task(work, stop=sweep.interrupt)
        self.c.say(f"sweeping {len(sweep.plan.points)} point(s) into {sweep.output_dir}...")
        return None

    def stop(self) -> None:
        if self.running:
            self.c.interrupt()

    def poll(self) -> bool:
        """Take what the run thread sent (call after the controller's poll); True if anything changed."""
        items, self.c.runner.task_items[:] = list(self.c.runner.task_items), []
        changed = False
        for item in items:
            changed = True
            if isinstance(item, PointDone):
                self.state.done += 1
                if not item.ok:
                    self.state.failed[item.index] = item.error or "failed"
                self.c.written.extend(p for p in item.files if p not in self.c.written)
            elif hasattr(item, "plan") and hasattr(item, "skipped"):  # the SweepResult, at the end
                self._finished(item)
        if self.running and not self.c.runner.running:  # the task failed before a result came back
            self.state.status, self.state.error = "error", self.c.runner.view.error
            self.c.complain(f"sweep failed: {self.state.error}")
            changed = True
        return changed

    def _finished(self, result: Any) -> None:
        state = self.state
        state.skipped = len(result.skipped)
        state.done = len(result.ran) + len(result.skipped)
        state.failed = dict(result.failed)
        state.status = "interrupted" if result.interrupted else "ok" if result.ok else "error"
        state.error = result.error or next(iter(result.failed.values()), None)
        state.manifest, state.seconds = result.manifest, result.seconds
        if result.sheet is not None and result.sheet.is_file():
            state.sheet = result.sheet
            with Image.open(result.sheet) as sheet:
                state.sheet_image = sheet.convert("RGB")
            self.c.written.append(result.sheet)
        where = f"; sheet {state.sheet}" if state.sheet else ""
        counts = f"{len(result.ran)} point(s) run, {state.skipped} already done"
        if state.status == "ok":
            self.c.say(f"sweep finished in {result.seconds:.1f} s: {counts}{where}")
        elif state.status == "interrupted":
            self.c.say(f"sweep stopped after {state.done} of {state.total} point(s){where}")
        else:
            self.c.complain(f"sweep: {len(result.failed)} point(s) failed: {state.error}")
