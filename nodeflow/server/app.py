"""The ASGI application: FastAPI routes behind the :class:`~.guard.Guard`, with the
workers started and stopped by the app's lifespan.

Why FastAPI (on Starlette, served by uvicorn): the native API's request and response
models give the OpenAPI schema for free and stay in step with the code; Starlette brings
WebSockets, multipart uploads and file responses; uvicorn is a small, well-kept server.
aiohttp (what ComfyUI uses) would need the schema written and kept by hand.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from nodeflow import __version__
from nodeflow.model.registry import NodeRegistry
from . import comfy_routes, native_routes, sockets
from .config import ServerConfig
from .docs_page import render
from .guard import Guard
from .service import Service

DESCRIPTION = (
    "Queue nodeflow or ComfyUI workflows, follow them over a WebSocket, fetch their images. "
    "The /v1 routes are nodeflow's own; the others speak ComfyUI's API (also under /api)."
)


def create_app(config: ServerConfig, registry: NodeRegistry) -> FastAPI:
    service = Service(config, registry)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        service.start(asyncio.get_running_loop())
        try:
            yield
        finally:
            await asyncio.to_thread(service.stop)

    app = FastAPI(title="nodeflow server", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url="/openapi.json")
    app.state.service = service
    app.include_router(native_routes.router)
    app.include_router(comfy_routes.router)
    app.include_router(comfy_routes.router, prefix="/api", include_in_schema=False)
    app.include_router(sockets.native_router)
    app.include_router(sockets.comfy_router)
    app.include_router(sockets.comfy_router, prefix="/api")

    @app.get("/docs", include_in_schema=False)
    def docs() -> Any:
        return HTMLResponse(render(app.openapi()))

    @app.get("/", include_in_schema=False)
    def index() -> Any:
        return HTMLResponse("<!doctype html><title>nodeflow server</title><p>nodeflow server is running. "
                            "API: <a href='/docs'>/docs</a></p>")

    app.add_middleware(Guard, config=config)
    return app
