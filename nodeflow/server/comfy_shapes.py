"""nodeflow's jobs and problems in the shapes ComfyUI's API uses, so its clients read them.

Node ids: a ComfyUI node becomes one nodeflow node with the same id, or several whose ids
are that id plus a suffix (KSampler ``3`` -> ``3`` Sampler, ``3.noise``, ``3.cfg``; see the
diffusion pack's importer). :func:`comfy_id` maps back, so events and errors name the
node the client sent.
"""

from __future__ import annotations

from typing import Any, Iterable

from nodeflow.model.problems import Problem
from .store import CANCELLED, DONE, INTERRUPTED, Job


OUTPUTS_KEY = "_outputs"  # in Job.extra: the client's ids of the output nodes, for queue entries


def comfy_id(job: Job, node_id: str | None) -> str | None:
    """The id the client knows for nodeflow node ``node_id`` of ``job``."""
    if node_id is None or job.source != "comfyui":
        return node_id
    return node_id.split(".", 1)[0]


def class_type(job: Job, node_id: str | None) -> str | None:
    prompt = job.prompt or {}
    entry = prompt.get(node_id or "") if isinstance(prompt, dict) else None
    return entry.get("class_type") if isinstance(entry, dict) else None


def error(kind: str, message: str, details: str = "", extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": extra or {}}


def node_errors(problems: Iterable[Problem], prompt: Any) -> dict[str, Any]:
    """Problems grouped by the client's node id, as ComfyUI's ``node_errors``."""
    prompt = prompt if isinstance(prompt, dict) else {}
    out: dict[str, Any] = {}
    for problem in problems:
        if problem.node_id is None:
            continue
        node = problem.node_id.split(".", 1)[0] if problem.node_id.split(".", 1)[0] in prompt else problem.node_id
        entry = out.setdefault(node, {
            "errors": [], "dependent_outputs": [],
            "class_type": (prompt.get(node) or {}).get("class_type", problem.node_type),
        })
        extra = {"input_name": problem.field} if problem.field else {}
        entry["errors"].append(error(problem.code, problem.message, str(problem), extra))
    return out


def refusal(message: str, problems: list[Problem], prompt: Any) -> dict[str, Any]:
    """The body of a 400 answer to ``POST /prompt``."""
    if not problems:
        return {"error": error("invalid_prompt", message, message), "node_errors": {}}
    general = [str(p) for p in problems if p.node_id is None]
    kind = "prompt_no_outputs" if general and len(general) == len(problems) else "prompt_outputs_failed_validation"
    details = "\n".join(str(p) for p in problems)
    return {"error": error(kind, message, details), "node_errors": node_errors(problems, prompt)}


def queue_entry(job: Job) -> list[Any]:
    """``[number, prompt_id, prompt, extra_data, outputs_to_execute]``."""
    prompt = job.prompt if job.prompt is not None else job.workflow
    extra = {k: v for k, v in job.extra.items() if k != OUTPUTS_KEY}
    if job.client_id:
        extra["client_id"] = job.client_id
    extra.setdefault("create_time", int(job.created * 1000))
    outputs = list(job.extra.get(OUTPUTS_KEY, []))
    return [job.number, job.id, prompt, extra, outputs]


def history_entry(job: Job) -> dict[str, Any]:
    ok = job.status == DONE
    messages: list[Any] = []
    if job.started is not None:
        messages.append(["execution_start", {"prompt_id": job.id, "timestamp": int(job.started * 1000)}])
    end = int((job.finished or job.started or job.created) * 1000)
    if ok:
        messages.append(["execution_success", {"prompt_id": job.id, "timestamp": end}])
    elif job.status in (CANCELLED, INTERRUPTED):
        messages.append(["execution_interrupted", {"prompt_id": job.id, "timestamp": end,
                                                   **_where(job)}])
    else:
        messages.append(["execution_error", {"prompt_id": job.id, "timestamp": end, **_where(job),
                                             "exception_message": (job.error or {}).get("message", ""),
                                             "exception_type": "NodeError"}])
    return {
        "prompt": queue_entry(job),
        "outputs": job.outputs,
        "status": {"status_str": "success" if ok else "error", "completed": ok, "messages": messages},
        "meta": {node: {"node_id": node, "display_node": node} for node in job.outputs},
    }


def _where(job: Job) -> dict[str, Any]:
    err = job.error or {}
    return {"node_id": err.get("node"), "node_type": err.get("node_type"), "executed": list(job.node_times)}


def status(queue_remaining: int, sid: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"status": {"exec_info": {"queue_remaining": queue_remaining}}}
    if sid is not None:
        data["sid"] = sid
    return {"type": "status", "data": data}
