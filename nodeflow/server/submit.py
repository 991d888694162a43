"""Turning a submitted workflow into a queued job, or into the reasons it cannot run.

A workflow from the network is an untrusted file: it goes through the same loader as a
shared file (size, depth and string limits; ComfyUI documents through the importer), then
validation, then a check of every file it names (no absolute paths, no ``..``, unless the
server's own ``--allow-path`` covers them; see :mod:`nodeflow.host.paths`), then each node's
``check_host`` against the server's folders, so a missing model or input image is refused at
submission naming node and field (as ``nodeflow validate`` does) instead of failing a queued
job later. Overrides from the request are untrusted too. Nothing here runs a node or imports
torch.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Mapping

from nodeflow.files.open import workflow_from_dict
from nodeflow.files.workflow import Workflow, WorkflowError
from nodeflow.host.paths import PathRefused, resolve_inside
from nodeflow.model.context import RunContext, RunSettings
from nodeflow.model.graph import Graph, GraphError
from nodeflow.model.problems import Problem, ProblemCode
from nodeflow.model.registry import NodeRegistry
from nodeflow.model.validation import validate
from .comfy_shapes import OUTPUTS_KEY
from .store import QUEUED, Job


@dataclass
class Refused(Exception):
    """A workflow that will not be queued: unreadable (``problems`` empty) or invalid."""

    message: str
    problems: list[Problem]


def build_job(
    document: Any,
    registry: NodeRegistry,
    context: RunContext,
    *,
    source: str,
    overrides: Mapping[str, Any] | None = None,
    client_id: str | None = None,
    extra: Mapping[str, Any] | None = None,
    job_id: str | None = None,
    number: float = 0.0,
) -> Job:
    """A queued :class:`Job` for ``document`` (a nodeflow or ComfyUI workflow), or :class:`Refused`.

    ``context`` holds the server's folders and settings the job will run with."""
    if not isinstance(document, dict):
        raise Refused("the workflow must be a JSON object", [])
    try:
        workflow = workflow_from_dict(document, registry)
    except WorkflowError as exc:
        raise Refused(str(exc), []) from None
    applied = apply_overrides(workflow.graph, overrides or {})
    problems = submission_problems(workflow.graph, workflow.problems, context)
    if problems:
        raise Refused(f"the workflow cannot run, {len(problems)} problem(s)", problems)
    outputs = list(dict.fromkeys(
        n.split(".", 1)[0] if source == "comfyui" else n for n in workflow.graph.output_nodes()
    ))
    return Job(
        id=job_id or str(uuid.uuid4()),
        number=number,
        status=QUEUED,
        source=source,
        workflow=_runnable(workflow),
        client_id=client_id,
        prompt=document if source == "comfyui" else None,
        overrides=applied,
        extra={**(extra or {}), OUTPUTS_KEY: outputs},
    )


def apply_overrides(graph: Graph, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Set ``{"NODE.FIELD": value}`` (NODE an id or unique title) on ``graph``; a bad one is
    refused naming the node and field, like ``nodeflow run --set``."""
    if not isinstance(overrides, Mapping):
        raise Refused("'overrides' must map \"NODE.FIELD\" to a value", [])
    problems = []
    for target, value in overrides.items():
        node_ref, dot, field = str(target).rpartition(".")
        if not dot or not node_ref or not field:
            problems.append(Problem(ProblemCode.INVALID_VALUE, f"override {target!r}: expected NODE.FIELD (e.g. '5.seed')"))
            continue
        try:
            node_id = graph.find_node(node_ref)
            graph.set_value(node_id, field, value)
        except GraphError as exc:
            node = graph.nodes.get(exc.node_id or "")
            problems.append(Problem(ProblemCode.INVALID_VALUE, f"override {target!r}: {exc}", exc.node_id,
                                    node.type if node else None, exc.field or field))
    if problems:
        raise Refused(f"{len(problems)} override(s) refused", problems)
    return dict(overrides)


def submission_problems(graph: Graph, load_problems: list[Problem], context: RunContext) -> list[Problem]:
    """Everything that stops ``graph`` from running on this server: validation with the
    server's folders (missing files, sizes over budget, an unusable output folder) and the
    files it may not name. A field refused for naming a file it may not is not reported a
    second time as missing."""
    refused = file_problems(graph, context.settings)
    named = {(p.node_id, p.field) for p in refused}
    checked = validate(graph, extra_problems=load_problems, context=context)
    return [p for p in checked if (p.node_id, p.field) not in named or p.node_id is None] + refused


def file_problems(graph: Graph, settings: RunSettings) -> list[Problem]:
    """Files named by the workflow that it may not name (absolute paths, ``..``), found
    before the job is queued; the node re-checks at run time (symlinks, existence)."""
    found = []
    for node_id, node in graph.nodes.items():
        cls = graph.node_class(node_id)
        if cls is None:
            continue
        for name, value in node.values.items():
            declared = cls.inputs.get(name)
            if getattr(declared, "kind", "") != "file" or not isinstance(value, str) or not value:
                continue
            try:
                resolve_inside(value, [], settings.trusted_paths, exists=lambda _path: False, what="file")
            except PathRefused as exc:
                found.append(Problem(ProblemCode.INVALID_VALUE, str(exc), node_id, node.type, name))
    return found


def _runnable(workflow: Workflow) -> dict[str, Any]:
    return workflow.to_dict()
