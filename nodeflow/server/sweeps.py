"""Sweeps as a server job kind: ``POST /v1/sweeps`` queues one job that runs a workflow at
every point of its axes, with :mod:`nodeflow.sweep` doing the work.

Submission checks the workflow as for any job (:func:`.submit.build_job`), then each axis
with the field's own declaration (the sweep's parser: a bad value is refused naming the
node, the field and the value) and every file an axis names, and plans the sweep, so the
answer already says what it costs (points, node executions, work already in the cache).
Axes come as ``{"NODE.FIELD": [values] | "SPEC"}``, SPEC a range or list as on the
command line; ``@FILE`` is refused (a client may not make the server read its files).
The job stores the axes as checked value lists, so a restart rebuilds the same points.

Running: the points go through the worker's executor (its cache shared with every job),
or through Ray actors with ``serve --ray``. Files go to ``OUTPUT/sweeps/JOB_ID/``: one
image per point, ``sheet.png`` and the manifest ``sweep.json``, all served by ``/view``.
After every point the job's progress is written to the store and a ``point.finished``
event is sent; the executor's events (``node.*``, ``progress``) carry the point's index.
A sweep the server stopped in (a crash, a restart) is queued again at the next start
(:meth:`.store.JobStore.recover`) and resumes: the manifest's signatures say which points
are done, and only the others run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from nodeflow.files.open import workflow_from_dict
from nodeflow.model.context import RunContext
from nodeflow.model.problems import Problem, ProblemCode
from nodeflow.model.registry import NodeRegistry
from .reporter import JobReporter, file_ref
from .store import SWEEP_KIND, Job
from .submit import Refused, build_job, submission_problems

SWEEPS_FOLDER = "sweeps"  # under the output folder: one subfolder per sweep job


def build_sweep_job(document: Any, vary: Any, mode: str, registry: NodeRegistry, context: RunContext, *,
                    overrides: Mapping[str, Any] | None = None, client_id: str | None = None) -> Job:
    """A queued sweep :class:`Job`, or :class:`.submit.Refused` naming what is wrong."""
    from nodeflow.sweep.axes import SweepError, make_axis, parse_axis, points
    from nodeflow.sweep.plan import plan_sweep

    source = "native" if isinstance(document, dict) and "format" in document else "comfyui"
    job = build_job(document, registry, context, source=source, overrides=overrides, client_id=client_id)
    workflow = workflow_from_dict(job.workflow, registry)
    graph = workflow.graph
    if not isinstance(vary, Mapping) or not vary:
        raise Refused('a sweep needs "vary": {"NODE.FIELD": [values] or "1..4"}', [])
    axes = []
    for target, values in vary.items():
        node_ref, dot, field = str(target).rpartition(".")
        try:
            if not dot or not node_ref or not field:
                raise SweepError(f"expected NODE.FIELD (e.g. '5.seed'), got {target!r}")
            if isinstance(values, str):
                if values.startswith("@"):
                    raise SweepError(f"{target}: '@FILE' is not accepted over the network; send the values as a list")
                axes.append(parse_axis(f"{target}={values}", graph))
            elif isinstance(values, list):
                axes.append(make_axis(graph, node_ref, field, values))
            else:
                raise SweepError(f"{target}: the values must be a list or a SPEC text such as '1..4'")
        except SweepError as exc:
            node_id = _node_id(graph, node_ref)
            node_type = graph.nodes[node_id].type if node_id else None
            message = str(exc).removeprefix("--vary ")
            raise Refused(message, [Problem(ProblemCode.INVALID_VALUE, message, node_id, node_type, field or None)]) from None
    try:
        sweep_points = points(axes, mode)
    except SweepError as exc:
        raise Refused(str(exc), [Problem(ProblemCode.INVALID_VALUE, str(exc))]) from None
    problems = []
    for axis in axes:  # a file an axis names is checked as the workflow's own are
        for value in axis.values:
            probe = graph.copy()
            probe.set_value(axis.node_id, axis.field, value)
            problems += [p for p in submission_problems(probe, [], context)
                         if p.node_id == axis.node_id and p.field == axis.field]
    if problems:
        raise Refused(f"{len(problems)} value(s) of the sweep's axes cannot run", problems)
    plan = plan_sweep(graph, axes, sweep_points, Path(SWEEPS_FOLDER, job.id), "cpu", context.settings, mode=mode)
    job.extra.update(kind=SWEEP_KIND, sweep={
        "mode": mode,
        "axes": [{"node": a.node_id, "field": a.field, "values": list(a.values)} for a in axes],
        "plan": plan.summary(),
        "points_done": 0, "ran": 0, "skipped": 0, "failed": {},
        "folder": f"{SWEEPS_FOLDER}/{job.id}", "manifest": None, "sheet": None,
    })
    return job


def _node_id(graph: Any, node_ref: str) -> str | None:
    try:
        return graph.find_node(node_ref) if node_ref else None
    except Exception:  # GraphError: no such node (the message already says so)
        return None


class SweepReporter(JobReporter):
    """A sweep job's events: the executor's, tagged with the point they belong to, plus
    ``sweep.planned`` and ``point.finished``. ComfyUI clients get none (a sweep is not a prompt)."""

    point: int | None = None

    def native(self, kind: str, **data: Any) -> None:
        if self.point is not None and "point" not in data:
            data["point"] = self.point
        super().native(kind, **data)

    def comfy(self, kind: str, **data: Any) -> None:
        pass

    def __call__(self, event: Any) -> None:
        from nodeflow.engine.events import FileWritten

        if isinstance(event, FileWritten):  # a point's staging file; the sweep's own files are reported per point
            if self.on_event is not None:
                self.on_event(event)
            return
        super().__call__(event)


class Announcing:
    """Wraps a sweep backend: tells the reporter which point runs next (local backends run
    one point at a time; Ray's points run on actors, whose step events do not come back)."""

    def __init__(self, inner: Any, reporter: SweepReporter, one_by_one: bool):
        self.inner, self.reporter, self.one_by_one = inner, reporter, one_by_one
        self.name = inner.name
        self._stopped = False

    def run(self, points: Any, models: Any, deliver: Any, on_event: Any = None) -> None:
        if not self.one_by_one:
            return self.inner.run(points, models, deliver, on_event)
        for planned in points:
            if self._stopped:
                return
            self.reporter.point = planned.point.index
            self.reporter.native("point.started", label=planned.point.label())
            self.inner.run([planned], models, deliver, on_event)
        self.reporter.point = None

    def interrupt(self) -> None:
        self._stopped = True
        self.inner.interrupt()

    def close(self) -> None:
        self.inner.close()


def progress_of(job: Job, result: Any, outputs_root: Path) -> dict[str, Any]:
    """The job's ``extra["sweep"]`` updated from a :class:`~nodeflow.sweep.SweepResult` so far."""
    info = dict(job.extra.get("sweep") or {})
    info.update(points_done=len(result.ran) + len(result.skipped), ran=len(result.ran), skipped=len(result.skipped),
                failed={str(k): v for k, v in result.failed.items()})
    if result.manifest.is_file():
        info["manifest"] = file_ref(result.manifest, outputs_root, "output")
    if result.sheet is not None and result.sheet.is_file():
        info["sheet"] = file_ref(result.sheet, outputs_root, "output")
    return info


def sweep_outputs(result: Any, outputs_root: Path) -> dict[str, Any]:
    """``{"sheet": {"images": [...]}, "0": {"images": [...]}, ...}``: the sheet, then each point's images."""
    outputs: dict[str, Any] = {}
    if result.sheet is not None and result.sheet.is_file():
        outputs["sheet"] = {"images": [file_ref(result.sheet, outputs_root, "output")]}
    for index in sorted(result.files):
        refs = [file_ref(path, outputs_root, "output") for path in result.files[index] if path.is_file()]
        if refs:
            outputs[str(index)] = {"images": refs}
    return outputs
