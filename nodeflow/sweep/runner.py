"""A sweep from start to end: plan, skip what is done, run the rest, write what came back.

The driver (this module) is the only writer of the output folder whatever runs the
points: the local :class:`LocalBackend` or the Ray backend (``nodeflow.sweep.ray``), both
of which hand back a :class:`~nodeflow.sweep.worker.PointOutcome` per point as soon as
it is done. For each it writes the point's files, its manifest entry and advances the
progress bar; at the end it draws the contact sheet from every point's first image.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from nodeflow.engine.events import EventHandler
from nodeflow.engine.executor import Executor
from nodeflow.files.atomic import write_atomically
from nodeflow.files.workflow import workflow_to_dict
from nodeflow.model.context import RunSettings
from nodeflow.model.graph import Graph
from nodeflow.model.validation import run_outputs, validate
from nodeflow.sweep.axes import Axis, SweepError, points as make_points
from nodeflow.sweep.manifest import Manifest, file_names
from nodeflow.sweep.models import ModelFile, model_files
from nodeflow.sweep.plan import PointPlan, SweepPlan, plan_sweep
from nodeflow.sweep.sheet import contact_sheet
from nodeflow.sweep.worker import PointOutcome, PointRunner

SHEET_NAME = "sheet.png"


@dataclass
class SweepResult:
    plan: SweepPlan
    output_dir: Path
    manifest: Path
    ran: list[int] = field(default_factory=list)  # point indexes run now, in completion order
    skipped: list[int] = field(default_factory=list)  # already done on disk (resumed)
    failed: dict[int, str] = field(default_factory=dict)
    executed: Counter = field(default_factory=Counter)  # node type -> runs, over the points run now
    files: dict[int, list[Path]] = field(default_factory=dict)
    sheet: Path | None = None
    interrupted: bool = False
    seconds: float = 0.0
    error: str | None = None  # the backend could not go on (e.g. every Ray actor died)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted and self.error is None

    def summary(self) -> dict[str, Any]:
        return {
            "status": "interrupted" if self.interrupted else "ok" if self.ok else "error", "error": self.error,
            "plan": self.plan.summary(),
            "ran": len(self.ran), "skipped": len(self.skipped),
            "failed": {str(k): v for k, v in self.failed.items()},
            "executed_by_type": dict(sorted(self.executed.items())),
            "seconds": round(self.seconds, 3),
            "manifest": str(self.manifest), "sheet": str(self.sheet) if self.sheet else None,
        }


class LocalBackend:
    """Runs the points one after another in this process, on one executor."""

    name = "local"

    def __init__(self, runner: PointRunner):
        self.runner = runner
        self._stop = threading.Event()

    def run(self, points: Sequence[PointPlan], models: Sequence[ModelFile],
            deliver: Callable[[PointPlan, PointOutcome], None], on_event: EventHandler | None = None) -> None:
        for planned in points:
            if self._stop.is_set():
                return
            deliver(planned, self.runner.run(planned.point, models, on_event))

    def interrupt(self) -> None:
        self._stop.set()
        self.runner.interrupt()

    def close(self) -> None:
        self.runner.close()


class Sweep:
    """One workflow, its axes, and where the results go; :meth:`plan` costs it, :meth:`run` runs it."""

    def __init__(self, graph: Graph, axes: Sequence[Axis], mode: str = "product",
                 output_dir: str | os.PathLike[str] = "sweep", settings: RunSettings | None = None,
                 device: str = "cpu", ui: Mapping[str, Any] | None = None, meta: Mapping[str, Any] | None = None,
                 problems: Iterable[Any] = (), source: str = "", cached: Any = ()):
        self.graph, self.axes, self.mode = graph, tuple(axes), mode
        self.output_dir = Path(output_dir)
        self.settings = settings if settings is not None else RunSettings()
        self.device = device
        self.ui, self.meta, self.problems = dict(ui or {}), dict(meta or {}), list(problems)
        self.source = source
        found = validate(graph, run_outputs(graph), self.problems)  # what each point's run runs
        if found:
            raise SweepError("the workflow is not valid: " + "; ".join(str(p) for p in found))
        self.points = make_points(self.axes, mode)
        self.plan: SweepPlan = plan_sweep(graph, self.axes, self.points, self.output_dir, device, self.settings,
                                          cached, mode)
        planned_nodes = {s.node_id for p in self.plan.points for s in p.steps}
        self.models = model_files(graph, sorted(planned_nodes), self.settings)

    def document(self) -> dict[str, Any]:
        return workflow_to_dict(self.graph, self.ui, self.meta)

    def local_backend(self, executor: Executor, input_dir: str | os.PathLike[str] = "input") -> LocalBackend:
        return LocalBackend(PointRunner(self.document(), executor, self.settings, input_dir))

    def run(self, backend: Any, on_event: EventHandler | None = None,
            on_point: Callable[[PointOutcome], None] | None = None, progress: Any = None) -> SweepResult:
        """Run the points not already on disk on ``backend``; ``on_point`` sees each outcome."""
        import time

        started = time.perf_counter()
        manifest = Manifest(self.output_dir, self._header(backend))
        result = self.result = SweepResult(self.plan, self.output_dir, manifest.path)  # read while it runs
        todo = []
        for planned in self.plan.points:
            entry = manifest.done(planned)
            if entry is None:
                todo.append(planned)
            else:
                manifest.entries[entry["key"]] = entry
                result.skipped.append(planned.point.index)
                result.files[planned.point.index] = [self.output_dir / n for n in entry["files"]]

        def deliver(planned: PointPlan, outcome: PointOutcome) -> None:
            point = planned.point
            if outcome.status == "interrupted":
                result.interrupted = True
                return
            names = file_names(point, [name for name, _ in outcome.files])
            self.output_dir.mkdir(parents=True, exist_ok=True)
            for name, (_, data) in zip(names, outcome.files):
                write_atomically(self.output_dir / name, data)
            ok = outcome.status == "ok"
            if ok:
                result.ran.append(point.index)
                result.files[point.index] = [self.output_dir / n for n in names]
            else:
                result.failed[point.index] = outcome.error or outcome.status
            result.executed.update(node_type for _, node_type in outcome.executed)
            manifest.record({
                "index": point.index, "key": point.key, "coords": list(point.coords), "label": point.label(),
                "overrides": [{"node": n, "field": f, "value": v} for n, f, v in point.overrides],
                "status": "ok" if ok else "error", "error": outcome.error, "files": names,
                "signatures": planned.signatures, "executed": [nid for nid, _ in outcome.executed],
                "cached": outcome.cached, "seconds": round(outcome.seconds, 4), "worker": outcome.worker,
            })
            if progress is not None:
                progress.point_done(point.label(), ok, outcome.error)
            if on_point is not None:
                on_point(outcome)

        self._active = backend
        try:
            backend.run(todo, self.models, deliver, on_event)
        except KeyboardInterrupt:
            result.interrupted = True
        except SweepError as exc:
            result.error = str(exc)
        if result.error is None and len(result.ran) + len(result.skipped) + len(result.failed) < len(self.plan.points):
            result.interrupted = True
        cells = [(p.point, (result.files.get(p.point.index) or [None])[0]) for p in
                 sorted(self.plan.points, key=lambda p: p.point.index)]
        cells = [(point, path if path is not None and path.suffix.lower() == ".png" else None) for point, path in cells]
        if any(path for _, path in cells):
            result.sheet = self.output_dir / SHEET_NAME
            manifest.header["sheet"] = contact_sheet(self.axes, self.mode, cells, result.sheet)
        result.seconds = time.perf_counter() - started
        manifest.save(complete=not result.interrupted and not result.failed, seconds=round(result.seconds, 3))
        return result

    def interrupt(self) -> None:
        backend = getattr(self, "_active", None)
        if backend is not None:
            backend.interrupt()

    def _header(self, backend: Any) -> dict[str, Any]:
        return {
            "workflow": self.source, "mode": self.mode, "device": self.device,
            "backend": getattr(backend, "name", type(backend).__name__),
            "axes": [{"node": a.node_id, "field": a.field, "values": list(a.values)} for a in self.axes],
            "plan": self.plan.summary(),
            "models": [m.to_dict() for m in self.models],
        }
