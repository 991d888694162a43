"""The typed node API.

A node type is one small class::

    class Add(Node):
        type = "Add"
        category = "math"
        description = "Sum of two numbers."

        a = Float(0.0, tooltip="first term")
        b = Float(0.0)
        outputs = (Output("sum", "FLOAT"),)

        def run(self, ctx, a, b):
            return {"sum": a + b}

Inputs are the class attributes that are :class:`~nodeflow.fields.Input` objects, in
declaration order; ``outputs`` lists the results. ``run`` receives every input by
name (an unconnected optional socket arrives as ``None``) and returns a dict keyed by
output name, a tuple in output order, or, for a single output, the bare value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

from .fields import Input, Output, Widget


class Interrupted(Exception):
    """Raised inside a run when the user asked to stop; the executor turns it into exit 130."""


class NodeError(Exception):
    """A failure a node reports on purpose, with a message meant for the user."""


ProgressCallback = Callable[[int, int, Any], None]


@dataclass
class RunContext:
    """What the executor hands a running node besides its inputs.

    ``settings`` carries host configuration by name so the core does not need to know
    what packs use. Keys the shipped hosts (CLI, editor) set: ``model_folders``,
    ``model_names``, ``trusted_paths`` (see nodeflow.config / nodeflow.paths),
    ``workflow`` and ``embed_workflow`` (saved images carry the workflow),
    ``on_file_written`` (a callback given each written path) and ``previews`` (False
    when nobody will look at step previews, so nodes may skip computing them).
    """

    node_id: str = ""
    device: str = "cpu"
    output_dir: Path = field(default_factory=lambda: Path("output"))
    input_dir: Path = field(default_factory=lambda: Path("input"))
    settings: Mapping[str, Any] = field(default_factory=dict)
    on_progress: ProgressCallback | None = None
    is_interrupted: Callable[[], bool] = lambda: False

    def progress(self, step: int, total: int, preview: Any = None) -> None:
        """Report step ``step`` of ``total`` (1-based), with an optional preview image;
        also the natural place to stop, so it checks for interruption first."""
        self.check_interrupted()
        if self.on_progress is not None:
            self.on_progress(step, total, preview)

    def check_interrupted(self) -> None:
        if self.is_interrupted():
            raise Interrupted(f"interrupted in node {self.node_id}")


class Node:
    """Base class of every node type. Subclasses declare; they hold no state."""

    type: ClassVar[str] = ""
    display_name: ClassVar[str] = ""
    category: ClassVar[str] = "misc"
    description: ClassVar[str] = ""
    version: ClassVar[int] = 1
    outputs: ClassVar[tuple[Output, ...]] = ()
    output_node: ClassVar[bool] = False
    deterministic: ClassVar[bool] = True
    # What a host (the editor) calls the pictures this node sends with ``ctx.progress``
    # while it runs, e.g. "predicted x0"; empty means just "step preview". A display
    # hook: the editor shows the pack's words and knows none of its own.
    preview_label: ClassVar[str] = ""

    inputs: ClassVar[dict[str, Input]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared: dict[str, Input] = {}
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                if isinstance(value, Input):
                    declared[name] = value
        cls.inputs = declared
        cls.outputs = tuple(cls.outputs)
        if not cls.display_name and cls.type:
            cls.display_name = cls.type
        names = [o.name for o in cls.outputs]
        if len(set(names)) != len(names):
            raise TypeError(f"{cls.__name__}: duplicate output names {names}")

    def run(self, ctx: RunContext, **inputs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.run")

    # -- declaration helpers, read by the validator, editor, schema and CLI --

    @classmethod
    def widgets(cls) -> dict[str, Widget]:
        return {n: i for n, i in cls.inputs.items() if isinstance(i, Widget)}

    @classmethod
    def output(cls, name: str) -> Output | None:
        return next((o for o in cls.outputs if o.name == name), None)

    @classmethod
    def default_values(cls) -> dict[str, Any]:
        return {n: w.default for n, w in cls.widgets().items()}

    @classmethod
    def migrate_values(cls, values: dict[str, Any], from_version: int) -> dict[str, Any]:
        """Upgrade ``values`` saved under an older ``version`` of this node type.

        Called when a workflow is loaded whose node says ``"version": from_version`` and
        ``from_version < cls.version``. Override when a release renames, removes or
        re-scales a field; return a new dict (the argument is the loader's copy).
        """
        return values

    @classmethod
    def renamed_ports(cls, from_version: int) -> Mapping[str, str]:
        """Inputs and outputs renamed since ``from_version``, old name -> new name.

        When a file saved by that older ``version`` is loaded, its links and values under
        the old names move to the new ones, before :meth:`migrate_values` sees the values.
        """
        return {}

    @classmethod
    def check_values(cls, values: Mapping[str, Any]) -> dict[str, str]:
        """Problems between widget values that each field accepts on its own (a sampler
        that cannot use a schedule), as ``{field: message}``; validation reports them
        before anything runs. ``values`` holds the widgets not fed by a link, each already
        valid for its field; a check whose fields are absent cannot be made and is skipped.
        Must be cheap and import nothing heavy: the editor validates on every Run.
        """
        return {}

    @classmethod
    def fingerprint(cls, values: Mapping[str, Any], ctx: RunContext) -> str | None:
        """What outside the graph this node's result depends on, e.g. the size and
        modification time of a file it reads; hashed into the cache signature so a file
        replaced on disk under the same name is read again. Must be cheap (no reading of
        contents); ``None`` (the default) means nothing outside the graph.

        ``values`` are the node's literal widget values (a value fed by a link is absent);
        ``ctx`` is the run's context (folders, settings, device) without a node id.
        """
        return None

    @classmethod
    def output_facts(cls, values: Mapping[str, Any], settings: Mapping[str, Any]) -> Mapping[str, Any]:
        """What a host can know about this node's outputs from its widget values alone,
        before anything runs, e.g. a loader's ``{"native_size": 512}`` (the image side its
        model was trained at). Handed to the nodes downstream through :meth:`advise`.
        Must be cheap (read a config file, never weights); default: nothing known."""
        return {}

    @classmethod
    def advise(cls, values: Mapping[str, Any], upstream: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        """Advice for the editor from ``upstream`` (the merged :meth:`output_facts` of the
        nodes this one depends on): values this node would best start from, which the
        editor applies to fields still at their defaults when the node gets linked, and
        warnings ``{field: message}`` shown on the node before a run. Default: none."""
        return {}, {}

    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {
            "type": cls.type,
            "display_name": cls.display_name,
            "category": cls.category,
            "description": cls.description,
            "version": cls.version,
            "inputs": [i.describe() for i in cls.inputs.values()],
            "outputs": [o.describe() for o in cls.outputs],
            "output_node": cls.output_node,
            "deterministic": cls.deterministic,
        }

    @classmethod
    def normalize_result(cls, result: Any) -> dict[str, Any]:
        """Turn what ``run`` returned into ``{output name: value}``, checking its shape."""
        names = [o.name for o in cls.outputs]
        if isinstance(result, dict) and set(result) == set(names) and (names or not result):
            return dict(result)
        if not names:
            if result is None:
                return {}
        elif isinstance(result, tuple) and len(result) == len(names):
            return dict(zip(names, result))
        elif len(names) == 1 and not isinstance(result, dict):
            return {names[0]: result}
        raise TypeError(f"node type {cls.type} returned {type(result).__name__}; expected outputs {names}")
