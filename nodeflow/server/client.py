"""``nodeflow run --server URL``: hand a run to a warm ``nodeflow serve`` and behave like a local run.

A cold ``nodeflow run`` spends most of its seconds importing torch, diffusers and
transformers and loading the model; a running server has done both. This client sends
the workflow (already loaded and ``--set`` here) to ``POST /v1/jobs``, turns the job's
``/v1/events`` into the executor's own events (so the CLI's progress bar and failure
lines are the same), and downloads the images the job saved into the local output folder
under the names a local run would give them (:func:`nodeflow.files.atomic.write_numbered`).
It asks for ``fresh_outputs``, so a job whose image is cached on the server still saves it
again, as a fresh process would.

Standard library HTTP and the ``websockets`` client only: no torch, no web framework.
Names sent by the server are checked before anything is written (a plain file name, a
subfolder without ``..``), so a server cannot make the client write outside its folder.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from nodeflow.engine.events import (
    Event, FileWritten, NodeCached, NodeFailed, NodeFinished, NodeStarted, Progress, RunFinished, RunStarted, RunStatus,
)
from nodeflow.files.atomic import write_atomically, write_numbered
from nodeflow.model.problems import Problem, ProblemCode

_NUMBERED = re.compile(r"(.+)_\d{5,}(\.[A-Za-z0-9]+)")
_ENDS = {"job.finished", "job.failed", "job.cancelled", "job.interrupted"}
CONNECT_SECONDS = 5.0


class ServerError(Exception):
    """The server cannot be reached, is not a nodeflow server, or broke off; the message says which."""


@dataclass
class RemoteResult:
    """What a local :class:`~nodeflow.engine.executor.RunResult` tells the CLI, for a job."""

    status: RunStatus
    seconds: float = 0.0
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    error: str | None = None
    problems: list[Problem] = field(default_factory=list)
    job_id: str | None = None


class ServerClient:
    """One server at ``url`` (``http://host:port``; ``host:port`` is taken as http)."""

    def __init__(self, url: str, token: str | None = None):
        url = url.strip().rstrip("/")
        if "://" not in url:
            url = "http://" + url
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ServerError(f"--server {url!r}: give the server's address, e.g. http://127.0.0.1:8188")
        self.url = url
        self.ws_url = ("wss" if parts.scheme == "https" else "ws") + url[len(parts.scheme):]
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    # ------------------------------------------------------------------ HTTP
    def request(self, method: str, path: str, body: Any = None, timeout: float = 60.0) -> tuple[int, Any]:
        """``(status, JSON or bytes)``; a connection failure is a :class:`ServerError`."""
        data = None if body is None else json.dumps(body).encode()
        headers = {**self.headers, **({"Content-Type": "application/json"} if data is not None else {})}
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, raw, kind = response.status, response.read(), response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            status, raw, kind = exc.code, exc.read(), exc.headers.get("Content-Type", "")
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServerError(f"cannot reach a nodeflow server at {self.url} ({reason})") from None
        if "json" in kind:
            try:
                return status, json.loads(raw)
            except ValueError:
                pass
        return status, raw

    def check(self) -> None:
        """Refuse early, and say why, when ``url`` is no nodeflow server one can use."""
        status, body = self.request("GET", "/v1/health", timeout=CONNECT_SECONDS)
        if status == 401:
            raise ServerError(f"the server at {self.url} needs a token: set NODEFLOW_TOKEN")
        if status != 200 or not isinstance(body, dict) or body.get("status") != "ok":
            raise ServerError(f"{self.url} is not a nodeflow server (GET /v1/health answered {status})")

    def upload(self, path: Path, subfolder: str = "") -> str:
        """Put a local image into the server's input folder; the name to use for it there
        (the server numbers it when a different file already has the name)."""
        boundary = "nodeflow-" + uuid.uuid4().hex
        parts = []
        for name, value in (("subfolder", subfolder), ("type", "input")):
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
        filename = path.name.replace('"', "_")
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + path.read_bytes() + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        request = urllib.request.Request(self.url + "/v1/uploads", data=body, method="POST", headers={
            **self.headers, "Content-Type": f"multipart/form-data; boundary={boundary}"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise ServerError(f"the server refused the input image {path}: {_text(exc.read())}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ServerError(f"cannot reach a nodeflow server at {self.url} ({getattr(exc, 'reason', exc)})") from None
        return "/".join(p for p in (answer.get("subfolder") or "", str(answer["name"])) if p)

    def upload_inputs(self, graph: Any, input_dir: Path) -> list[str]:
        """Upload every image the workflow reads from the input folder (a ``FileChoice`` of
        folder ``input``) that exists here, and point the workflow at the uploaded copies;
        files not found here are left for the server to find in its own input folder."""
        sent = []
        for node_id, node in graph.nodes.items():
            cls = graph.node_class(node_id)
            for name, declared in (cls.inputs.items() if cls is not None else ()):
                value = node.values.get(name)
                if getattr(declared, "folder", None) != "input" or not isinstance(value, str) or not value:
                    continue
                local = Path(value) if Path(value).is_absolute() else input_dir / value
                if not local.is_file():
                    continue
                relative = PurePosixPath(value.replace("\\", "/"))
                subfolder = "" if Path(value).is_absolute() or ".." in relative.parts else relative.parent.as_posix()
                graph.set_value(node_id, name, self.upload(local, "" if subfolder == "." else subfolder))
                sent.append(str(local))
        return sent

    # ------------------------------------------------------------------ a run
    def run(self, document: dict[str, Any], output_dir: Path, *, planned: tuple[str, ...] = (),
            embed_workflow: bool = True, on_event: Callable[[Event], None] | None = None,
            cancel: threading.Event | None = None) -> RemoteResult:
        """Queue ``document``, follow its events until it ends, download what it saved."""
        from websockets.exceptions import WebSocketException
        from websockets.sync.client import connect

        emit = on_event or (lambda _event: None)
        cancel = cancel or threading.Event()
        self.check()
        started = time.perf_counter()
        try:  # listening before submitting: no event of the job can be missed
            socket = connect(self.ws_url + "/v1/events", additional_headers=self.headers,
                             open_timeout=CONNECT_SECONDS, max_size=2**24)
        except (OSError, WebSocketException, TimeoutError) as exc:
            raise ServerError(f"cannot open {self.ws_url}/v1/events ({exc})") from None
        with socket:
            status, body = self.request("POST", "/v1/jobs", {
                "workflow": document, "fresh_outputs": True, "embed_workflow": embed_workflow,
            })
            if status == 400 and isinstance(body, dict):
                problems = [_problem(p) for p in body.get("problems") or []]
                return RemoteResult(RunStatus.INVALID, error=str(body.get("error")), problems=problems)
            if status != 201 or not isinstance(body, dict) or "id" not in body:
                raise ServerError(f"the server refused the job: {status} {_text(body)}")
            job_id = body["id"]
            emit(RunStarted(planned))
            cached: list[str] = []
            self._follow(socket, job_id, emit, cancel, cached, WebSocketException)
        status, job = self.request("GET", f"/v1/jobs/{job_id}")
        if status != 200 or not isinstance(job, dict):
            raise ServerError(f"the server lost job {job_id} ({status})")
        return self._result(job, cached, output_dir, started, emit)

    def _follow(self, socket: Any, job_id: str, emit: Callable[[Event], None], cancel: threading.Event,
                cached: list[str], socket_error: type[Exception]) -> None:
        cancel_sent = False
        while True:
            if cancel.is_set() and not cancel_sent:
                cancel_sent = True
                self.request("POST", f"/v1/jobs/{job_id}/cancel", timeout=CONNECT_SECONDS)
            try:
                raw = socket.recv(timeout=0.25)
            except TimeoutError:
                continue
            except (socket_error, OSError):  # the server went away: the job's record says how it ended
                return
            if isinstance(raw, bytes):
                continue
            message = json.loads(raw)
            if message.get("job_id") != job_id:
                continue  # another client's job
            kind, node, node_type = message.get("type"), message.get("node"), message.get("node_type") or ""
            if kind == "node.started":
                emit(NodeStarted(node, node_type))
            elif kind == "node.cached":
                cached.append(node)
                emit(NodeCached(node, node_type))
            elif kind == "progress":
                emit(Progress(node, int(message.get("value", 0)), int(message.get("max", 0))))
            elif kind == "node.finished":
                emit(NodeFinished(node, node_type, float(message.get("seconds", 0.0))))
            elif kind == "node.failed":
                emit(NodeFailed(node, node_type, str(message.get("message", "")), message.get("field")))
            elif kind in _ENDS:
                return

    def _result(self, job: dict[str, Any], cached: list[str], output_dir: Path, started: float,
                emit: Callable[[Event], None]) -> RemoteResult:
        error = job.get("error") or {}
        result = RemoteResult(RunStatus.OK, job_id=job["id"], timings=dict(job.get("node_times") or {}),
                              executed=list(job.get("node_times") or {}), cached=cached)
        state = job.get("status")
        if state == "done":
            for node, refs in (job.get("outputs") or {}).items():
                for ref in refs.get("images", []):
                    if ref.get("type") == "output":  # saved by the job (previews stay on the server)
                        path = self._download(ref, output_dir)
                        result.files.append(path)
                        emit(FileWritten(node, path))
        elif state == "failed" and error.get("problems"):
            result.status, result.problems = RunStatus.INVALID, [_problem(p) for p in error["problems"]]
        elif state == "cancelled":
            result.status = RunStatus.INTERRUPTED
        elif state == "interrupted":
            result.status, error = RunStatus.ERROR, {"message": "the server stopped while this job was running"}
        else:
            result.status = RunStatus.ERROR
        result.error = error.get("message") if result.status != RunStatus.OK else None
        result.seconds = time.perf_counter() - started
        emit(RunFinished(result.status, result.seconds, tuple(result.executed), tuple(cached), result.error,
                         result.timings))
        return result

    def _download(self, ref: dict[str, Any], output_dir: Path) -> Path:
        name, subfolder = str(ref.get("filename", "")), str(ref.get("subfolder", ""))
        parts = [p for p in subfolder.replace("\\", "/").split("/") if p]
        if not _plain(name) or not all(_plain(p) for p in parts):
            raise ServerError(f"the server named an output file {subfolder + '/' + name!r}, which is not a plain name")
        query = urllib.parse.urlencode({"filename": name, "subfolder": subfolder, "type": "output"})
        status, data = self.request("GET", "/view?" + query)
        if status != 200 or not isinstance(data, bytes):
            raise ServerError(f"could not download {name} from the server ({status})")
        folder = output_dir.joinpath(*parts)
        folder.mkdir(parents=True, exist_ok=True)
        numbered = _NUMBERED.fullmatch(name)
        if numbered:  # prefix_00007.png on the server: the next free prefix_NNNNN.png here
            return write_numbered(folder, numbered[1], data, suffix=numbered[2])
        write_atomically(folder / name, data, replace=False)
        return folder / name


def _plain(name: str) -> bool:
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\x00:")


def _problem(data: dict[str, Any]) -> Problem:
    try:
        code = ProblemCode(data.get("code"))
    except ValueError:
        code = ProblemCode.INVALID_VALUE
    return Problem(code, str(data.get("message", "")), data.get("node_id"), data.get("node_type"), data.get("field"))


def _text(body: Any) -> str:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else json.dumps(body)
    return text[:300]
