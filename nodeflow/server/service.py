"""The server's state, shared by the routes: the job store, the event hub, the workers.

Routes call these methods instead of touching the store and workers directly, so that
queuing a job always wakes a worker and tells the clients, and cancelling always reaches
the worker that runs the job.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from nodeflow.engine.cache import OutputCache
from nodeflow.model.registry import NodeRegistry
from .comfy_shapes import status
from .config import ServerConfig
from .hub import COMFY, Hub
from .reporter import native_message
from .store import QUEUED, RUNNING, Job, JobStore
from .worker import Worker


class Service:
    def __init__(self, config: ServerConfig, registry: NodeRegistry):
        self.config = config
        self.registry = registry
        for folder in (config.inputs, config.outputs, config.temp):
            folder.mkdir(parents=True, exist_ok=True)
        self.store = JobStore(config.database)
        self.recovered = self.store.recover()  # jobs a killed server was running: interrupted
        self.cache = OutputCache(config.cache_budget_bytes)
        self.wake = threading.Condition()
        self.hub: Hub | None = None
        self.workers: list[Worker] = []
        self.pool: Any = None  # the Ray actors, with --ray

    # ------------------------------------------------------------ life cycle
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.hub = Hub(loop)
        if self.config.ray:  # one queue worker per Ray actor; Ray is imported only here
            from nodeflow.sweep.ray_backend import RayPool

            config = self.config
            self.pool = RayPool(config.devices[0], config.model_dirs, config.allow_paths, str(config.inputs),
                                None if config.ray == "local" else config.ray, config.ray_actors)
            self.workers = [
                Worker(f"ray actor {i}", self.config, self.store, self.hub, self.registry, self.cache, self.wake,
                       self.queue_changed, pool=self.pool, actor=i)
                for i in range(len(self.pool))
            ]
        else:
            self.workers = [
                Worker(device, self.config, self.store, self.hub, self.registry, self.cache, self.wake,
                       self.queue_changed)
                for device in self.config.devices
            ]
        for worker in self.workers:
            worker.start()

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        for worker in self.workers:
            worker.join(timeout=10)
        if self.pool is not None:
            self.pool.close()
        self.store.close()

    # ------------------------------------------------------------------ jobs
    def submit(self, job: Job) -> Job:
        self.store.add(job)
        assert self.hub is not None
        self.hub.publish("native", native_message(job.id, "job.queued", 0, number=job.number), job_id=job.id)
        with self.wake:
            self.wake.notify()
        self.queue_changed()
        return job

    def cancel(self, job_id: str) -> str | None:
        """Cancel one job by id; returns the status it had (None: unknown job)."""
        previous = self.store.cancel(job_id)
        if previous == RUNNING:
            for worker in self.workers:
                worker.cancel(job_id)
        if previous == QUEUED:
            self._announce_cancelled(job_id)
            self.queue_changed()
        return previous

    def clear_queue(self) -> list[str]:
        ids = self.store.cancel_queued()
        for job_id in ids:
            self._announce_cancelled(job_id)
        self.queue_changed()
        return ids

    def interrupt(self, job_id: str | None = None) -> list[str]:
        """ComfyUI's /interrupt: the running job (or only ``job_id`` if it is running)."""
        return [found for worker in self.workers if (found := worker.interrupt(job_id))]

    def running_ids(self) -> list[str]:
        return [worker.current for worker in self.workers if worker.current]

    def queue_remaining(self) -> int:
        return self.store.count((QUEUED, RUNNING))

    def queue_changed(self) -> None:
        if self.hub is not None:
            self.hub.publish(COMFY, status(self.queue_remaining()))

    def _announce_cancelled(self, job_id: str) -> None:
        assert self.hub is not None
        error: dict[str, Any] = {"node": None, "node_type": None, "field": None, "message": "cancelled while queued"}
        self.hub.publish("native", native_message(job_id, "job.cancelled", 1, error=error), job_id=job_id)
