"""One job's executor events as native and ComfyUI WebSocket messages.

Native messages (``/v1/events``) are ``{"type", "job_id", "seq", "time", ...}`` with a
``seq`` that counts up within the job, so a client can check it saw all of them in order:
``job.queued`` (sent at submission), ``job.started``, ``node.started`` / ``node.cached`` /
``node.finished`` / ``node.failed``, ``progress`` (with a ``preview`` data URL when the
server makes previews), then one of ``job.finished``, ``job.failed``, ``job.cancelled``,
``job.interrupted``.

ComfyUI messages (``/ws``) follow its names and payloads: ``execution_start``,
``execution_cached`` (sent before the next ``executing``, with the nodes found cached so far),
``executing``, ``progress``, ``executed`` (for output nodes, with their images),
``execution_success`` / ``execution_error`` / ``execution_interrupted``, then ``executing``
with ``node: null``; previews as binary frames (type 1, JPEG). Node ids are the client's.
"""

from __future__ import annotations

import base64
import io
import struct
import time
from pathlib import Path
from typing import Any, Callable

from nodeflow.engine.events import FileWritten, NodeCached, NodeFailed, NodeFinished, NodeStarted, Progress
from .comfy_shapes import comfy_id
from .hub import COMFY, NATIVE, Hub
from .store import CANCELLED, DONE, FAILED, Job

PREVIEW_FRAME = struct.pack(">II", 1, 1)  # ComfyUI's binary event "preview image", format JPEG
_END_TYPES = {DONE: "job.finished", FAILED: "job.failed", CANCELLED: "job.cancelled"}


def native_message(job_id: str, kind: str, seq: int, **data: Any) -> dict[str, Any]:
    return {"type": kind, "job_id": job_id, "seq": seq, "time": time.time(), **data}


class JobReporter:
    """Called with each executor event of ``job`` (on the worker thread)."""

    def __init__(self, job: Job, hub: Hub, output_dir: Path, on_event: Callable[[Any], None] | None = None):
        self.job = job
        self.hub = hub
        self.output_dir = output_dir
        self.on_event = on_event  # the worker's hook (cancellation checks)
        self.seq = 0  # 0 was job.queued
        self.current: str | None = None  # the node running now (files it writes are its outputs)
        self.files: dict[str, list[dict[str, str]]] = {}  # client's node id -> image refs
        self.cached: list[str] = []  # ComfyUI ids found cached, not yet announced
        self.last_executing: str | None = None

    # ---------------------------------------------------------------- sending
    def native(self, kind: str, **data: Any) -> None:
        self.seq += 1
        self.hub.publish(NATIVE, native_message(self.job.id, kind, self.seq, **data), job_id=self.job.id)

    def comfy(self, kind: str, **data: Any) -> None:
        message = {"type": kind, "data": {**data, "prompt_id": self.job.id, "timestamp": int(time.time() * 1000)}}
        self.hub.publish(COMFY, message, sid=self.job.client_id)

    def node(self, node_id: str | None) -> str | None:
        return comfy_id(self.job, node_id)

    # ---------------------------------------------------------------- the job
    def started(self) -> None:
        self.native("job.started")
        self.comfy("execution_start")

    def __call__(self, event: Any) -> None:
        if self.on_event is not None:
            self.on_event(event)
        if isinstance(event, NodeCached):
            node = self.node(event.node_id)
            self.native("node.cached", node=node, node_type=event.node_type)
            if node not in self.cached:
                self.cached.append(node)
        elif isinstance(event, NodeStarted):
            self.current = event.node_id
            node = self.node(event.node_id)
            self.native("node.started", node=node, node_type=event.node_type)
            self._flush_cached()
            if node != self.last_executing:
                self.last_executing = node
                self.comfy("executing", node=node, display_node=node)
        elif isinstance(event, FileWritten):  # a saved image is an output of its node
            node = self.node(event.node_id) or ""
            self.files.setdefault(node, []).append(file_ref(Path(event.path), self.output_dir, "output"))
        elif isinstance(event, Progress):
            self._progress(event)
        elif isinstance(event, NodeFinished):
            node = self.node(event.node_id)
            files = self.files.get(node or "", [])
            self.native("node.finished", node=node, node_type=event.node_type, seconds=event.seconds, files=files)
            if files and event.node_id == self.current:
                self.comfy("executed", node=node, display_node=node, output={"images": files})
            self.current = None
        elif isinstance(event, NodeFailed):
            self.native("node.failed", node=self.node(event.node_id), node_type=event.node_type, message=event.message,
                        field=event.field)

    def _progress(self, event: Progress) -> None:
        node = self.node(event.node_id)
        jpeg = _jpeg(event.preview) if event.preview is not None else None
        extra = {"preview": "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()} if jpeg else {}
        self.native("progress", node=node, value=event.step, max=event.total, **extra)
        self.comfy("progress", node=node, value=event.step, max=event.total)
        if jpeg:
            self.hub.publish(COMFY, PREVIEW_FRAME + jpeg, sid=self.job.client_id)

    def _flush_cached(self) -> None:
        if self.cached:
            self.comfy("execution_cached", nodes=self.cached)
            self.cached = []

    def finished(self, status: str, outputs: dict[str, Any], error: dict[str, Any] | None,
                 late_outputs: dict[str, Any]) -> None:
        """The end of the job: outputs not announced yet (images kept in the temp folder),
        then the outcome, in both protocols."""
        self._flush_cached()
        for node, output in late_outputs.items():
            self.comfy("executed", node=node, display_node=node, output=output)
        executed = list(self.job.node_times)
        if status == DONE:
            self.native("job.finished", outputs=outputs)
            self.comfy("execution_success")
        elif status == FAILED:
            self.native("job.failed", error=error)
            self.comfy("execution_error", node_id=(error or {}).get("node"), node_type=(error or {}).get("node_type"),
                       executed=executed, exception_message=(error or {}).get("message", ""),
                       exception_type="NodeError", traceback=[], current_inputs={}, current_outputs=[])
        else:
            self.native(_END_TYPES.get(status, "job.interrupted"), error=error)
            self.comfy("execution_interrupted", node_id=(error or {}).get("node"),
                       node_type=(error or {}).get("node_type"), executed=executed)
        self.comfy("executing", node=None, display_node=None)


def file_ref(path: Path, root: Path, kind: str) -> dict[str, str]:
    """ComfyUI's image reference: ``{"filename", "subfolder", "type"}``, relative to ``root``."""
    try:
        relative = path.resolve().relative_to(root)
    except ValueError:
        relative = Path(path.name)
    subfolder = relative.parent.as_posix()
    return {"filename": relative.name, "subfolder": "" if subfolder == "." else subfolder, "type": kind}


def _jpeg(preview: Any) -> bytes | None:
    save = getattr(preview, "save", None)
    if save is None:
        return None
    buffer = io.BytesIO()
    try:
        preview.convert("RGB").save(buffer, format="JPEG", quality=85)
    except (OSError, ValueError):
        return None
    return buffer.getvalue()
