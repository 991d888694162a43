"""The two WebSockets: ComfyUI's ``/ws?clientId=`` and the native ``/v1/events``.

Both only send: what a client writes is read and ignored (ComfyUI's ``feature_flags``
greeting is answered with the server's, empty, flags). A connection drains its own queue
from the :class:`~.hub.Hub`; it closes when the client goes or falls too far behind.
"""

from __future__ import annotations

import asyncio
import json
import uuid

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from .comfy_shapes import status
from .hub import COMFY, NATIVE, Client

comfy_router = APIRouter()
native_router = APIRouter()


@comfy_router.websocket("/ws")
async def comfy_socket(websocket: WebSocket) -> None:
    service = websocket.app.state.service
    sid = websocket.query_params.get("clientId") or uuid.uuid4().hex
    await websocket.accept()
    client = Client(COMFY, sid=sid)
    key = service.hub.connect(client)
    try:
        remaining = await asyncio.to_thread(service.queue_remaining)
        await websocket.send_json(status(remaining, sid))
        await _pump(websocket, client)
    finally:
        service.hub.disconnect(key)


@native_router.websocket("/v1/events")
async def native_socket(websocket: WebSocket) -> None:
    """Events of every job, or of the jobs named by ``?job=ID`` (repeatable)."""
    service = websocket.app.state.service
    await websocket.accept()
    client = Client(NATIVE, jobs=frozenset(websocket.query_params.getlist("job")))
    key = service.hub.connect(client)
    try:
        await _pump(websocket, client)
    finally:
        service.hub.disconnect(key)


async def _pump(websocket: WebSocket, client: Client) -> None:
    reader = asyncio.create_task(_read(websocket, client))
    try:
        while True:
            getter = asyncio.create_task(client.queue.get())
            done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                return
            message = getter.result()
            if message is None:  # the hub dropped this client: too far behind
                await websocket.close(code=1013, reason="too far behind; reconnect")
                return
            if isinstance(message, bytes):
                await websocket.send_bytes(message)
            else:
                await websocket.send_text(json.dumps(message))
    except (WebSocketDisconnect, RuntimeError):
        return
    finally:
        reader.cancel()


async def _read(websocket: WebSocket, client: Client) -> None:
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if client.protocol == COMFY and text:
                try:
                    data = json.loads(text)
                except ValueError:
                    continue
                if isinstance(data, dict) and data.get("type") == "feature_flags":
                    await client.queue.put({"type": "feature_flags", "data": {}})
    except (WebSocketDisconnect, RuntimeError):
        return
