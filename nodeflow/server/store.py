"""The job queue and history, persisted in SQLite so they survive a crash or restart.

One table, one row per job. Every change is one transaction; the database runs in WAL
mode with ``synchronous=FULL``, so a ``kill -9`` at any moment leaves either the state
before a change or after it, never a torn row. :meth:`JobStore.recover` runs at start-up:
a job the previous process was running when it died is marked ``interrupted`` (it is not
re-run: a job that crashed the server would crash it again); queued jobs stay queued.
A sweep job (``extra["kind"] == "sweep"``) is the exception: it goes back to the queue,
because its own resume (:mod:`nodeflow.sweep.manifest`) runs only the points not yet on
disk; after ``MAX_SWEEP_RESUMES`` such restarts it is marked interrupted like any job.

Status: ``queued`` -> ``running`` -> ``done`` | ``failed`` | ``cancelled`` | ``interrupted``;
a queued job can also go straight to ``cancelled``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

QUEUED, RUNNING, DONE, FAILED, CANCELLED, INTERRUPTED = "queued", "running", "done", "failed", "cancelled", "interrupted"
STATUSES = (QUEUED, RUNNING, DONE, FAILED, CANCELLED, INTERRUPTED)
FINISHED = (DONE, FAILED, CANCELLED, INTERRUPTED)
SCHEMA_VERSION = 1
SWEEP_KIND = "sweep"
MAX_SWEEP_RESUMES = 3  # restarts a sweep job is resumed through before it counts as crashing the server

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    number REAL NOT NULL,
    status TEXT NOT NULL,
    source TEXT NOT NULL,
    client_id TEXT,
    workflow TEXT NOT NULL,
    prompt TEXT,
    overrides TEXT NOT NULL DEFAULT '{}',
    extra TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    node_times TEXT NOT NULL DEFAULT '{}',
    outputs TEXT NOT NULL DEFAULT '{}',
    error TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, number, created);
"""
_JSON_COLUMNS = ("workflow", "prompt", "overrides", "extra", "node_times", "outputs", "error")


@dataclass
class Job:
    id: str
    number: float
    status: str
    source: str  # "native" or "comfyui": which API it came in through (and how its node ids read)
    workflow: dict[str, Any]  # the native document that runs (overrides applied)
    client_id: str | None = None
    prompt: dict[str, Any] | None = None  # the ComfyUI API-format prompt as sent
    overrides: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    created: float = 0.0
    started: float | None = None
    finished: float | None = None
    node_times: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)  # node id -> {"images": [file refs]}
    error: dict[str, Any] | None = None  # {"node", "node_type", "field", "message"}
    cancel_requested: bool = False

    @property
    def kind(self) -> str:
        """``run`` (one workflow run) or ``sweep`` (many points, see :mod:`.sweeps`)."""
        return str(self.extra.get("kind") or "run")

    def summary(self) -> dict[str, Any]:
        """The job as the native API shows it (without the workflow, which can be large)."""
        return {
            "id": self.id, "number": self.number, "status": self.status, "source": self.source,
            "client_id": self.client_id, "created": self.created, "started": self.started,
            "finished": self.finished, "node_times": self.node_times, "outputs": self.outputs,
            "error": self.error, "overrides": self.overrides, "kind": self.kind,
        }


class JobStore:
    """Thread-safe access to the jobs table (one connection, one lock: calls are short)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self.resumed: list[str] = []  # sweep jobs :meth:`recover` queued again
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"{path} was written by a newer nodeflow (job schema {version})")
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ----------------------------------------------------------------- writing
    def _write(self, sql: str, params: Iterable[Any] = ()) -> int:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                count = self._db.execute(sql, tuple(params)).rowcount
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return count

    def add(self, job: Job) -> Job:
        """Queue ``job``; its ``number`` is set to one past the highest so far unless given."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if not job.number:
                    top = self._db.execute("SELECT COALESCE(MAX(number), 0) FROM jobs").fetchone()[0]
                    job.number = float(int(top) + 1)
                job.created = job.created or time.time()
                row = _to_row(job)
                self._db.execute(
                    f"INSERT INTO jobs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", tuple(row.values())
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return job

    def claim_next(self) -> Job | None:
        """The next queued job, now marked running; None when the queue is empty."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT * FROM jobs WHERE status=? ORDER BY number, created LIMIT 1", (QUEUED,)
                ).fetchone()
                if row is None:
                    self._db.execute("COMMIT")
                    return None
                started = time.time()
                self._db.execute("UPDATE jobs SET status=?, started=? WHERE id=?", (RUNNING, started, row["id"]))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        job = _from_row(row)
        job.status, job.started = RUNNING, started
        return job

    def finish(self, job_id: str, status: str, outputs: dict[str, Any], node_times: dict[str, float],
               error: dict[str, Any] | None) -> None:
        self._write(
            "UPDATE jobs SET status=?, finished=?, outputs=?, node_times=?, error=? WHERE id=? AND status=?",
            (status, time.time(), json.dumps(outputs), json.dumps(node_times),
             None if error is None else json.dumps(error), job_id, RUNNING),
        )

    def update_extra(self, job_id: str, extra: dict[str, Any]) -> None:
        """Replace a job's ``extra`` (a sweep's progress, written after every point)."""
        self._write("UPDATE jobs SET extra=? WHERE id=?", (json.dumps(extra), job_id))

    def requeue(self, job_id: str) -> None:
        """A running sweep the server stopped in goes back to the queue, to resume at the next start."""
        self._write("UPDATE jobs SET status=?, started=NULL WHERE id=? AND status=?", (QUEUED, job_id, RUNNING))

    def cancel(self, job_id: str) -> str | None:
        """Cancel a queued job, or flag a running one (its worker stops it). Returns the
        status the job had, or None when there is no such job."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT status FROM jobs WHERE id=?", (job_id,)).fetchone()
                if row is not None and row["status"] == QUEUED:
                    self._db.execute("UPDATE jobs SET status=?, finished=? WHERE id=?", (CANCELLED, time.time(), job_id))
                elif row is not None and row["status"] == RUNNING:
                    self._db.execute("UPDATE jobs SET cancel_requested=1 WHERE id=?", (job_id,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return None if row is None else row["status"]

    def cancel_queued(self) -> list[str]:
        """Cancel every queued job (ComfyUI's "clear queue"); returns their ids."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                ids = [r[0] for r in self._db.execute("SELECT id FROM jobs WHERE status=?", (QUEUED,))]
                self._db.execute("UPDATE jobs SET status=?, finished=? WHERE status=?", (CANCELLED, time.time(), QUEUED))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return ids

    def delete_finished(self, job_ids: Iterable[str] | None = None) -> int:
        """Forget finished jobs (ComfyUI's POST /history delete/clear); never a queued or running one."""
        marks = ", ".join("?" * len(FINISHED))
        if job_ids is None:
            return self._write(f"DELETE FROM jobs WHERE status IN ({marks})", FINISHED)
        ids = list(job_ids)
        if not ids:
            return 0
        return self._write(
            f"DELETE FROM jobs WHERE status IN ({marks}) AND id IN ({', '.join('?' * len(ids))})", (*FINISHED, *ids)
        )

    def recover(self) -> list[str]:
        """At start-up: jobs left running by a process that died are interrupted; sweeps
        are queued again (up to ``MAX_SWEEP_RESUMES`` times). Returns the interrupted ids;
        :attr:`resumed` holds the sweeps queued again."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                ids, self.resumed = [], []
                for row in self._db.execute("SELECT id, extra FROM jobs WHERE status=?", (RUNNING,)).fetchall():
                    extra = json.loads(row["extra"] or "{}")
                    if extra.get("kind") == SWEEP_KIND and int(extra.get("resumes", 0)) < MAX_SWEEP_RESUMES:
                        extra["resumes"] = int(extra.get("resumes", 0)) + 1
                        self._db.execute("UPDATE jobs SET status=?, started=NULL, extra=? WHERE id=?",
                                         (QUEUED, json.dumps(extra), row["id"]))
                        self.resumed.append(row["id"])
                    else:
                        ids.append(row["id"])
                error = json.dumps({"node": None, "node_type": None, "field": None,
                                    "message": "the server stopped while this job was running"})
                self._db.execute(
                    "UPDATE jobs SET status=?, finished=?, error=? WHERE status=?", (INTERRUPTED, time.time(), error, RUNNING)
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return ids

    # ----------------------------------------------------------------- reading
    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return None if row is None else _from_row(row)

    def list(self, statuses: Iterable[str] = (), limit: int | None = None, offset: int = 0,
             newest_first: bool = False) -> list[Job]:
        statuses = list(statuses)
        sql = "SELECT * FROM jobs"
        if statuses:
            sql += f" WHERE status IN ({', '.join('?' * len(statuses))})"
        sql += " ORDER BY number DESC, created DESC" if newest_first else " ORDER BY number, created"
        sql += " LIMIT ? OFFSET ?"
        with self._lock:
            rows = self._db.execute(sql, (*statuses, -1 if limit is None else limit, max(0, offset))).fetchall()
        return [_from_row(r) for r in rows]

    def count(self, statuses: Iterable[str]) -> int:
        statuses = list(statuses)
        with self._lock:
            return self._db.execute(
                f"SELECT COUNT(*) FROM jobs WHERE status IN ({', '.join('?' * len(statuses))})", statuses
            ).fetchone()[0]

    def cancel_requested(self, job_id: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT cancel_requested FROM jobs WHERE id=?", (job_id,)).fetchone()
        return bool(row and row[0])


def _to_row(job: Job) -> dict[str, Any]:
    row = {
        "id": job.id, "number": job.number, "status": job.status, "source": job.source, "client_id": job.client_id,
        "created": job.created, "started": job.started, "finished": job.finished,
        "cancel_requested": int(job.cancel_requested),
    }
    for name in _JSON_COLUMNS:
        value = getattr(job, name)
        row[name] = None if value is None else json.dumps(value)
    return row


def _from_row(row: sqlite3.Row) -> Job:
    values = dict(row)
    for name in _JSON_COLUMNS:
        if values[name] is not None:
            values[name] = json.loads(values[name])
    values["cancel_requested"] = bool(values["cancel_requested"])
    return Job(**values)
