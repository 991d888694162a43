"""One thread per device that takes queued jobs one after another and runs them.

Every worker has its own :class:`~nodeflow.executor.Executor` (an executor runs one graph
at a time) and all of them share one output cache, so a second job on the same checkpoint
reuses the loaded model, and a job that changes only the seed re-runs only what the seed
feeds. The executor is made on the first job: resolving the device imports torch, which
start-up must not do.

Cancelling is by job id: :meth:`Worker.cancel` interrupts the executor only while that job
is the one running, and the flag is checked again at every event, so a cancel that arrives
between claiming the job and its first node is not lost.
"""

from __future__ import annotations

import logging
import re
import threading
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from nodeflow.engine.cache import OutputCache
from nodeflow.files.atomic import write_atomically
from nodeflow.files.image_bytes import image_outputs, png_batch
from nodeflow.files.open import workflow_from_dict
from nodeflow.model.registry import NodeRegistry
from .comfy_shapes import comfy_id
from .config import ServerConfig
from .hub import Hub
from .reporter import JobReporter, file_ref
from .store import CANCELLED, DONE, FAILED, INTERRUPTED, SWEEP_KIND, Job, JobStore
from .sweeps import Announcing, SweepReporter, progress_of, sweep_outputs

log = logging.getLogger(__name__)
_FIELD = re.compile(r'field "([^"]+)"')


class Worker(threading.Thread):
    def __init__(self, device: str, config: ServerConfig, store: JobStore, hub: Hub, registry: NodeRegistry,
                 cache: OutputCache, wake: threading.Condition, on_change: Callable[[], None],
                 pool: Any = None, actor: int = 0):
        super().__init__(name=f"nodeflow-worker-{device}", daemon=True)
        self.device = device
        self.config, self.store, self.hub, self.registry, self.cache = config, store, hub, registry, cache
        self.wake = wake
        self.on_change = on_change  # the queue changed: ComfyUI clients get a "status"
        self.executor: Any = None
        self.pool, self.actor = pool, actor  # with serve --ray: the Ray actors, and the one this worker sends jobs to
        self._on_actor = False  # a job of this worker is running on its actor now
        self._lock = threading.Lock()  # guards current / cancelling against the job switching
        self.current: str | None = None
        self.sweep: Any = None  # the sweep running now (cancelling it stops between points too)
        self._cancelling = threading.Event()
        self._stopping = threading.Event()

    # ------------------------------------------------------------ control (any thread)
    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            self._stop_running()
        with self.wake:
            self.wake.notify_all()

    def cancel(self, job_id: str) -> bool:
        """Stop ``job_id`` if this worker is running it."""
        with self._lock:
            if self.current != job_id:
                return False
            self._cancelling.set()
            self._stop_running()
            return True

    def interrupt(self, job_id: str | None = None) -> str | None:
        """ComfyUI's /interrupt: stop the running job (only if it is ``job_id``, when given)
        without cancelling it; returns the id of the job interrupted."""
        with self._lock:
            if self.current is None or (job_id is not None and job_id != self.current):
                return None
            self._stop_running()
            return self.current

    def _stop_running(self) -> None:
        """Stop the job running now (under the lock): at its next step, between sweep points,
        or on Ray by killing the actor it runs on (a new one takes its place)."""
        if self.sweep is not None:
            self.sweep.interrupt()
        if self.executor is not None:
            self.executor.interrupt()
        if self.pool is not None and self._on_actor:
            from nodeflow.sweep.ray_backend import kill

            kill(self.pool, self.actor)

    # ------------------------------------------------------------------ the loop
    def run(self) -> None:
        while not self._stopping.is_set():
            job = self.store.claim_next()
            if job is None:
                with self.wake:
                    self.wake.wait(timeout=1.0)
                continue
            self._reporter: JobReporter | None = None
            with self._lock:
                self.current = job.id
                self._cancelling.clear()
                if self.store.cancel_requested(job.id):
                    self._cancelling.set()
            self.on_change()
            try:
                self._run(job)
            except Exception:  # a bug here must not kill the worker, leave the job running or a client waiting
                log.exception("job %s failed in the server", job.id)
                error = _error(None, None, "the server failed running this job: " + traceback.format_exc(limit=3))
                self.store.finish(job.id, FAILED, {}, {}, error)
                if self._reporter is not None:
                    self._reporter.finished(FAILED, {}, error, {})
            finally:
                with self._lock:
                    self.current = None
                self.on_change()

    def _run(self, job: Job) -> None:
        kind = SweepReporter if job.kind == SWEEP_KIND else JobReporter
        reporter = self._reporter = kind(job, self.hub, self.config.outputs, on_event=self._check_cancel)
        reporter.started()
        if self._cancelling.is_set():
            return self._end(job, reporter, CANCELLED, {}, {}, _error(None, None, "cancelled before it started"), {})
        try:
            if self.executor is None and self.pool is None:
                from nodeflow.engine.executor import Executor

                self.executor = Executor(self.registry, cache=self.cache, device=self.device)
            workflow = workflow_from_dict(job.workflow, self.registry)
        except ValueError as exc:  # a device this machine lacks; a workflow that no longer loads
            return self._end(job, reporter, FAILED, {}, {}, _error(None, None, str(exc)), {})
        if job.kind == SWEEP_KIND:
            return self._run_sweep(job, workflow, reporter)
        if self.pool is not None:
            return self._run_on_ray(job, workflow, reporter)
        settings = replace(self.config.run_settings, workflow=job.workflow,
                           embed_workflow=bool(job.extra.get("embed_workflow", True)), previews=self.config.previews)
        if self._cancelling.is_set():
            self.executor.interrupt()
        result = self.executor.run(workflow.graph, on_event=reporter, output_dir=self.config.outputs,
                                   input_dir=self.config.inputs, settings=settings, extra_problems=workflow.problems,
                                   fresh_outputs=bool(job.extra.get("fresh_outputs")))
        node_times: dict[str, float] = {}
        for node_id, seconds in result.timings.items():
            key = comfy_id(job, node_id) or node_id
            node_times[key] = node_times.get(key, 0.0) + seconds
        job.node_times = node_times
        outputs = {node: {"images": refs} for node, refs in reporter.files.items()}
        late: dict[str, Any] = {}
        if result.status == "ok":
            late = self._keep_images(job, workflow.graph, result.outputs, outputs)
            outputs.update(late)
            return self._end(job, reporter, DONE, outputs, node_times, None, late)
        failed = result.failed_node
        node_type = workflow.graph.nodes[failed].type if failed in workflow.graph.nodes else None
        if result.status == "interrupted":
            status = CANCELLED if self._cancelling.is_set() or self.store.cancel_requested(job.id) else INTERRUPTED
            return self._end(job, reporter, status, outputs, node_times, _error(comfy_id(job, failed), node_type,
                                                                                 result.error or status), {})
        if result.status == "invalid":
            first = next(iter(result.problems), None)
            error = _error(comfy_id(job, getattr(first, "node_id", None)), getattr(first, "node_type", None),
                           result.error or "invalid", getattr(first, "field", None))
            error["problems"] = [p.to_dict() for p in result.problems]
            return self._end(job, reporter, FAILED, outputs, node_times, error, {})
        return self._end(job, reporter, FAILED, outputs, node_times,
                         _error(comfy_id(job, failed), node_type, result.error or "failed", result.failed_field), {})

    def _run_sweep(self, job: Job, workflow: Any, reporter: Any) -> None:
        """A sweep job: its points through this worker's executor, files under OUTPUT/sweeps/ID/."""
        from nodeflow.sweep.axes import SweepError, make_axis
        from nodeflow.sweep.runner import Sweep

        spec = job.extra["sweep"]
        settings = replace(self.config.run_settings, embed_workflow=True, previews=self.config.previews)
        device = self.executor.device if self.executor is not None else self.config.devices[0]
        try:
            axes = [make_axis(workflow.graph, a["node"], a["field"], a["values"]) for a in spec["axes"]]
            sweep = Sweep(workflow.graph, axes, spec["mode"], self.config.outputs / spec["folder"], settings,
                          device, workflow.ui, workflow.meta, workflow.problems,
                          source=f"job {job.id}", cached=self.cache)
        except SweepError as exc:  # the installed nodes changed since it was queued
            return self._end(job, reporter, FAILED, {}, {}, _error(None, None, str(exc)), {})
        if self.pool is not None:  # the points spread over every actor of the pool
            from nodeflow.sweep.ray_backend import RayBackend

            backend = Announcing(RayBackend(sweep.document(), pool=self.pool), reporter, one_by_one=False)
        else:
            backend = Announcing(sweep.local_backend(self.executor, self.config.inputs), reporter, one_by_one=True)
        reporter.native("sweep.planned", **sweep.plan.summary())

        def on_point(outcome: Any) -> None:
            result = sweep.result
            job.extra["sweep"] = progress_of(job, result, self.config.outputs)
            self.store.update_extra(job.id, job.extra)
            files = [file_ref(path, self.config.outputs, "output") for path in result.files.get(outcome.index, [])]
            reporter.point = None
            reporter.native("point.finished", point=outcome.index, status="ok" if outcome.status == "ok" else "error",
                            error=outcome.error, files=files, done=job.extra["sweep"]["points_done"],
                            total=len(sweep.plan.points), seconds=round(outcome.seconds, 3))

        with self._lock:
            self.sweep = backend
            if self._cancelling.is_set():
                backend.interrupt()
        try:
            result = sweep.run(backend, on_event=reporter, on_point=on_point)
        finally:
            with self._lock:
                self.sweep = None
            backend.close()
        job.extra["sweep"] = progress_of(job, result, self.config.outputs)
        self.store.update_extra(job.id, job.extra)
        outputs = sweep_outputs(result, self.config.outputs)
        if result.interrupted:
            if self._stopping.is_set() and not (self._cancelling.is_set() or self.store.cancel_requested(job.id)):
                self.store.requeue(job.id)  # the server is stopping: the next start resumes it
                return
            status = CANCELLED if self._cancelling.is_set() or self.store.cancel_requested(job.id) else INTERRUPTED
            return self._end(job, reporter, status, outputs, {}, _error(None, None, f"sweep {status} after "
                             f"{job.extra['sweep']['points_done']} of {len(sweep.plan.points)} point(s)"), {})
        if result.error or result.failed:
            index, message = next(iter(sorted(result.failed.items())), (None, result.error))
            where = f"point {index}: " if index is not None else ""
            return self._end(job, reporter, FAILED, outputs, {}, _error(None, None, where + str(message)), {})
        return self._end(job, reporter, DONE, outputs, {}, None, {})

    def _run_on_ray(self, job: Job, workflow: Any, reporter: Any) -> None:
        """A job on this worker's Ray actor: nodes starting and every step stream live; the
        files come back as bytes with the outcome and are written here, and each node's
        ``node.finished`` (with its files) is sent then."""
        from nodeflow.sweep.ray_backend import run_job

        with self._lock:
            self._on_actor = True
            cancelled_early = self._cancelling.is_set()
        try:
            embed = bool(job.extra.get("embed_workflow", True))
            outcome = (run_job(self.pool, self.actor, job.workflow, reporter, embed, self.config.previews)
                       if not cancelled_early else None)
        finally:
            with self._lock:
                self._on_actor = False
        graph = workflow.graph
        if outcome is None or outcome.status == "interrupted":
            status = CANCELLED if self._cancelling.is_set() or self.store.cancel_requested(job.id) else INTERRUPTED
            message = "cancelled" if status == CANCELLED else (outcome.error if outcome else status)
            return self._end(job, reporter, status, {}, {}, _error(None, None, message), {})
        node_times: dict[str, float] = {}
        for node_id, seconds in outcome.timings.items():
            key = comfy_id(job, node_id) or node_id
            node_times[key] = node_times.get(key, 0.0) + seconds
        job.node_times = node_times
        outputs: dict[str, Any] = {}
        for (name, data), node_id in zip(outcome.files, outcome.file_nodes):
            path = _write_new(self.config.outputs / name, data)
            outputs.setdefault(comfy_id(job, node_id) or node_id, {"images": []})["images"].append(
                file_ref(path, self.config.outputs, "output"))
        for node_id, node_type in outcome.executed:
            reporter.native("node.finished", node=comfy_id(job, node_id), node_type=node_type,
                            seconds=outcome.timings.get(node_id, 0.0),
                            files=outputs.get(comfy_id(job, node_id) or node_id, {}).get("images", []))
        if outcome.status == "ok":
            outputs.update(self._keep_pngs(job, outcome.unsaved))
            return self._end(job, reporter, DONE, outputs, node_times, None, outputs)
        failed = outcome.failed_node
        node_type = graph.nodes[failed].type if failed in graph.nodes else None
        return self._end(job, reporter, FAILED, outputs, node_times,
                         _error(comfy_id(job, failed), node_type, outcome.error or outcome.status,
                                outcome.failed_field), {})

    def _end(self, job: Job, reporter: JobReporter, status: str, outputs: dict[str, Any],
             node_times: dict[str, float], error: dict[str, Any] | None, late: dict[str, Any]) -> None:
        self.store.finish(job.id, status, outputs, node_times, error)
        reporter.finished(status, outputs, error, late)

    def _check_cancel(self, _event: Any) -> None:
        if self._cancelling.is_set() and self.executor is not None:
            self.executor.interrupt()

    def _keep_images(self, job: Job, graph: Any, results: dict[str, dict[str, Any]],
                     announced: dict[str, Any]) -> dict[str, Any]:
        """Images of output nodes that wrote no file (a preview; a save found in the cache)
        are kept in the temp folder, so the client can still fetch them with /view."""
        unsaved: dict[str, list[bytes]] = {}
        for node_id, values in results.items():
            cls = graph.node_class(node_id)
            if (comfy_id(job, node_id) or node_id) in announced or cls is None:
                continue
            unsaved[node_id] = [png for images in image_outputs(cls, values) for png in png_batch(images)]
        return self._keep_pngs(job, unsaved)

    def _keep_pngs(self, job: Job, unsaved: dict[str, list[bytes]]) -> dict[str, Any]:
        """Write each node's PNGs to the temp folder; the refs a client fetches them by."""
        kept: dict[str, Any] = {}
        for node_id, pngs in unsaved.items():
            node = comfy_id(job, node_id) or node_id
            self.config.temp.mkdir(parents=True, exist_ok=True)
            refs = []
            for index, data in enumerate(pngs):
                path = _write_new(self.config.temp / f"{job.id[:8]}_{node}_{index:05d}.png", data)
                refs.append(file_ref(path, self.config.temp, "temp"))
            if refs:
                kept[node] = {"images": refs}
        return kept


def _write_new(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path``, or to ``stem-1.png``, ``stem-2.png`` ... when that name is
    taken (a Ray actor numbers its files in its own staging folder, so names repeat across jobs)."""
    candidate, n = path, 1
    while True:
        try:
            write_atomically(candidate, data, replace=False)
            return candidate
        except FileExistsError:
            candidate, n = path.with_name(f"{path.stem}-{n}{path.suffix}"), n + 1


def _error(node: str | None, node_type: str | None, message: str, field: str | None = None) -> dict[str, Any]:
    if field is None and (match := _FIELD.search(message or "")):
        field = match[1]
    return {"node": node, "node_type": node_type, "field": field, "message": message}
