"""Runs a graph: the needed nodes only, in order, reusing every result it can.

What runs
    The requested nodes (default: every output node that is not bypassed) and their
    ancestors, in topological order. How inputs, bypass and signatures work is
    described in :mod:`nodeflow.engine.plan`.

Caching
    A node whose signature is in the cache is not run: its stored outputs are used
    and a ``NodeCached`` event is sent. So an unchanged graph re-runs nothing, a
    changed value re-runs exactly that node and its downstream, and identical
    subgraphs are computed once (also within one run). A non-deterministic node
    re-runs every time, with its downstream; their results are not stored, as they
    could never be reused. Output nodes follow the same rule as the rest: pressing
    Run again on an unchanged graph does not write the same image twice (they are
    reported as cached: the file exists); a changed input or another output folder
    runs them again. Cached values stay on the device they were made on, and the
    device is part of the signature. Memory: see :mod:`nodeflow.engine.cache`.

Memory on the device
    The executor reads the device's memory from the installed pack's device backend
    (:mod:`nodeflow.model.devices`; VRAM on a GPU, RAM on the CPU). Before a run, the
    plan's peak memory is estimated node by node (:mod:`nodeflow.engine.estimate`) and a
    run that cannot fit is refused, naming the node and field, before anything loads.
    Before each node, the models it reads are on the device and others are offloaded
    to the CPU's RAM if the device budget is tight (:mod:`nodeflow.engine.residency`).

Failure and interruption
    A node's outputs are stored only after its ``run`` returned and its result had the
    declared shape, so a failed or interrupted run stores nothing partial and keeps
    every valid entry; re-running after a fix runs only the fixed node and its
    downstream. ``interrupt()`` (from any thread) makes the running node's
    ``ctx.progress()``/``ctx.check_interrupted()`` raise ``Interrupted``, and is also
    checked between nodes. ``RunResult.error`` names the node (id and type) and
    carries its message; for unexpected exceptions ``RunResult.traceback`` holds the
    traceback text.

Threads
    One run at a time per executor: starting a second one while a run is in progress
    raises :class:`ExecutorBusy` at once (a GUI should disable Run, not queue
    silently). The graph is snapshotted when the run starts, so it may be edited
    during the run. For a GUI, ``submit()`` snapshots and validates on the calling
    thread and runs in a worker thread, returning a ``Future``. Event listeners are
    called on the running thread; one that raises is logged and ignored.
"""

from __future__ import annotations

import logging
import os
import threading
import bisect
import time
import traceback as traceback_module
import uuid
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, NoReturn

from nodeflow.engine.cache import OutputCache, default_budget_bytes
from nodeflow.engine.device import device_budget, is_out_of_memory, release_device_memory, resolve_device
from nodeflow.engine.estimate import PlanEstimate, estimate_plan
from nodeflow.engine.residency import NEVER, Residency
from nodeflow.engine.events import (
    EventHandler,
    FileWritten,
    NodeCached,
    NodeFailed,
    NodeFinished,
    NodeStarted,
    Progress,
    RunFinished,
    RunStarted,
    RunStatus,
)
from nodeflow.model.devices import DeviceBackend, DeviceMemory
from nodeflow.model.memory import check_memory, memory_budget
from nodeflow.model.graph import Graph, GraphError
from nodeflow.model.context import Interrupted, RunContext, RunSettings
from nodeflow.model.node import NodeError
from nodeflow.model.problems import Problem, ProblemCode
from nodeflow.model.validation import run_outputs, validate
from nodeflow.engine.plan import Plan, SignatureMemo, Step, ValueRef, build_plan, producer, resolve
from nodeflow.model.registry import NodeRegistry

log = logging.getLogger(__name__)


class ExecutorBusy(RuntimeError):
    """A run was started while this executor was still running another."""


@dataclass
class RunResult:
    status: RunStatus
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # requested node id -> outputs
    executed: tuple[str, ...] = ()  # node ids that ran, in order
    cached: tuple[str, ...] = ()  # node ids whose outputs came from the cache
    timings: dict[str, float] = field(default_factory=dict)  # seconds per executed node
    error: str | None = None
    failed_node: str | None = None
    traceback: str | None = None  # for unexpected exceptions (the CLI's --verbose)
    problems: list[Problem] = field(default_factory=list)  # validation problems when "invalid"
    seconds: float = 0.0
    files: tuple[Path, ...] = ()  # files the nodes wrote (RunContext.report_written), in order
    failed_field: str | None = None  # the failed node's input at fault, when it named one

    @property
    def ok(self) -> bool:
        return self.status == RunStatus.OK


@dataclass
class _Prepared:
    """A validated plan plus everything the run needs, built on the calling thread."""

    plan: Plan | None
    problems: list[Problem]
    device: str
    output_dir: Path
    input_dir: Path
    settings: RunSettings
    on_event: EventHandler | None
    budget: int | None = None  # bytes of the device a run may use (settings', else the device's)
    estimate: PlanEstimate | None = None


class Executor:
    def __init__(
        self,
        registry: NodeRegistry,
        cache: OutputCache | None = None,
        device: str = "auto",
        cache_budget_bytes: int | None = None,
        devices: DeviceBackend | None = None,
    ):
        """``devices``: what tells device memory and moves models (default: the installed
        packs' backend, see :meth:`NodeRegistry.device_backend`). Without a ``cache`` or
        ``cache_budget_bytes``, the cache's budget is half the memory its entries live in:
        the offload device's (the RAM) when models can be offloaded, else the device's own."""
        self.registry = registry
        self.devices = devices if devices is not None else registry.device_backend()
        self.device = resolve_device(device, self.devices)  # raises DeviceError (a ValueError) before any run
        self._residency: dict[str, Residency] = {}
        if cache is None and cache_budget_bytes is None:
            target = self.devices.offload_device(self.device)
            cache_budget_bytes = default_budget_bytes(self.devices.memory(target) if target else self.device_memory())
        self.cache = cache if cache is not None else OutputCache(cache_budget_bytes)
        self._busy = threading.Lock()
        self._interrupt = threading.Event()
        self._signatures = SignatureMemo()

    # ---------------------------------------------------------------- public API
    def run(
        self,
        graph: Graph,
        outputs: Iterable[str] | None = None,
        on_event: EventHandler | None = None,
        output_dir: str | os.PathLike = "output",
        input_dir: str | os.PathLike = "input",
        settings: RunSettings | None = None,
        device: str | None = None,
        extra_problems: Iterable[Any] = (),
        fresh_outputs: bool = False,
    ) -> RunResult:
        """Run ``outputs`` (node ids; default: the output nodes) of ``graph`` and wait for the result.

        ``device`` overrides the executor's for this run; ``extra_problems`` are a loaded
        workflow's load-time problems, judged together with validation's own;
        ``fresh_outputs`` runs the output nodes even when their results are cached (see
        :func:`~nodeflow.engine.plan.build_plan`).
        """
        self._acquire()
        try:
            prepared = self._prepare(graph, outputs, on_event, output_dir, input_dir, settings, device, extra_problems,
                                     fresh_outputs)
            return self._execute(prepared)
        finally:
            self._busy.release()

    def submit(self, graph: Graph, outputs: Iterable[str] | None = None, **options: Any) -> Future[RunResult]:
        """Like :meth:`run` but returns at once: snapshot and validation happen here, on the
        calling (GUI) thread; the nodes run in a worker thread."""
        self._acquire()
        future: Future[RunResult] = Future()
        try:
            prepared = self._prepare(graph, outputs, **options)
        except BaseException:
            self._busy.release()
            raise

        def work() -> None:
            try:
                future.set_result(self._execute(prepared))
            except BaseException as exc:  # never lose an error in a thread nobody joins
                future.set_exception(exc)
            finally:
                self._busy.release()

        future.set_running_or_notify_cancel()
        threading.Thread(target=work, name="nodeflow-run", daemon=True).start()
        return future

    def interrupt(self) -> None:
        """Ask the run in progress to stop at its next check; safe from any thread."""
        self._interrupt.set()

    @property
    def running(self) -> bool:
        return self._busy.locked()

    def device_memory(self, device: str | None = None) -> DeviceMemory | None:
        """The device's memory as its backend reads it now (VRAM on a GPU, RAM on the CPU)."""
        return self.devices.memory(self.device if device is None else device)

    def residency(self, device: str | None = None) -> Residency:
        """What keeps models on ``device`` within its budget (one per device, kept across runs)."""
        device = self.device if device is None else device
        if device not in self._residency:
            self._residency[device] = Residency(self.devices, device, device_budget(self.device_memory(device)))
        return self._residency[device]

    def check(self, graph: Graph, outputs: Iterable[str] | None = None, **where: Any) -> list[Problem]:
        """The problems :meth:`run` would refuse ``graph`` with, without running anything:
        validation's, then the plan's peak-memory estimate against this device's budget
        (what ``nodeflow validate`` reports). ``where``: ``output_dir``, ``input_dir``,
        ``settings`` and ``extra_problems`` as for :meth:`run`."""
        return list(self._prepare(graph, outputs, **where).problems)

    def estimate(self, graph: Graph, outputs: Iterable[str] | None = None, **where: Any) -> PlanEstimate | None:
        """The plan's peak-memory estimate per step (None when validation refuses the graph)."""
        return self._prepare(graph, outputs, **where).estimate

    # ------------------------------------------------------------------ stages
    def _acquire(self) -> None:
        if not self._busy.acquire(blocking=False):
            raise ExecutorBusy("a run is already in progress on this executor; wait for it or interrupt it")
        self._interrupt.clear()

    def _prepare(
        self,
        graph: Graph,
        outputs: Iterable[str] | None = None,
        on_event: EventHandler | None = None,
        output_dir: str | os.PathLike = "output",
        input_dir: str | os.PathLike = "input",
        settings: RunSettings | None = None,
        device: str | None = None,
        extra_problems: Iterable[Any] = (),
        fresh_outputs: bool = False,
    ) -> _Prepared:
        snapshot = graph.copy()
        snapshot.registry = self.registry
        # Like ComfyUI, by default what the output nodes need is checked and run (run_outputs).
        requested = run_outputs(snapshot) if outputs is None else list(outputs)
        device = self.device if device is None else resolve_device(device, self.devices)
        output_dir, input_dir = Path(output_dir), Path(input_dir)
        settings = settings if settings is not None else RunSettings()
        context = RunContext(device=device, output_dir=output_dir, input_dir=input_dir, settings=settings)
        problems = list(validate(snapshot, requested, extra_problems, context))
        plan = None
        if not problems:
            try:
                plan = build_plan(
                    snapshot,
                    requested,
                    salt=device,
                    nonce=uuid.uuid4().hex,
                    output_dir=os.path.abspath(output_dir),
                    memo=self._signatures,
                    fresh_outputs=fresh_outputs,
                    context=RunContext(
                        device=device, output_dir=output_dir, input_dir=input_dir, settings=settings

                    ),
                )
            except GraphError as exc:  # only if validation missed it; report it the same way
                problems = [Problem(ProblemCode.INVALID_GRAPH, str(exc), exc.node_id)]
        residency = self.residency(device)
        budget = settings.memory_budget or residency.budget_bytes or memory_budget(settings)
        estimate = None
        if plan is not None:  # before anything loads: a peak that cannot fit refuses the run
            estimate = estimate_plan(plan, context, budget, offloads=residency.active)
            if estimate.problems:
                problems, plan = list(estimate.problems), None
        return _Prepared(plan, problems, device, output_dir, input_dir, settings, on_event, budget, estimate)

    def _execute(self, prepared: _Prepared) -> RunResult:
        emit = _SafeEmitter(prepared.on_event)
        if prepared.plan is None:
            error = "the workflow is not valid: " + "; ".join(str(p) for p in prepared.problems)
            emit(RunFinished(RunStatus.INVALID, 0.0, error=error))
            return RunResult(RunStatus.INVALID, error=error, problems=prepared.problems)
        return _Run(self, prepared, emit).execute()


class _Run:
    """One execution of a plan; lives only for the duration of ``execute``."""

    def __init__(self, executor: Executor, prepared: _Prepared, emit: "_SafeEmitter"):
        self.cache = executor.cache
        self.residency = executor.residency(prepared.device)
        self.interrupted = executor._interrupt
        self.prepared = prepared
        self.plan: Plan = prepared.plan  # type: ignore[assignment]
        self.emit = emit
        self.values: dict[str, dict[str, Any]] = {}  # signature -> outputs, while still needed
        self.uses = _remaining_uses(self.plan)
        self.executed: list[str] = []
        self.cached: list[str] = []
        self.timings: dict[str, float] = {}
        self.files: list[Path] = []
        self.position = 0  # index of the step being produced
        self.readers = _readers(self.plan)

    def execute(self) -> RunResult:
        started = time.perf_counter()
        plan = self.plan
        self.cache.pin(list(self.uses))  # each needed signature once, released by _release
        self.emit(RunStarted(tuple(step.node_id for step in plan.steps)))
        status, error, failed, trace, failed_field = RunStatus.OK, None, None, None, None
        outputs: dict[str, dict[str, Any]] = {}
        try:
            for self.position, step in enumerate(plan.steps):
                if self.interrupted.is_set():
                    raise _Stop(RunStatus.INTERRUPTED, f"interrupted before node {step.node_id} ({step.node_type})")
                self._step(step)
            outputs = {
                node_id: {name: self._value(ref) for name, ref in refs.items()}
                for node_id, refs in plan.outputs.items()
            }
            if self.residency.active:  # what the caller gets back is on the run's device
                self.residency.restore(value for refs in outputs.values() for value in refs.values())
        except _Stop as stop:
            status, error, failed, trace, failed_field = stop.status, stop.error, stop.failed_node, stop.trace, stop.field
        finally:
            self.cache.unpin(list(self.uses))
            self.values.clear()
        seconds = time.perf_counter() - started
        result = RunResult(
            status, outputs, tuple(self.executed), tuple(self.cached), dict(self.timings), error,
            failed, trace, seconds=seconds, files=tuple(self.files), failed_field=failed_field,
        )
        self.emit(RunFinished(status, seconds, result.executed, result.cached, error, dict(self.timings)))
        return result

    def _step(self, step: Step) -> None:
        """Produce the step's outputs: from this run, from the cache, or by running it."""
        signature = step.signature
        outputs = self.values.get(signature)
        if outputs is None:
            outputs = self.cache.get(signature)
        if outputs is not None:
            self.values[signature] = outputs
            self.cached.append(step.node_id)
            self.emit(NodeCached(step.node_id, step.node_type))
        else:
            outputs = self._run_node(step)
            self.values[signature] = outputs
            if step.reusable:  # results of non-deterministic nodes and their downstream never recur
                self.cache.put(signature, outputs)
        self._release((signature, *step.reads))

    def _run_node(self, step: Step) -> dict[str, Any]:
        inputs = dict(step.literals)
        for name, ref in step.sources.items():
            inputs[name] = self._value(ref)
        node_id, node_type = step.node_id, step.node_type
        prepared = self.prepared
        ctx = RunContext(
            node_id=node_id,
            device=prepared.device,
            output_dir=prepared.output_dir,
            input_dir=prepared.input_dir,
            settings=prepared.settings,
            on_progress=lambda i, n, preview=None: self.emit(Progress(node_id, i, n, preview)),
            on_file_written=lambda path: self._written(node_id, path),
            is_interrupted=self.interrupted.is_set,
        )
        self.emit(NodeStarted(node_id, node_type))
        started = time.perf_counter()
        try:
            need = step.cls.working_memory(inputs, prepared.settings)
            check_memory(need, prepared.settings, prepared.budget)  # before allocating
            self._make_room(inputs, need.bytes if need is not None else 0)
            out_of_memory = False
            try:
                outputs = _call(step, ctx, inputs)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                out_of_memory = True  # retried outside this block: the error's traceback holds the node's tensors
            if out_of_memory:
                outputs = self._retry_out_of_memory(step, ctx, inputs)
        except Interrupted:
            raise _Stop(RunStatus.INTERRUPTED, f"interrupted in node {node_id} ({node_type})") from None
        except NodeError as exc:
            self._failed(step, str(exc) or type(exc).__name__, field=exc.field)
        except Exception as exc:
            self._failed(step, f"{type(exc).__name__}: {exc}", traceback_module.format_exc())
        seconds = time.perf_counter() - started
        self.timings[node_id] = seconds
        self.executed.append(node_id)
        self.emit(NodeFinished(node_id, node_type, seconds))
        return outputs

    def _make_room(self, inputs: dict[str, Any], need_bytes: int) -> None:
        """The models this node reads onto the device; others offloaded if it is short
        (nothing to do where there is nowhere to offload to, such as the CPU)."""
        if not self.residency.active:
            return
        in_run = {id(outputs) for outputs in self.values.values()}
        later = [(self._next_read((signature, name)), value)
                 for signature, outputs in self.values.items() for name, value in outputs.items()]
        later += [(NEVER, outputs) for outputs in self.cache.entries() if id(outputs) not in in_run]
        self.residency.prepare(inputs.values(), later, need_bytes)

    def _next_read(self, output: tuple[str, str]) -> float:
        """Index of the next step after this one that reads ``output`` ((signature, output
        name)), or ``NEVER``: a checkpoint's text encoder is done once the prompts are encoded."""
        readers = self.readers.get(output, ())
        at = bisect.bisect_right(readers, self.position)
        return readers[at] if at < len(readers) else NEVER

    def _retry_out_of_memory(self, step: Step, ctx: RunContext, inputs: dict[str, Any]) -> dict[str, Any]:
        """The node ran out of memory: free every cached result this run does not need
        (unpinned entries), offload every model the node does not read, give the device's
        freed blocks back, and run it once more. A second failure names the node and what
        was freed."""
        freed = self.cache.free_unpinned()
        freed += self.residency.offload_all(inputs.values(), list(self.values.values()))
        release_device_memory(self.prepared.device)
        log.warning("node %s (%s) ran out of memory; freed %d cached bytes, retrying once",
                    step.node_id, step.node_type, freed)
        try:
            return _call(step, ctx, inputs)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            raise NodeError(
                f"out of memory on {self.prepared.device}, also after freeing {freed / 2**20:,.0f} MB of cached "
                f"results and offloaded models and retrying once ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})"
            ) from None

    def _written(self, node_id: str, path: Path) -> None:
        self.files.append(path)
        self.emit(FileWritten(node_id, path))

    def _failed(self, step: Step, message: str, trace: str | None = None, field: str | None = None) -> NoReturn:
        self.emit(NodeFailed(step.node_id, step.node_type, message, field))
        raise _Stop(RunStatus.ERROR, f"node {step.node_id} ({step.node_type}) failed: {message}", step.node_id, trace,
                    field)

    def _value(self, ref: ValueRef) -> Any:
        return resolve(ref, self.values)

    def _release(self, signatures: Iterable[str]) -> None:
        """One use of each signature is done; drop values (and pins) nobody needs any more."""
        done = []
        for signature in signatures:
            self.uses[signature] -= 1
            if self.uses[signature] <= 0:
                del self.uses[signature]
                self.values.pop(signature, None)
                done.append(signature)
        if done:
            self.cache.unpin(done)


class _Stop(Exception):
    """Ends a run early: a node failed or the user interrupted."""

    def __init__(self, status: RunStatus, error: str, failed_node: str | None = None, trace: str | None = None,
                 field: str | None = None):
        super().__init__(error)
        self.status, self.error, self.failed_node, self.trace, self.field = status, error, failed_node, trace, field


def _readers(plan: Plan) -> dict[tuple[str, str], list[int]]:
    """For each output ((signature, output name)), the indices of the steps that read it,
    ascending; the requested outputs count as read after the last step."""
    readers: dict[tuple[str, str], list[int]] = {}
    for index, step in enumerate(plan.steps):
        for ref in step.sources.values():
            if isinstance(ref, tuple) and readers.setdefault(ref, [])[-1:] != [index]:
                readers[ref].append(index)
    end = len(plan.steps)
    for refs in plan.outputs.values():
        for ref in refs.values():
            if isinstance(ref, tuple) and readers.setdefault(ref, [])[-1:] != [end]:
                readers[ref].append(end)
    return readers


def _remaining_uses(plan: Plan) -> Counter[str]:
    """How many times each signature will still be read: by its own steps, by the
    inputs of later steps, and once more for each requested output (read at the end)."""
    uses: Counter[str] = Counter()
    for step in plan.steps:
        uses[step.signature] += 1
        uses.update(step.reads)
    for refs in plan.outputs.values():
        uses.update(filter(None, map(producer, refs.values())))
    return uses


class _SafeEmitter:
    """Sends events to the listener; a listener that raises is logged, never fatal."""

    def __init__(self, handler: EventHandler | None):
        self.handler = handler

    def __call__(self, event: Any) -> None:
        if self.handler is None:
            return
        try:
            self.handler(event)
        except Exception:
            log.exception("event listener failed on %s; the run continues", type(event).__name__)


def _call(step: Step, ctx: RunContext, inputs: dict[str, Any]) -> dict[str, Any]:
    """One run of the step's node, its result as {output name: value} (the first try and
    the out-of-memory retry run exactly the same call)."""
    return step.cls.normalize_result(step.cls().run(ctx, **inputs))
