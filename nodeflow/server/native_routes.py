"""nodeflow's own API under ``/v1``: jobs with ids and a status that says where they are.

Unlike ComfyUI's routes, an unknown job is a 404 and a job not finished yet says
``queued`` or ``running``; cancelling names one job; a refused workflow answers 400 with
every problem (code, message, node, node type, field). The pydantic models below are what
the OpenAPI schema (``/openapi.json``, rendered at ``/docs``) describes.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from .comfy_routes import receive_upload
from .requests import service_of
from .store import FINISHED, STATUSES, Job
from .submit import Refused, build_job
from .sweeps import build_sweep_job

router = APIRouter(prefix="/v1", tags=["nodeflow"])
Status = Literal["queued", "running", "done", "failed", "cancelled", "interrupted"]


class JobRequest(BaseModel):
    workflow: dict[str, Any] = Field(description="a nodeflow workflow, or a ComfyUI workflow (API or UI format)")
    overrides: dict[str, Any] = Field(default_factory=dict, description='values to set first: {"NODE.FIELD": value}',
                                      examples=[{"5.seed": 42, "Prompt.text": "a red circle"}])
    client_id: str | None = Field(default=None, description="ComfyUI clients with this id get the job's /ws events")
    fresh_outputs: bool = Field(default=False, description="run the output nodes (and save their images) even when "
                                "their results are cached, as a fresh process would; what `nodeflow run --server` sends")
    embed_workflow: bool = Field(default=True, description="store the workflow in saved images (false: "
                                 "`nodeflow run --no-metadata`)")


class SweepRequest(BaseModel):
    workflow: dict[str, Any] = Field(description="a nodeflow workflow, or a ComfyUI workflow (API or UI format)")
    vary: dict[str, list[Any] | str] = Field(
        description='the axes, in order: {"NODE.FIELD": [values] or a range/list SPEC as on the command line '
                    '("1..16", "0.5..2:0.5", "4,6,8")}; NODE is a node id or unique title of the nodeflow workflow',
        examples=[{"5.seed": "1..4", "7.scale": [4, 6]}])
    mode: Literal["product", "zip"] = Field("product", description="every combination, or the i-th value of each axis")
    overrides: dict[str, Any] = Field(default_factory=dict, description='values to set first: {"NODE.FIELD": value}')
    client_id: str | None = None


class FileRef(BaseModel):
    filename: str
    subfolder: str
    type: Literal["output"]
    url: str | None = None


class SweepAxisOut(BaseModel):
    node: str
    field: str
    values: list[Any]


class SweepPlanOut(BaseModel):
    points: int
    node_executions: int = Field(description="node runs the sweep costs, shared upstream work counted once")
    without_sharing: int = Field(description="node runs if every point ran alone")
    executions_by_type: dict[str, int]
    already_cached_by_type: dict[str, int]


class SweepOut(BaseModel):
    mode: Literal["product", "zip"]
    axes: list[SweepAxisOut]
    plan: SweepPlanOut = Field(description="the cost, planned at submission against the cache")
    points_done: int = Field(description="points with their files on disk (run now, or found done when resuming)")
    ran: int
    skipped: int = Field(description="points found done on disk (a resumed sweep)")
    failed: dict[str, str] = Field(description="point index -> error")
    folder: str = Field(description="subfolder of the output folder with the images, sheet.png and sweep.json")
    manifest: FileRef | None = None
    sheet: FileRef | None = None


class JobError(BaseModel):
    node: str | None = None
    node_type: str | None = None
    field: str | None = None
    message: str
    problems: list[dict[str, Any]] | None = Field(None, description="when the workflow was found invalid as it was "
                                                  "about to run (a model file gone since): every problem")


class ImageRef(BaseModel):
    filename: str
    subfolder: str
    type: Literal["output", "input", "temp"]
    url: str | None = None


class JobOut(BaseModel):
    id: str
    number: float
    status: Status
    source: Literal["native", "comfyui"]
    client_id: str | None = None
    created: float
    started: float | None = None
    finished: float | None = None
    node_times: dict[str, float] = Field(description="seconds per node that ran (cached nodes are absent)")
    outputs: dict[str, dict[str, list[ImageRef]]] = Field(description="node id -> {'images': [...]}")
    error: JobError | None = None
    overrides: dict[str, Any] = {}
    kind: Literal["run", "sweep"] = "run"
    sweep: SweepOut | None = Field(None, description="a sweep job's axes, cost and progress; outputs are keyed "
                                                     "'sheet' and by point index")


class JobList(BaseModel):
    jobs: list[JobOut]


class ProblemOut(BaseModel):
    code: str
    message: str
    node_id: str | None = None
    node_type: str | None = None
    field: str | None = None


class Refusal(BaseModel):
    error: str
    problems: list[ProblemOut]


class CancelOut(BaseModel):
    id: str
    was: Status
    status: Status | Literal["cancelling"]


class CacheOut(BaseModel):
    entries: int
    bytes: int
    budget_bytes: int
    hits: int
    misses: int
    evictions: int
    pinned: int


class Health(BaseModel):
    status: Literal["ok"]
    queue_remaining: int
    running: list[str]
    cache: CacheOut


def _url(ref: dict[str, Any]) -> dict[str, Any]:
    ref["url"] = "/view?" + urlencode({k: ref[k] for k in ("filename", "subfolder", "type")})
    return ref


def job_out(job: Job) -> dict[str, Any]:
    summary = job.summary()
    for output in summary["outputs"].values():
        for ref in output.get("images", []):
            _url(ref)
    if job.kind == "sweep":
        sweep = dict(job.extra.get("sweep") or {})
        for name in ("manifest", "sheet"):
            if sweep.get(name):
                sweep[name] = _url(dict(sweep[name]))
        summary["sweep"] = sweep
    return summary


@router.post("/jobs", status_code=201, response_model=JobOut, responses={400: {"model": Refusal}},
             summary="Queue a workflow")
async def submit(request: Request, body: JobRequest) -> Any:
    service = service_of(request)
    source = "native" if "format" in body.workflow else "comfyui"
    try:
        job = await run_in_threadpool(build_job, body.workflow, service.registry, service.config.run_context,
                                      source=source, overrides=body.overrides, client_id=body.client_id,
                                      extra={"fresh_outputs": body.fresh_outputs, "embed_workflow": body.embed_workflow})
    except Refused as exc:
        return JSONResponse({"error": exc.message, "problems": [p.to_dict() for p in exc.problems]}, status_code=400)
    await run_in_threadpool(service.submit, job)
    return job_out(job)


@router.post("/sweeps", status_code=201, response_model=JobOut, responses={400: {"model": Refusal}},
             summary="Queue a sweep: one workflow at every point of its axes")
async def submit_sweep(request: Request, body: SweepRequest) -> Any:
    service = service_of(request)
    try:
        job = await run_in_threadpool(build_sweep_job, body.workflow, body.vary, body.mode, service.registry,
                                      service.config.run_context, overrides=body.overrides, client_id=body.client_id)
    except Refused as exc:
        return JSONResponse({"error": exc.message, "problems": [p.to_dict() for p in exc.problems]}, status_code=400)
    await run_in_threadpool(service.submit, job)
    return job_out(job)


@router.get("/jobs", response_model=JobList, summary="List jobs, oldest first")
def list_jobs(request: Request, status: list[Status] = Query(default=[]), limit: int = Query(100, ge=1, le=10_000),
              offset: int = Query(0, ge=0)) -> Any:
    jobs = service_of(request).store.list([s for s in status if s in STATUSES], limit=limit, offset=offset)
    return {"jobs": [job_out(j) for j in jobs]}


@router.get("/jobs/{job_id}", response_model=JobOut, responses={404: {}}, summary="One job")
def get_job(request: Request, job_id: str) -> Any:
    job = service_of(request).store.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id!r}")
    return job_out(job)


@router.get("/jobs/{job_id}/workflow", responses={404: {}}, summary="The workflow a job runs (overrides applied)")
def get_job_workflow(request: Request, job_id: str) -> Any:
    job = service_of(request).store.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id!r}")
    return job.workflow


@router.get("/jobs/{job_id}/outputs", responses={404: {}, 409: {}}, summary="A finished job's images")
def get_outputs(request: Request, job_id: str) -> Any:
    job = service_of(request).store.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id!r}")
    if job.status not in FINISHED:
        raise HTTPException(409, f"job {job_id!r} is {job.status}, not finished")
    return job_out(job)["outputs"]


@router.post("/jobs/{job_id}/cancel", response_model=CancelOut, responses={404: {}, 409: {}},
             summary="Cancel one job (queued: at once; running: at its next step)")
def cancel(request: Request, job_id: str) -> Any:
    previous = service_of(request).cancel(job_id)
    if previous is None:
        raise HTTPException(404, f"no job {job_id!r}")
    if previous in FINISHED:
        raise HTTPException(409, f"job {job_id!r} is {previous} already")
    return {"id": job_id, "was": previous, "status": "cancelled" if previous == "queued" else "cancelling"}


@router.get("/nodes", summary="Node type declarations (as `nodeflow nodes --json`)")
def nodes(request: Request) -> list[dict[str, Any]]:
    import json

    # The same text as `nodeflow nodes --json` (data types print as their names).
    return json.loads(json.dumps([cls.describe() for cls in service_of(request).registry.types()], default=str))


@router.post("/uploads", summary="Upload an image into the input folder (multipart field 'image')")
async def upload(request: Request) -> Any:
    return await receive_upload(request)


@router.get("/health", response_model=Health, summary="Is the server up; how long is the queue")
def health(request: Request) -> Any:
    service = service_of(request)
    from dataclasses import asdict

    return {"status": "ok", "queue_remaining": service.queue_remaining(), "running": service.running_ids(),
            "cache": asdict(service.cache.stats())}
