"""The server's front door: who may call it, from which page, with how large a body.

An ASGI middleware in front of every HTTP route and WebSocket, checking in this order:

1. ``Host``: on a loopback bind only ``127.0.0.1``, ``localhost`` and ``[::1]`` (plus
   ``--allow-host`` names) are answered. A page on ``evil.example`` whose name is made to
   resolve to 127.0.0.1 (DNS rebinding) sends ``Host: evil.example`` and is refused.
2. ``Origin``: a browser names the page that makes a request. Only the server's own
   origin and ``--allow-origin`` ones pass; any other web page is refused, so it can
   neither POST a workflow to localhost nor open the WebSocket. Clients that are not
   browsers send no Origin and pass.
3. The token, when the server has one (any bind other than loopback must): as
   ``Authorization: Bearer TOKEN``, as the password of HTTP basic auth (what ComfyUI client
   libraries send for ``user:password@host`` URLs), or as ``?token=`` (for WebSockets in a
   browser). Compared in constant time.
4. The body: a ``Content-Length`` over the cap is refused before reading, and a body that
   streams past it is cut off with 413. Uploads have their own, larger cap.
"""

from __future__ import annotations

import base64
import hmac
import json
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs, urlsplit

from .config import ServerConfig, is_loopback

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]
UPLOAD_PATHS = ("/upload/image", "/api/upload/image", "/v1/uploads")
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")
_WILDCARDS = ("0.0.0.0", "::", "[::]", "")


class Guard:
    def __init__(self, app: ASGIApp, config: ServerConfig):
        self.app = app
        self.config = config
        names = {name.lower() for name in config.allowed_hosts}
        if config.loopback:
            names.update(LOOPBACK_NAMES)
        if config.host not in _WILDCARDS:
            names.add(config.host.lower())
        # A wildcard bind with no names given answers to any Host: the token protects it.
        self.host_names: set[str] | None = None if (config.host in _WILDCARDS and not config.allowed_hosts) else names
        self.origins = {o.rstrip("/").lower() for o in config.allowed_origins}

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        refusal = self.refusal(scope)
        if refusal is not None:
            if scope["type"] == "websocket":
                await receive()  # the "websocket.connect" that the refusal answers
            return await _refuse(scope, send, *refusal)
        if scope["type"] == "websocket":
            return await self.app(scope, receive, send)
        limit = self.config.max_upload_bytes if scope["path"] in UPLOAD_PATHS else self.config.max_body_bytes
        length = _header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return await _refuse(scope, send, 413, f"the request body is larger than the limit of {limit} bytes")
        received = 0
        started = too_large = False

        async def counted_receive() -> dict:
            nonlocal received, too_large
            if too_large:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # The route sees the client gone (whatever it makes of that, its answer
                    # is replaced below by the 413).
                    too_large = True
                    return {"type": "http.disconnect"}
            return message

        async def tracked_send(message: dict) -> None:
            nonlocal started
            if too_large:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except Exception:
            if not too_large:
                raise
        if too_large and not started:
            await _refuse(scope, send, 413, f"the request body is larger than the limit of {limit} bytes")

    # ------------------------------------------------------------------ checks
    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        hosts = [v for k, v in scope["headers"] if k == b"host"]
        if len(hosts) != 1:
            return 400, "exactly one Host header is required"
        host = hosts[0].decode("latin-1").strip().lower()
        if self.host_names is not None and _host_name(host) not in self.host_names:
            return 403, f"Host {host!r} is not one this server answers to (see --allow-host)"
        origin = _header(scope, b"origin")
        if origin is not None and not self.origin_allowed(origin.strip().lower(), host):
            return 403, f"requests from the web page at {origin!r} are refused (see --allow-origin)"
        if self.config.token and not self.token_ok(scope):
            return 401, "a token is required: send 'Authorization: Bearer TOKEN' (or ?token=TOKEN)"
        return None

    def origin_allowed(self, origin: str, host: str) -> bool:
        if origin.rstrip("/") in self.origins:
            return True
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False  # "null" (a sandboxed page, a file), or something else odd
        return parts.netloc == host  # the server's own pages (the docs)

    def token_ok(self, scope: Scope) -> bool:
        expected = (self.config.token or "").encode()
        for candidate in _offered_tokens(scope):
            if hmac.compare_digest(candidate.encode("utf-8", "replace"), expected):
                return True
        return False


def _offered_tokens(scope: Scope) -> list[str]:
    offered = []
    auth = _header(scope, b"authorization") or ""
    kind, _, value = auth.partition(" ")
    if kind.lower() == "bearer":
        offered.append(value.strip())
    elif kind.lower() == "basic":
        try:
            offered.append(base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[2])
        except (ValueError, UnicodeDecodeError):
            pass
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    offered += query.get("token", [])
    return offered


def _host_name(host: str) -> str:
    """``host`` without its port: ``localhost:8188`` -> ``localhost``, ``[::1]:80`` -> ``[::1]``."""
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


async def _refuse(scope: Scope, send: Callable, status: int, message: str) -> None:
    if scope["type"] == "websocket":
        # Before the handshake is accepted, closing makes the server answer 403.
        await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
        return
    body = json.dumps({"error": {"type": "refused", "message": message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="nodeflow"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


__all__ = ["Guard", "is_loopback"]
