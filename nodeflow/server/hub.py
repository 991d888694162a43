"""Fans job events out to the connected WebSocket clients, in order, without blocking the worker.

Workers run in threads; WebSockets live on the server's event loop. A worker hands each
message to :meth:`Hub.publish` from its thread; the hub moves it onto the loop with
``call_soon_threadsafe`` (which keeps the order) and appends it to the queue of every
client it is for. Each connection drains its own queue, so a slow client delays only
itself; one that falls :data:`MAX_BACKLOG` messages behind is disconnected rather than
let to grow the server's memory.

Who gets what: a native client (``/v1/events``) gets every job's events, or those of the
jobs it asked for; a ComfyUI client (``/ws?clientId=``) gets ``status`` broadcasts and the
events of the jobs submitted with its client id (of every job that has none), as ComfyUI does.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

MAX_BACKLOG = 10_000
NATIVE, COMFY = "native", "comfy"


@dataclass(eq=False)
class Client:
    protocol: str  # NATIVE or COMFY
    sid: str = ""  # ComfyUI client id
    jobs: frozenset[str] = frozenset()  # native: only these jobs (empty: all)
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    dropped: bool = False


class Hub:
    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.clients: dict[int, Client] = {}
        self._ids = itertools.count()

    # ------------------------------------------------------------- connections (loop)
    def connect(self, client: Client) -> int:
        key = next(self._ids)
        self.clients[key] = client
        return key

    def disconnect(self, key: int) -> None:
        self.clients.pop(key, None)

    # --------------------------------------------------------------- publishing (any thread)
    def publish(self, protocol: str, message: Any, *, sid: str | None = None, job_id: str | None = None) -> None:
        """Send ``message`` (a JSON-ready dict, or bytes for a binary frame) to the clients
        of ``protocol`` it is for: ComfyUI ones with ``sid`` (all when None), native ones
        following ``job_id``."""
        try:
            self.loop.call_soon_threadsafe(self._deliver, protocol, message, sid, job_id)
        except RuntimeError:  # the loop is closed: the server is stopping
            pass

    def _deliver(self, protocol: str, message: Any, sid: str | None, job_id: str | None) -> None:
        for client in list(self.clients.values()):
            if client.protocol != protocol or client.dropped:
                continue
            if protocol == COMFY and sid is not None and client.sid != sid:
                continue
            if protocol == NATIVE and client.jobs and job_id not in client.jobs:
                continue
            if client.queue.qsize() >= MAX_BACKLOG:
                client.dropped = True
                client.queue.put_nowait(None)  # tells the connection to close
                continue
            client.queue.put_nowait(message)
