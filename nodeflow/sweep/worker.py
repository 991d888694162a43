"""Runs one point of a sweep and hands back what it made, as plain data.

The same code runs in the local process and inside each Ray actor: it keeps one
:class:`~nodeflow.engine.executor.Executor` (so models load once and shared upstream
work stays in its cache), checks the sweep's model hashes, runs the point's graph into a
fresh staging folder and returns the files' bytes; the driver decides where they go.
A fresh folder per attempt also means the output nodes always write (their signature
holds the folder), even when a point is retried on the worker that failed it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from nodeflow.engine.events import EventHandler, FileWritten
from nodeflow.engine.executor import Executor
from nodeflow.files.image_bytes import image_outputs, png_batch
from nodeflow.files.open import workflow_from_dict
from nodeflow.files.workflow import workflow_to_dict
from nodeflow.host.settings import user_named_files
from nodeflow.model.context import RunSettings
from nodeflow.sweep.axes import Point
from nodeflow.sweep.models import ModelFile, check_models
from nodeflow.sweep.plan import point_graph


STAGING_PREFIX = "nodeflow-sweep-"  # + the worker's pid: a folder whose process is gone is left over


def remove_stale_staging(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Remove staging folders of workers that died without cleaning up (a killed Ray actor);
    returns them. A folder is stale when the process its name carries no longer exists."""
    removed = []
    for folder in Path(root or tempfile.gettempdir()).glob(f"{STAGING_PREFIX}*-*"):
        pid_text = folder.name[len(STAGING_PREFIX):].split("-", 1)[0]
        if not pid_text.isdigit() or not folder.is_dir() or _alive(int(pid_text)):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


@dataclass
class PointOutcome:
    index: int  # the point's index
    status: str  # "ok", "error", "interrupted", "invalid"
    error: str | None = None
    executed: list[tuple[str, str]] = field(default_factory=list)  # (node id, node type) that ran
    cached: list[str] = field(default_factory=list)
    files: list[tuple[str, bytes]] = field(default_factory=list)  # (file name, content), in order
    seconds: float = 0.0
    worker: str = ""
    file_nodes: list[str] = field(default_factory=list)  # the node that wrote each of ``files``
    timings: dict[str, float] = field(default_factory=dict)  # seconds per node that ran
    failed_node: str | None = None
    failed_field: str | None = None
    unsaved: dict[str, list[bytes]] = field(default_factory=dict)  # node id -> PNGs of images it showed, saved nowhere


class PointRunner:
    """One worker's state: the workflow, its executor and the host settings it runs with."""

    def __init__(self, document: Mapping[str, Any], executor: Executor, settings: RunSettings,
                 input_dir: str | os.PathLike[str] = "input", name: str = "local"):
        self.executor = executor
        workflow = workflow_from_dict(document, executor.registry)
        self.graph, self.ui, self.meta, self.problems = workflow.graph, workflow.ui, workflow.meta, workflow.problems
        self.settings = settings
        self.input_dir = Path(input_dir)
        self.name = name
        remove_stale_staging()
        self._staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-"))

    def run(self, point: Point, models: Iterable[ModelFile] = (), on_event: EventHandler | None = None,
            keep_unsaved: bool = False, embed_workflow: bool | None = None,
            previews: bool | None = None) -> PointOutcome:
        """Run ``point``; with ``keep_unsaved``, the images of output nodes that wrote no file
        (Preview Image) come back as PNG bytes too (a server job: its client fetches them).
        ``embed_workflow`` and ``previews`` override the runner's settings for this run (a
        server job's ``--no-metadata``; a server made with ``--previews``)."""
        started = time.perf_counter()
        graph = point_graph(self.graph, point)
        problem = check_models(models, graph, self.settings)
        if problem is not None:
            return PointOutcome(point.index, "error", problem, worker=self.name)
        trusted = [path for node_id, name, value in point.overrides
                   for path in user_named_files(graph.registry, graph.nodes[node_id].type, {name: value})]
        settings = self.settings.trusting(*trusted).replace(workflow=workflow_to_dict(graph, self.ui, self.meta))
        if embed_workflow is not None:
            settings = settings.replace(embed_workflow=embed_workflow)
        if previews is not None:
            settings = settings.replace(previews=previews)
        folder = Path(tempfile.mkdtemp(prefix=f"point-{point.index}-", dir=self._staging))
        writers: dict[str, str] = {}  # file path -> the node that wrote it

        def watch(event: Any) -> None:
            if isinstance(event, FileWritten):
                writers[str(event.path)] = event.node_id
            if on_event is not None:
                on_event(event)

        try:
            result = self.executor.run(graph, on_event=watch, output_dir=folder, input_dir=self.input_dir,
                                       settings=settings, extra_problems=self.problems)
            written = list(result.files) if result.ok else []
            files = [(Path(p).name, Path(p).read_bytes()) for p in written]
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        file_nodes = [writers.get(str(p), "") for p in written]
        unsaved = {}
        if keep_unsaved and result.ok:
            for node_id, values in result.outputs.items():
                cls = graph.node_class(node_id)
                if cls is not None and node_id not in file_nodes:
                    unsaved[node_id] = [png for images in image_outputs(cls, values) for png in png_batch(images)]
        return PointOutcome(
            point.index, str(result.status), result.error,
            [(nid, graph.nodes[nid].type) for nid in result.executed], list(result.cached), files,
            time.perf_counter() - started, self.name, file_nodes,
            dict(result.timings), result.failed_node, result.failed_field, {k: v for k, v in unsaved.items() if v},
        )

    def interrupt(self) -> None:
        self.executor.interrupt()

    def close(self) -> None:
        shutil.rmtree(self._staging, ignore_errors=True)
