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

Inputs are the class attributes that are :class:`~nodeflow.model.fields.Input` objects, in
declaration order; ``outputs`` lists the results. ``run`` receives every input by
name (an unconnected optional socket arrives as ``None``) and returns a dict keyed by
output name, a tuple in output order, or, for a single output, the bare value.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

if TYPE_CHECKING:
    from nodeflow.model.memory import MemoryEstimate, MemoryNeed, Upstream
    from nodeflow.model.types import DataType

from nodeflow.model.context import RunContext, RunSettings
from nodeflow.model.errors import NodeflowError
from nodeflow.model.fields import Input, Output, Widget


class NodeError(NodeflowError):
    """A failure a node reports on purpose, with a message meant for the user.

    ``field`` names the input at fault when there is one, so hosts can mark it (the
    editor outlines the socket, the CLI prints ``node 5 (Sampler) field "steps": ...``),
    as they do for validation problems."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return f'field "{self.field}": {self.message}' if self.field else self.message


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
    # A pure pass-through (the core Reroute): the planner hands its one input on as its
    # output (no step, no cache entry) and links from it carry the type that feeds it.
    passes_through: ClassVar[bool] = False
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
        # An input named like a declaration of the base class (``version``, ``category``,
        # ``outputs``, a helper) replaces it on the class: the node would say nonsense to the
        # registry, the migrations and the files it writes. Refused when the class is made.
        shadowing = sorted(name for name in declared if name in vars(Node))
        if shadowing:
            raise TypeError(f"{cls.__name__}: input {shadowing[0]!r} has the name of Node.{shadowing[0]}, which it "
                            "would replace; give the input another name")
        cls.inputs = declared
        cls.outputs = tuple(cls.outputs)
        if not cls.display_name and cls.type:
            cls.display_name = cls.type
        names = [o.name for o in cls.outputs]
        if len(set(names)) != len(names):
            raise TypeError(f"{cls.__name__}: duplicate output names {names}")
        _check_run_signature(cls)

    def run(self, ctx: RunContext, **inputs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.run")

    # -- declaration helpers, read by the validator, editor, schema and CLI --

    @classmethod
    def data_types(cls) -> list["DataType"]:
        """The data types on this node's sockets and outputs (the registry learns them here)."""
        from nodeflow.model.types import DataType

        found = [getattr(i, "type", None) for i in cls.inputs.values()] + [o.type for o in cls.outputs]
        return [t for t in found if isinstance(t, DataType)]

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
    def check_connections(cls, values: Mapping[str, Any], connected: frozenset[str]) -> dict[str, str]:
        """Problems between widget values and which optional inputs are connected (a
        sampler that cannot take the list of sigmas linked to it), as ``{field: message}``;
        ``values`` as for :meth:`check_values`, ``connected`` the names of the inputs fed by
        a link. Must be cheap and import nothing heavy, as :meth:`check_values`."""
        return {}

    @classmethod
    def check_host(cls, values: Mapping[str, Any], ctx: RunContext) -> dict[str, str]:
        """Problems only the host can tell, as ``{field: message}``: a file the node would
        read that is missing or outside its folders, an output folder it cannot write, a
        size over the memory budget. ``values`` as for :meth:`check_values`; ``ctx`` is the
        run's context without a node id. Validation calls it when it is given a context
        (``nodeflow validate`` and every run, before anything runs). Must be cheap: no
        reading of contents, no torch.
        """
        return {}

    @classmethod
    def working_memory(cls, inputs: Mapping[str, Any], settings: "RunSettings") -> "MemoryNeed | None":
        """About how much memory ``run`` will allocate for these ``inputs`` (the values it is
        about to get, links resolved), from their shapes and the model's config, without
        allocating; the executor refuses a need over the budget before calling ``run``
        (see :mod:`nodeflow.model.memory`). None (the default): nothing worth checking.
        """
        return None

    @classmethod
    def estimate_memory(
        cls, values: Mapping[str, Any], inputs: Mapping[str, "Upstream"], ctx: RunContext
    ) -> "MemoryEstimate | None":
        """What this node will hold and need, told before anything runs: from its widget
        ``values`` (those not fed by a link), ``inputs`` (input name -> the
        :class:`~nodeflow.model.memory.Upstream` node feeding it, with the facts its own
        estimate passed on) and ``ctx`` (device and settings, no node id). The executor adds
        the estimates along the plan and refuses a run whose peak cannot fit the device
        (see :mod:`nodeflow.engine.estimate`). Must be cheap: read a file's header or a
        config, never weights. None (the default): nothing to tell, and downstream nodes
        learn nothing from this one.
        """
        return None

    @classmethod
    def insight(cls, values: Mapping[str, Any], upstream: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """Plots and notes that explain these settings, from the widget values and
        ``upstream`` (the merged :meth:`output_facts` of the nodes this one depends on, e.g.
        the connected model's ``scheduler_config``) alone (no run, no model loading beyond
        configs), e.g. a sampler's noise schedule::

            {"plots": [{"title": "Noise schedule", "x_label": "step", "y_label": "sigma",
                        "series": [{"label": "sigma", "x": [...], "y": [...]}]}],
             "notes": ["..."]}

        A view draws them without knowing what they mean (see :mod:`nodeflow.model.hooks`,
        which checks the shape); None (the default) means nothing to explain.
        """
        return None

    @classmethod
    def preview_title(cls, values: Mapping[str, Any]) -> str:
        """What the pictures this node sends with ``ctx.progress`` show, for these widget
        values (e.g. a sampler whose ``preview`` field picks the view); by default its
        :attr:`preview_label`. A display hook, like ``preview_label``."""
        return cls.preview_label

    @classmethod
    def field_options(cls, field_name: str, settings: RunSettings) -> list[str] | None:
        """The values this node offers for a file field (e.g. the installed checkpoints),
        for the editor's combo box; None (the default) lets the host list the field's folders."""
        return None

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
    def output_facts(cls, values: Mapping[str, Any], settings: RunSettings) -> Mapping[str, Any]:
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


def _check_run_signature(cls: type[Node]) -> None:
    """Refuse, when the class is defined, a ``run`` whose parameters are not ``self``,
    ``ctx`` and exactly the declared inputs (a ``**inputs`` catch-all accepts any), so
    a mismatch is an import error naming the fix, not a node failure at run time."""
    if cls.run is Node.run:
        return
    parameters = list(inspect.signature(cls.run).parameters.values())[1:]  # after self
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return
    if not parameters or parameters[0].kind not in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
        raise TypeError(f"{cls.__name__}.run must take (self, ctx, ...inputs)")
    named = {p.name for p in parameters[1:]}
    declared = set(cls.inputs)
    for name in sorted(declared - named):
        raise TypeError(f"{cls.__name__}.run lacks parameter {name!r} declared as an input: add it to run's signature")
    for name in sorted(named - declared):
        param = next(p for p in parameters[1:] if p.name == name)
        if param.default is inspect.Parameter.empty:
            raise TypeError(f"{cls.__name__}.run takes {name!r}, which is not a declared input: "
                            f"declare it (e.g. {name} = Socket(...) or a widget) or remove the parameter")

