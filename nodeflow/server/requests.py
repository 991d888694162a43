"""Reading request bodies the way the loader reads files: strict JSON, clear errors.

Shared by the ComfyUI and the native routes. A body that is not JSON, has NaN/Infinity,
or nests too deeply is answered with 400 and the reason, never a traceback.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400, body: dict[str, Any] | None = None):
        super().__init__(message)
        self.status = status
        self.body = body if body is not None else {"error": {"type": "bad_request", "message": message}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body, status_code=self.status)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def json_body(request: Request, default: Any = None) -> Any:
    raw = await request.body()
    if not raw.strip():
        if default is not None:
            return default
        raise BadRequest("the request has no body; expected a JSON object")
    try:
        return json.loads(raw, parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("the JSON is nested too deeply") from None


def service_of(request: Any) -> Any:
    return request.app.state.service
