"""ComfyUI's HTTP routes, served by nodeflow so its clients work unchanged.

Mounted at ``/`` and again under ``/api/`` (ComfyUI's newer prefix). The shapes are
ComfyUI's (see :mod:`.comfy_shapes`); the behaviour differs where ComfyUI's is a known
problem: ``/interrupt`` with a ``prompt_id`` stops only that job (without one it stops what
is running now, as ComfyUI does); ``POST /queue`` ``delete`` cancels by id. ``/history/{id}``
answers ``{}`` for a job that is unknown or not finished, as ComfyUI does; the native
``/v1/jobs/{id}`` tells the two apart.
"""

from __future__ import annotations

import platform
import re
import sys
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from .comfy_shapes import error, history_entry, queue_entry, refusal
from .files import FileRefused, save_upload, view_path
from .object_info import object_info
from .requests import BadRequest, json_body, service_of
from .store import FINISHED, QUEUED, RUNNING
from .submit import Refused, build_job

router = APIRouter(tags=["ComfyUI-compatible"])
_PROMPT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


@router.get("/prompt", summary="Queue size (ComfyUI)")
def get_prompt(request: Request) -> dict[str, Any]:
    return {"exec_info": {"queue_remaining": service_of(request).queue_remaining()}}


@router.post("/prompt", summary="Queue an API-format workflow (ComfyUI)")
async def post_prompt(request: Request) -> Response:
    try:
        body = await json_body(request)
        if not isinstance(body, dict) or "prompt" not in body:
            no_prompt = error("no_prompt", "No prompt provided", "No prompt provided")
            return JSONResponse({"error": no_prompt, "node_errors": {}}, status_code=400)
        service = service_of(request)
        prompt_id = body.get("prompt_id")
        if prompt_id is not None and (not isinstance(prompt_id, str) or not _PROMPT_ID.match(prompt_id)):
            raise BadRequest("prompt_id must be 1-128 letters, digits or _.:-")
        client_id = body.get("client_id")
        extra = body.get("extra_data") if isinstance(body.get("extra_data"), dict) else {}
        job = await run_in_threadpool(
            build_job, body["prompt"], service.registry, service.config.run_context, source="comfyui",
            client_id=str(client_id) if client_id else None, extra=extra, job_id=prompt_id,
        )
        if prompt_id is not None and await run_in_threadpool(service.store.get, prompt_id) is not None:
            raise BadRequest(f"a job with prompt_id {prompt_id!r} exists already", 409)
        await run_in_threadpool(service.submit, job)
    except BadRequest as exc:
        return exc.response()
    except Refused as exc:
        return JSONResponse(refusal(exc.message, exc.problems, body.get("prompt")), status_code=400)
    return JSONResponse({"prompt_id": job.id, "number": job.number, "node_errors": {}})


@router.get("/queue", summary="Running and pending jobs (ComfyUI)")
def get_queue(request: Request) -> dict[str, Any]:
    store = service_of(request).store
    return {
        "queue_running": [queue_entry(j) for j in store.list([RUNNING])],
        "queue_pending": [queue_entry(j) for j in store.list([QUEUED])],
    }


@router.post("/queue", summary="Cancel queued jobs by id, or clear the queue (ComfyUI)")
async def post_queue(request: Request) -> Response:
    try:
        body = await json_body(request)
    except BadRequest as exc:
        return exc.response()
    service = service_of(request)
    if isinstance(body, dict) and body.get("clear"):
        await run_in_threadpool(service.clear_queue)
    if isinstance(body, dict) and isinstance(body.get("delete"), list):
        for job_id in body["delete"]:
            job = await run_in_threadpool(service.store.get, str(job_id))
            if job is not None and job.status == QUEUED:
                await run_in_threadpool(service.cancel, job.id)
    return Response(status_code=200)


@router.get("/history", summary="Finished jobs (ComfyUI)")
def get_history(request: Request, max_items: int | None = None, offset: int = 0) -> dict[str, Any]:
    jobs = service_of(request).store.list(FINISHED, limit=max_items, offset=offset, newest_first=True)
    return {job.id: history_entry(job) for job in reversed(jobs)}


@router.get("/history/{prompt_id}", summary="One finished job (ComfyUI; {} if unknown or not finished)")
def get_history_item(request: Request, prompt_id: str) -> dict[str, Any]:
    job = service_of(request).store.get(prompt_id)
    return {job.id: history_entry(job)} if job is not None and job.status in FINISHED else {}


@router.post("/history", summary="Forget finished jobs (ComfyUI)")
async def post_history(request: Request) -> Response:
    try:
        body = await json_body(request)
    except BadRequest as exc:
        return exc.response()
    store = service_of(request).store
    if isinstance(body, dict) and body.get("clear"):
        await run_in_threadpool(store.delete_finished)
    if isinstance(body, dict) and isinstance(body.get("delete"), list):
        await run_in_threadpool(store.delete_finished, [str(i) for i in body["delete"]])
    return Response(status_code=200)


@router.get("/view", summary="An image from the output, input or temp folder (ComfyUI)")
def view(request: Request, filename: str = "", subfolder: str = "", type: str = "output") -> Response:
    try:
        path = view_path(service_of(request).config, filename, subfolder, type)
    except FileRefused as exc:
        return JSONResponse({"error": {"type": "refused", "message": str(exc)}}, status_code=exc.status)
    return FileResponse(path)


@router.post("/upload/image", summary="Upload an image into the input folder (ComfyUI)")
async def upload_image(request: Request) -> Response:
    return await receive_upload(request)


async def receive_upload(request: Request) -> Response:
    service = service_of(request)
    try:
        form = await request.form()
    except Exception as exc:  # a body that is not multipart/form-data
        return JSONResponse({"error": {"type": "bad_request", "message": f"expected a multipart form: {exc}"}},
                            status_code=400)
    upload = form.get("image")
    if upload is None or isinstance(upload, str):
        return JSONResponse({"error": {"type": "bad_request", "message": "the form needs a file field 'image'"}},
                            status_code=400)
    kind = str(form.get("type") or "input")
    subfolder = str(form.get("subfolder") or "")
    overwrite = str(form.get("overwrite") or "").lower() in ("1", "true")
    try:
        if kind != "input":
            raise FileRefused(f"uploads go to the input folder only, not {kind!r}")
        data = await upload.read()
        path = await run_in_threadpool(save_upload, service.config, upload.filename or "", data, subfolder, overwrite)
    except FileRefused as exc:
        return JSONResponse({"error": {"type": "refused", "message": str(exc)}}, status_code=exc.status)
    return JSONResponse({"name": path.name, "subfolder": subfolder, "type": "input"})


@router.get("/object_info", summary="Node types in ComfyUI's shape")
def get_object_info(request: Request) -> dict[str, Any]:
    return object_info(service_of(request).registry)


@router.get("/object_info/{node_class}", summary="One node type in ComfyUI's shape")
def get_object_info_node(request: Request, node_class: str) -> dict[str, Any]:
    info = object_info(service_of(request).registry)
    return {node_class: info[node_class]} if node_class in info else {}


@router.post("/interrupt", summary="Stop the running job, or only the one with this prompt_id (ComfyUI)")
async def interrupt(request: Request) -> Response:
    try:
        body = await json_body(request, default={})
    except BadRequest:
        body = {}
    prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
    service_of(request).interrupt(str(prompt_id) if prompt_id else None)
    return Response(status_code=200)


@router.get("/system_stats", summary="The machine and devices (ComfyUI)")
def system_stats(request: Request) -> dict[str, Any]:
    service = service_of(request)
    total, free = _memory()
    from nodeflow import __version__ as version

    return {
        "system": {"os": sys.platform, "ram_total": total, "ram_free": free, "nodeflow_version": version,
                   "comfyui_version": "nodeflow " + version, "python_version": sys.version,
                   "pytorch_version": _torch_version(), "embedded_python": False, "argv": ["nodeflow", "serve"],
                   "machine": platform.machine()},
        "devices": [{"name": w.device if w.executor is None else w.executor.device, "type": w.device.split(":")[0],
                     "index": 0, "vram_total": 0, "vram_free": 0, "torch_vram_total": 0, "torch_vram_free": 0}
                    for w in service.workers],
    }


@router.get("/features", summary="Feature flags (ComfyUI)")
def features() -> dict[str, Any]:
    return {"supports_preview_metadata": False, "max_upload_size": 0}


@router.get("/embeddings", summary="Text embeddings (ComfyUI; nodeflow has none)")
def embeddings() -> list[str]:
    return []


def _memory() -> tuple[int, int]:
    values = {}
    try:
        with open("/proc/meminfo") as file:
            for line in file:
                key, _, rest = line.partition(":")
                values[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return 0, 0
    return values.get("MemTotal", 0), values.get("MemAvailable", 0)


def _torch_version() -> str:
    torch = sys.modules.get("torch")  # reported once a job has loaded it; never imported for this
    return getattr(torch, "__version__", "not loaded yet")
