"""Scripting nodeflow from Python::

    import nodeflow.api

    wf = nodeflow.api.open("workflows/txt2img.json")
    wf.set("5.seed", 42)                   # NODE.FIELD, NODE being an id or a unique title
    wf.set("Prompt", "text", "a red fox")  # or NODE, FIELD, VALUE
    result = wf.run(output_dir="out", device="cpu")
    image = result.outputs["9"]["image"]
    wf.save("fox.json")
    sweep = wf.sweep({"5.seed": range(1, 17)}, output_dir="seeds")  # see nodeflow.sweep

A :class:`Flow` keeps one executor, so running it again after a change re-runs only the
nodes the change affects. ``run`` raises :class:`RunFailed` (carrying the result) unless
the run succeeded; pass ``check=False`` to get the result of a failed run instead.
Graphs can also be built in code with :func:`new`, :meth:`Flow.add` and :meth:`Flow.connect`.
"""

from __future__ import annotations

import difflib
import os
from typing import Any, Iterable, Mapping

from nodeflow.engine.events import EventHandler
from nodeflow.host.settings import build_run_settings, user_named_files
from nodeflow.model.context import RunSettings
from nodeflow.engine.executor import Executor, RunResult
from nodeflow.model.graph import Graph, GraphError
from nodeflow.model.registry import NodeRegistry, default_registry

__all__ = ["Flow", "RunFailed", "from_dict", "new", "open"]

_UNSET: Any = object()


class RunFailed(Exception):
    """A run that did not finish with status "ok"; ``result`` has the details."""

    def __init__(self, result: RunResult):
        super().__init__(result.error or f"the run ended with status {result.status!r}")
        self.result = result


def open(path: str | os.PathLike[str], registry: NodeRegistry | None = None, **executor_options: Any) -> "Flow":
    """Load a workflow file; ``executor_options`` go to :class:`~nodeflow.engine.executor.Executor`
    (``device``, ``cache_budget_bytes``)."""
    from nodeflow.files.open import load_workflow

    workflow = load_workflow(path, registry or default_registry())
    return Flow(workflow.graph, workflow.ui, workflow.meta, workflow.problems, **executor_options)


def from_dict(data: Mapping[str, Any], registry: NodeRegistry | None = None, **executor_options: Any) -> "Flow":
    """A workflow from parsed JSON (e.g. ``json.load`` of a file or a web request)."""
    from nodeflow.files.open import workflow_from_dict

    workflow = workflow_from_dict(data, registry or default_registry())
    return Flow(workflow.graph, workflow.ui, workflow.meta, workflow.problems, **executor_options)


def new(registry: NodeRegistry | None = None, **executor_options: Any) -> "Flow":
    """An empty workflow, to build in code."""
    return Flow(Graph(registry or default_registry()), **executor_options)


class Flow:
    """A workflow being scripted: its graph plus the executor that runs it."""

    def __init__(
        self,
        graph: Graph,
        ui: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
        problems: Iterable[Any] = (),
        **executor_options: Any,
    ):
        self.graph = graph
        self.ui = dict(ui or {})
        self.meta = dict(meta or {})
        self.load_problems = list(problems)  # e.g. dangling links; judged again at every run
        self.trusted_paths: list[str] = []  # file paths set from code: the user's own, not the file's
        self.executor = Executor(graph.registry, **executor_options)

    # ------------------------------------------------------------------- finding
    def node(self, ref: str) -> str:
        """The id of the node whose id or (unique) title is ``ref``."""
        return self.graph.find_node(ref)

    def get(self, target: str, field: str | None = None) -> Any:
        """A widget value: ``get("5.seed")`` or ``get("5", "seed")``."""
        node_id, field = self._target(target, field)
        return self.graph.nodes[node_id].values[field]

    def set(self, target: str, field_or_value: Any, value: Any = _UNSET) -> "Flow":
        """Set a widget value: ``set("5.seed", 42)`` or ``set("5", "seed", 42)``; returns the
        flow so calls chain. Refused with a clear error for an unknown node or field, a
        bad value, or a widget fed by a link (the link would win, so the value would be
        silently ignored)."""
        if value is _UNSET:
            node_id, field = self._target(target, None)
            value = field_or_value
        else:
            node_id, field = self._target(target, field_or_value)
        link = self.graph.link_into(node_id, field)
        if link is not None:
            raise GraphError(
                f"node {node_id} field {field!r} is fed by a link from node {link.source} "
                f"(output {link.output!r}); disconnect it to set a value",
                node_id,
                field,
            )
        try:
            self.graph.set_value(node_id, field, value)
            self._trust_files(node_id, {field: value})
        except GraphError as exc:
            raise GraphError(f"node {node_id}: {exc}", node_id, field) from None
        return self

    # ------------------------------------------------------------------ building
    def add(self, type_name: str, node_id: str | None = None, title: str = "", **values: Any) -> str:
        """Add a node with the given widget values; returns its id."""
        node = self.graph.add_node(type_name, values, node_id=node_id, title=title)
        self._trust_files(node.id, values)
        return node.id

    def connect(self, source: str, target: str) -> "Flow":
        """Link ``"NODE.output"`` to ``"NODE.input"`` (ids or titles), replacing a link already there."""
        source_id, output = self._split(source)
        target_id, input_name = self._split(target)
        self.graph.connect(source_id, output, target_id, input_name, replace=True)
        return self

    # ------------------------------------------------------------------- running
    def run(
        self,
        outputs: Iterable[str] | None = None,
        output_dir: str | os.PathLike[str] = "output",
        input_dir: str | os.PathLike[str] = "input",
        device: str | None = None,
        on_event: EventHandler | None = None,
        settings: RunSettings | None = None,
        check: bool = True,
    ) -> RunResult:
        """Run the output nodes (or ``outputs``: ids or titles) and return the result, whose
        ``outputs`` maps each of them to ``{output name: value}``."""
        requested = None if outputs is None else [self.node(ref) for ref in outputs]
        result = self.executor.run(
            self.graph,
            requested,
            on_event=on_event,
            output_dir=output_dir,
            input_dir=input_dir,
            settings=self._settings(settings),
            device=device,
            extra_problems=self.load_problems,
        )
        if check and not result.ok:
            raise RunFailed(result)
        return result

    def sweep(
        self,
        vary: Mapping[str, Any],
        mode: str = "product",
        output_dir: str | os.PathLike[str] = "sweep",
        input_dir: str | os.PathLike[str] = "input",
        dry_run: bool = False,
        ray: str | bool | None = None,
        actors: int | None = None,
        on_point: Any = None,
        settings: RunSettings | None = None,
    ) -> Any:
        """Run the workflow at every point of ``vary`` (``{"5.seed": range(1, 17), "Prompt.text":
        ["a", "b"], "6.scale": "4..8:2"}``), crossed (``mode="product"``) or ``"zip"``-ped; see
        :mod:`nodeflow.sweep`. Returns the :class:`~nodeflow.sweep.SweepResult` (its ``plan`` says
        what the sweep cost), or with ``dry_run`` just the :class:`~nodeflow.sweep.SweepPlan`.
        Locally the points run on this flow's executor (its cache counts as done work);
        ``ray=True`` (a local Ray) or an address (``"auto"``) runs them on Ray actors."""
        from nodeflow.sweep import Sweep, axes_from_mapping

        settings = self._settings(settings)
        sweep = Sweep(self.graph, axes_from_mapping(self.graph, vary), mode, output_dir, settings,
                      self.executor.device, self.ui, self.meta, self.load_problems, cached=self.executor.cache)
        if dry_run:
            return sweep.plan
        if ray:
            from nodeflow.sweep.ray_backend import RayBackend

            backend: Any = RayBackend(sweep.document(), self.executor.device, allow_paths=self.trusted_paths,
                                      input_dir=str(input_dir), address=None if ray is True else str(ray),
                                      actors=actors, embed_workflow=settings.embed_workflow)
        else:
            backend = sweep.local_backend(self.executor, input_dir)
        try:
            return sweep.run(backend, on_point=on_point)
        finally:
            backend.close()

    def _trust_files(self, node_id: str, values: Mapping[str, Any]) -> None:
        """File paths given in code are the user's own, not a shared file's (see nodeflow.host.paths)."""
        self.trusted_paths += user_named_files(self.graph.registry, self.graph.nodes[node_id].type, values)

    def _settings(self, settings: RunSettings | None) -> RunSettings:
        """``settings`` (default: the host's, as the CLI builds them, with this workflow to
        embed in saved images) with the file paths set from code allowed."""
        if settings is None:
            from nodeflow.files.workflow import workflow_to_dict

            settings = build_run_settings(self.graph.registry, workflow=workflow_to_dict(self.graph, self.ui, self.meta))
        return settings.trusting(*self.trusted_paths)

    def interrupt(self) -> None:
        """Stop a run in progress (e.g. from another thread)."""
        self.executor.interrupt()

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the workflow (with the editor layout it was loaded with) atomically."""
        from nodeflow.files.workflow import save_workflow

        save_workflow(path, self.graph, self.ui, self.meta)

    # ------------------------------------------------------------------- helpers
    def _split(self, target: str) -> tuple[str, str]:
        node_ref, dot, name = str(target).rpartition(".")
        if not dot or not node_ref or not name:
            raise GraphError(f"expected NODE.NAME (e.g. '5.seed'), got {target!r}")
        return self.node(node_ref), name

    def _target(self, target: str, field: str | None) -> tuple[str, str]:
        node_id, field = (self.node(target), field) if field is not None else self._split(target)
        cls = self.graph.node_class(node_id)
        node = self.graph.nodes[node_id]
        if cls is None:
            raise GraphError(f"node {node_id}: node type {node.type!r} is not installed", node_id, field)
        widgets = cls.widgets()
        if field not in widgets:
            kind = "a socket (it takes a link, not a value)" if field in cls.inputs else "not a field of it"
            hint = difflib.get_close_matches(field, list(widgets), n=1)
            raise GraphError(
                f"node {node_id} ({cls.type}): {field!r} is {kind}"
                + (f"; did you mean {hint[0]!r}?" if hint and field not in cls.inputs else "")
                + f"; its fields are: {', '.join(widgets) or 'none'}",
                node_id,
                field,
            )
        return node_id, field
