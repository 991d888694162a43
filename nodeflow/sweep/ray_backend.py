"""The points of a sweep on Ray actors: ``nodeflow sweep ... --ray [ADDRESS]`` (``pip install nodeflow[ray]``).

Ray is the scheduler; this module only decides which actor gets which point. There is
one actor per device (``num_gpus=1`` each where the cluster has GPUs, one CPU each
otherwise), and each keeps its own :class:`~nodeflow.sweep.worker.PointRunner`, hence
its own executor and cache: models load once per actor. Points are split with
:func:`nodeflow.sweep.plan.assign`, so points sharing upstream work (a prompt) go to one
actor; an actor whose own list runs out takes points from the end of the longest list.
Two points are in flight per actor so it never waits for the driver.

Results stream back as each point finishes, files included (as bytes: the driver writes
every file, on its own disk, so workers need no shared folder). Before a point runs, its
actor checks the sweep's model hashes (:mod:`nodeflow.sweep.models`) and fails the point
naming the file and the hash when its copy differs. An actor that dies (killed, out of
memory, its machine gone) loses no point: the points it had in flight or queued go to
the living actors. Ctrl+C kills the actors; completed points are in the manifest.

Only this module imports Ray, and only ``--ray`` (or the API's ``ray=``) imports it.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any, Callable, Sequence

import ray
from ray.exceptions import RayActorError

from nodeflow.sweep.axes import Point, SweepError
from nodeflow.sweep.models import ModelFile
from nodeflow.sweep.plan import PointPlan, assign
from nodeflow.sweep.worker import PointOutcome

IN_FLIGHT = 2  # points queued on each actor at once


class SweepActor:
    """What runs inside one Ray actor process (wrapped by ``ray.remote`` in :class:`RayBackend`)."""

    def __init__(self, document: dict, device: str, models: Sequence[str], allow_paths: Sequence[str],
                 input_dir: str, embed_workflow: bool, name: str):
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        from nodeflow.engine.executor import Executor
        from nodeflow.host.settings import build_run_settings
        from nodeflow.model.registry import default_registry
        from nodeflow.sweep.worker import PointRunner

        registry = default_registry()
        settings = build_run_settings(registry, models, allow_paths, embed_workflow=embed_workflow, previews=False)
        self.runner = PointRunner(document, Executor(registry, device=device), settings, input_dir,
                                  name=f"{name} pid {os.getpid()}")

    def run(self, point: Point, models: Sequence[ModelFile]) -> PointOutcome:
        return self.runner.run(point, models)

    def pid(self) -> int:
        return os.getpid()


class RayBackend:
    name = "ray"

    def __init__(self, document: dict, device: str = "auto", models: Sequence[str] = (),
                 allow_paths: Sequence[str] = (), input_dir: str = "input", address: str | None = None,
                 actors: int | None = None, embed_workflow: bool = True):
        self._started = not ray.is_initialized()
        if self._started:
            ray.init(address=address, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        count = actors or gpus or max(1, int(resources.get("CPU", 1)))
        remote = ray.remote(SweepActor).options(
            num_gpus=1 if gpus else 0, num_cpus=0 if gpus else 1, max_restarts=0, max_task_retries=0
        )
        self.actors = [
            remote.remote(document, device, list(models), list(allow_paths), str(input_dir), embed_workflow, f"actor {i}")
            for i in range(count)
        ]
        self._stop = False
        self.retried: list[int] = []  # indexes of points handed to another actor after theirs died

    def pids(self) -> list[int]:
        """The actors' process ids (e.g. to kill one in a test)."""
        return ray.get([actor.pid.remote() for actor in self.actors])

    def run(self, points: Sequence[PointPlan], models: Sequence[ModelFile],
            deliver: Callable[[PointPlan, PointOutcome], None], on_event: Any = None) -> None:
        queues = [deque(part) for part in assign(list(points), len(self.actors))]
        alive = set(range(len(self.actors)))
        in_flight: dict[Any, tuple[int, PointPlan]] = {}
        models = list(models)

        def load(i: int) -> int:
            return sum(1 for owner, _ in in_flight.values() if owner == i)

        def feed(i: int) -> None:
            while i in alive and load(i) < IN_FLIGHT:
                if not queues[i]:
                    donors = [j for j in alive if j != i and len(queues[j]) > 1]
                    if not donors:
                        return
                    queues[i].append(queues[max(donors, key=lambda j: len(queues[j]))].pop())
                planned = queues[i].popleft()
                in_flight[self.actors[i].run.remote(planned.point, models)] = (i, planned)

        for i in sorted(alive):
            feed(i)
        while in_flight and not self._stop:
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)
            for ref in ready:
                i, planned = in_flight.pop(ref)
                try:
                    outcome = ray.get(ref)
                except RayActorError:
                    self._lost(i, planned, alive, queues)
                    for j in sorted(alive):
                        feed(j)
                    continue
                deliver(planned, outcome)
                feed(i)
                for j in sorted(alive):  # an idle actor may now take over queued points
                    feed(j)

    def _lost(self, i: int, planned: PointPlan, alive: set[int], queues: list[deque]) -> None:
        """Actor ``i`` died: its points go to the living actor with the least queued."""
        alive.discard(i)
        orphans = [planned, *queues[i]]
        queues[i].clear()
        self.retried.append(planned.point.index)
        if not alive:
            raise SweepError("every Ray actor died; the points done so far are in the manifest")
        for orphan in reversed(orphans):  # the point that was running comes first again
            queues[min(alive, key=lambda j: len(queues[j]))].appendleft(orphan)

    def interrupt(self) -> None:
        self._stop = True

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        if self._started:
            ray.shutdown()
