"""The points of a sweep on Ray actors: ``nodeflow sweep ... --ray [ADDRESS]`` (``pip install nodeflow[ray]``).

Ray is the scheduler; this module only decides which actor gets which point. There is
one actor per device (``num_gpus=1`` each where the cluster has GPUs, one CPU each
otherwise), and each keeps its own :class:`~nodeflow.sweep.worker.PointRunner`, hence
its own executor and cache: models load once per actor. Points are split with
:func:`nodeflow.sweep.plan.assign`, so points sharing upstream work (a prompt) go to one
actor; an actor whose own list runs out takes points from the end of the longest list.
Two points are in flight per actor so it never waits for the driver.

Results stream back as each point finishes, files included (as bytes: the driver writes
every file, on its own disk, so workers need no shared folder). A server job on an actor
streams its live events too (nodes started or found cached, every sampling step), so a
client's progress bar moves while the actor works (:func:`run_job`). Before a point runs, its
actor checks the sweep's model hashes (:mod:`nodeflow.sweep.models`) and fails the point
naming the file and the hash when its copy differs. An actor that dies (killed, out of
memory, its machine gone) loses no point: the points it had in flight or queued go to
the living actors. Ctrl+C kills the actors; completed points are in the manifest.

The actors are a :class:`RayPool`, which the server's queue shares too (``nodeflow serve
--ray``): an actor runs any workflow it is sent (it keeps one point runner per workflow,
all on its one executor), so a sweep's points and single jobs go to the same actors. An
actor that died is replaced by a new one (up to ``MAX_RESTARTS`` per pool), so a long
running server does not run out of actors.

Only this module imports Ray, and only ``--ray`` (or the API's ``ray=``) imports it.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import threading
from collections import OrderedDict, deque
from dataclasses import replace
from typing import Any, Callable, Iterator, Sequence

import ray
from ray.exceptions import RayActorError

from nodeflow.engine.events import NodeCached, NodeStarted, Progress
from nodeflow.sweep.axes import Point, SweepError
from nodeflow.sweep.models import ModelFile
from nodeflow.sweep.plan import PointPlan, assign
from nodeflow.sweep.worker import PointOutcome

IN_FLIGHT = 2  # points queued on each actor at once
LIVE_EVENTS = (NodeStarted, NodeCached, Progress)  # what an actor streams while a job runs
KEPT_WORKFLOWS = 8  # point runners an actor keeps (one per workflow it was sent), least recently used dropped
MAX_RESTARTS = 8  # dead actors a pool replaces before it gives up on them


class WorkerActor:
    """What runs inside one Ray actor process (wrapped by ``ray.remote`` in :class:`RayPool`):
    one executor, and a point runner for each workflow it is sent."""

    def __init__(self, device: str, models: Sequence[str], allow_paths: Sequence[str],
                 input_dir: str, embed_workflow: bool, name: str):
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        from nodeflow.engine.executor import Executor
        from nodeflow.host.settings import build_run_settings
        from nodeflow.model.registry import default_registry

        from nodeflow.sweep.worker import remove_stale_staging

        remove_stale_staging()  # left by actors killed on this machine before
        registry = default_registry()
        self.settings = build_run_settings(registry, models, allow_paths, embed_workflow=embed_workflow, previews=False)
        self.executor = Executor(registry, device=device)
        self.input_dir = input_dir
        self.name = f"{name} pid {os.getpid()}"
        self.runners: OrderedDict[str, Any] = OrderedDict()

    def run(self, document: dict, point: Point, models: Sequence[ModelFile],
            on_event: Callable[[Any], None] | None = None, keep_unsaved: bool = False,
            embed_workflow: bool | None = None, previews: bool | None = None) -> PointOutcome:
        from nodeflow.sweep.worker import PointRunner

        key = hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()
        runner = self.runners.pop(key, None) or PointRunner(document, self.executor, self.settings, self.input_dir,
                                                             name=self.name)
        self.runners[key] = runner
        while len(self.runners) > KEPT_WORKFLOWS:
            self.runners.popitem(last=False)[1].close()
        return runner.run(point, models, on_event, keep_unsaved, embed_workflow, previews)

    def run_streaming(self, document: dict, point: Point, models: Sequence[ModelFile],
                      embed_workflow: bool = True, previews: bool = False) -> Iterator[Any]:
        """:meth:`run` for a server job, yielding its live events (:data:`LIVE_EVENTS`; with
        ``previews``, each step's preview image too) as they happen and then the
        :class:`PointOutcome`, with the images the job showed but saved nowhere (a Ray
        streaming generator)."""
        events: queue.Queue[Any] = queue.Queue()
        done = object()
        result: list[Any] = []

        def work() -> None:
            try:
                result.append(self.run(document, point, models,
                                       lambda event: events.put(event) if isinstance(event, LIVE_EVENTS) else None,
                                       keep_unsaved=True, embed_workflow=embed_workflow, previews=previews))
            except BaseException as exc:  # re-raised below, in the actor's own call
                result.append(exc)
            finally:
                events.put(done)

        threading.Thread(target=work, name="nodeflow-job", daemon=True).start()
        while (event := events.get()) is not done:
            yield replace(event, preview=None) if isinstance(event, Progress) and not previews else event
        if isinstance(result[0], BaseException):
            raise result[0]
        yield result[0]

    def pid(self) -> int:
        return os.getpid()


class RayPool:
    """The actors: one per GPU (``num_gpus=1``) where the cluster has GPUs, else one per CPU,
    or ``actors``; Ray is started here unless it already runs in this process."""

    def __init__(self, device: str = "auto", models: Sequence[str] = (), allow_paths: Sequence[str] = (),
                 input_dir: str = "input", address: str | None = None, actors: int | None = None,
                 embed_workflow: bool = True):
        self._started = not ray.is_initialized()
        if self._started:
            ray.init(address=address, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        count = actors or gpus or max(1, int(resources.get("CPU", 1)))
        self._remote = ray.remote(WorkerActor).options(
            num_gpus=1 if gpus else 0, num_cpus=0 if gpus else 1, max_restarts=0, max_task_retries=0
        )
        self._args = (device, list(models), list(allow_paths), str(input_dir), embed_workflow)
        self._lock = threading.Lock()
        self.restarts = 0
        self.actors = [self._new(i) for i in range(count)]

    def _new(self, i: int) -> Any:
        return self._remote.remote(*self._args, f"actor {i}")

    def __len__(self) -> int:
        return len(self.actors)

    def pids(self) -> list[int]:
        """The actors' process ids (e.g. to kill one in a test)."""
        return ray.get([actor.pid.remote() for actor in self.actors])

    def replace(self, i: int, dead: Any) -> bool:
        """Actor ``i`` (``dead``) died: start another in its place, unless one already was,
        or the pool has replaced ``MAX_RESTARTS``. Returns whether actor ``i`` can be used."""
        with self._lock:
            if self.actors[i] is not dead:
                return True  # another user of the pool replaced it already
            if self.restarts >= MAX_RESTARTS:
                return False
            self.restarts += 1
            self.actors[i] = self._new(i)
        from nodeflow.sweep.worker import remove_stale_staging

        remove_stale_staging()  # what the dead actor left on this machine (the new one cleans its own)
        return True

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        if self._started:
            ray.shutdown()


class RayBackend:
    """A sweep's points on a :class:`RayPool` (its own, or one it is lent, e.g. the server's)."""

    name = "ray"

    def __init__(self, document: dict, device: str = "auto", models: Sequence[str] = (),
                 allow_paths: Sequence[str] = (), input_dir: str = "input", address: str | None = None,
                 actors: int | None = None, embed_workflow: bool = True, pool: RayPool | None = None):
        self._owns_pool = pool is None
        self.pool = pool if pool is not None else RayPool(device, models, allow_paths, input_dir, address, actors,
                                                          embed_workflow)
        self.document = document
        self._stop = False
        self.retried: list[int] = []  # indexes of points handed to another actor after theirs died

    @property
    def actors(self) -> list[Any]:
        return self.pool.actors

    def pids(self) -> list[int]:
        return self.pool.pids()

    def run(self, points: Sequence[PointPlan], models: Sequence[ModelFile],
            deliver: Callable[[PointPlan, PointOutcome], None], on_event: Any = None) -> None:
        queues = [deque(part) for part in assign(list(points), len(self.pool))]
        alive = set(range(len(self.pool)))
        in_flight: dict[Any, tuple[int, Any, PointPlan]] = {}  # ref -> (actor index, actor, point)
        models = list(models)
        document = ray.put(self.document)

        def load(i: int) -> int:
            return sum(1 for owner, _, _ in in_flight.values() if owner == i)

        def feed(i: int) -> None:
            while i in alive and load(i) < IN_FLIGHT:
                if not queues[i]:
                    donors = [j for j in alive if j != i and len(queues[j]) > 1]
                    if not donors:
                        return
                    queues[i].append(queues[max(donors, key=lambda j: len(queues[j]))].pop())
                planned = queues[i].popleft()
                actor = self.pool.actors[i]
                in_flight[actor.run.remote(document, planned.point, models)] = (i, actor, planned)

        for i in sorted(alive):
            feed(i)
        while in_flight and not self._stop:
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)
            for ref in ready:
                i, actor, planned = in_flight.pop(ref)
                try:
                    outcome = ray.get(ref)
                except RayActorError:
                    self._lost(i, actor, planned, alive, queues)
                    for j in sorted(alive):
                        feed(j)
                    continue
                deliver(planned, outcome)
                feed(i)
                for j in sorted(alive):  # an idle actor may now take over queued points
                    feed(j)

    def _lost(self, i: int, actor: Any, planned: PointPlan, alive: set[int], queues: list[deque]) -> None:
        """Actor ``i`` died: the point it was running goes first to the living actor with the
        least queued, then the actor is replaced (when the pool may) and takes work again."""
        self.retried.append(planned.point.index)
        orphans = [planned, *queues[i]]
        queues[i].clear()
        alive.discard(i)
        if self.pool.replace(i, actor):  # a new actor in its place (once: its other calls fail the same way)
            alive.add(i)
        if not alive:
            raise SweepError("every Ray actor died; the points done so far are in the manifest")
        for orphan in reversed(orphans):  # the point that was running comes first again
            queues[min(alive, key=lambda j: (j == i, len(queues[j])))].appendleft(orphan)

    def interrupt(self) -> None:
        self._stop = True

    def close(self) -> None:
        if self._owns_pool:
            self.pool.close()


def run_job(pool: RayPool, i: int, document: dict, on_event: Callable[[Any], None] | None = None,
            embed_workflow: bool = True, previews: bool = False) -> PointOutcome:
    """One server job (the workflow as it is, nothing varied) on actor ``i``; ``on_event``
    gets its live events while it runs (step previews with ``previews``); ``embed_workflow``
    says whether saved images hold the workflow. When the actor dies (killed by :func:`kill` to stop
    the job, or lost), the outcome says ``interrupted`` and the pool puts a new actor in its
    place for the next job."""
    actor = pool.actors[i]
    try:
        for ref in actor.run_streaming.options(num_returns="streaming").remote(document, Point(0, (), ()), [],
                                                                                  embed_workflow, previews):
            item = ray.get(ref)
            if isinstance(item, PointOutcome):
                return item
            if on_event is not None:
                on_event(item)
        return PointOutcome(0, "error", "the Ray actor's stream ended without an outcome")
    except RayActorError as exc:
        pool.replace(i, actor)
        return PointOutcome(0, "interrupted", f"the Ray actor running this job stopped: {type(exc).__name__}")


def kill(pool: RayPool, i: int) -> None:
    """Stop what actor ``i`` runs now (a cancelled job): it is killed (and replaced by :func:`run_job`)."""
    if i < len(pool.actors):
        ray.kill(pool.actors[i])
