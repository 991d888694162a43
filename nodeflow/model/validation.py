"""Is a graph runnable? Every problem at once, before anything runs.

:func:`validate` walks the graph (or only the requested output nodes and their
ancestors) once and returns a list of :class:`Problem` records; an empty list means
runnable. Each problem names the node, its type and the field, so the CLI can print
it and the editor can put a marker on the right socket.

The codes are :class:`~nodeflow.model.problems.ProblemCode`; loading a file adds its own
problems (a dangling link, a newer node version, a failed upgrade), passed in as
``extra_problems``.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

from nodeflow.model.context import RunContext
from nodeflow.model.fields import FieldError, FileChoice, Socket, Widget
from nodeflow.model.graph import MODES, Graph, Link, NodeMode
from nodeflow.model.node import Node
from nodeflow.model.problems import Problem, ProblemCode, ValidationError, node_order_key
from nodeflow.model.types import is_compatible

BYPASS = NodeMode.BYPASS  # bound once: compared for every node of every run

def validate(
    graph: Graph,
    outputs: Iterable[str] | None = None,
    extra_problems: Iterable[Problem] = (),
    context: RunContext | None = None,
) -> list[Problem]:
    """Every problem that stops ``graph`` (or just ``outputs`` and their ancestors) from running.

    ``extra_problems`` (load-time problems of a :class:`~nodeflow.files.workflow.Workflow`)
    come first; with ``outputs`` given, those about nodes outside the checked part are
    left out. With a ``context`` (the run's folders and settings), each node's
    :meth:`~nodeflow.model.node.Node.check_host` runs too: missing files, files outside
    the folders, an unwritable output folder, sizes over the memory budget.
    """
    problems: list[Problem] = []
    scope = _scope(graph, outputs, problems)
    extra = [p for p in extra_problems if p.node_id is None or p.node_id in scope or p.node_id not in graph.nodes]
    links_into: dict[str, list[Link]] = {}
    for link in graph.links.values():
        links_into.setdefault(link.target, []).append(link)
    for node_id in graph.nodes:
        if node_id in scope:
            problems.extend(_node_problems(graph, node_id, links_into.get(node_id, []), context))
    problems.extend(_cycle_problems(graph, scope))
    return extra + problems


def check(graph: Graph, outputs: Iterable[str] | None = None, extra_problems: Iterable[Problem] = ()) -> None:
    """Raise :class:`ValidationError` unless :func:`validate` finds nothing."""
    problems = validate(graph, outputs, extra_problems)
    if problems:
        raise ValidationError(problems)


# --------------------------------------------------------------------------- scope
def run_outputs(graph: Graph) -> list[str] | None:
    """The nodes a Run of the whole workflow checks and runs: its output nodes that are not
    bypassed, and any node of an unknown type (it may be an output, so it is refused); None
    when nothing would run (then :func:`validate` says so). Like ComfyUI, a half-wired node
    that feeds no output (just dropped from the palette, a stray label in a shared file)
    does not block a run; ``validate(graph)`` without outputs still names it, as a linter."""
    runnable = [nid for nid in graph.output_nodes() if graph.nodes[nid].mode != BYPASS]
    if not runnable:
        return None
    return runnable + [nid for nid, node in graph.nodes.items() if node.type not in graph.registry]


def _scope(graph: Graph, outputs: Iterable[str] | None, problems: list[Problem]) -> set[str]:
    """The node ids to check; records a problem when nothing would be run."""
    if outputs is None:
        output_nodes = graph.output_nodes()
        if not output_nodes:
            problems.append(Problem(ProblemCode.NO_OUTPUT_NODE, "the workflow has no output node, so running it would do nothing"))
        elif all(graph.nodes[nid].mode == BYPASS for nid in output_nodes):
            problems.append(Problem(ProblemCode.NO_OUTPUT_NODE, "every output node is bypassed, so running would do nothing"))
        return set(graph.nodes)
    requested = list(dict.fromkeys(outputs))
    present = [nid for nid in requested if nid in graph.nodes]
    for nid in requested:
        if nid not in graph.nodes:
            problems.append(Problem(ProblemCode.NO_OUTPUT_NODE, "a requested output node does not exist", nid))
    if not any(getattr(_node_class(graph, nid), "output_node", False) for nid in present):
        named = ", ".join(requested) or "none"
        problems.append(Problem(ProblemCode.NO_OUTPUT_NODE, f"the requested outputs ({named}) contain no output node"))
    return graph.ancestors(present)


def _node_class(graph: Graph, node_id: str) -> type[Node] | None:
    return graph.registry.get(graph.nodes[node_id].type)


# ----------------------------------------------------------------------- per node
def _node_problems(graph: Graph, node_id: str, links_into: list[Link], context: RunContext | None = None) -> list[Problem]:
    node = graph.nodes[node_id]
    cls = graph.registry.get(node.type)

    def problem(code: str, message: str, field: str | None = None) -> Problem:
        return Problem(code, message, node_id, node.type, field)

    if cls is None:
        return [problem(ProblemCode.UNKNOWN_NODE_TYPE, f"node type {node.type!r} is not installed (is its node pack missing?)")]
    found: list[Problem] = []
    checked: dict[str, Any] = {}  # widget values that are valid and not fed by a link
    if node.mode not in MODES:
        found.append(problem(ProblemCode.INVALID_VALUE, f"mode {node.mode!r} is not one of: {', '.join(MODES)}", "mode"))
    if not all(_finite(v) for v in (*node.pos, *(node.size or ()))):
        # JSON cannot hold Infinity or NaN: a saved file or image would not reopen
        found.append(problem(ProblemCode.INVALID_VALUE, "the node's position or size is not a finite number", "pos"))
    for name, value in node.values.items():
        declared = cls.inputs.get(name)
        if declared is None:
            found.append(problem(ProblemCode.INVALID_VALUE, f"{cls.type} has no field {name!r}", name))
        elif not isinstance(declared, Widget):
            found.append(problem(ProblemCode.INVALID_VALUE, "this input is a socket; it takes a link, not a value", name))
        elif graph.link_into(node_id, name) is None:  # a linked widget takes the link's value
            try:
                declared.validate(value)
            except FieldError as exc:
                found.append(problem(ProblemCode.INVALID_VALUE, str(exc), name))
            else:
                checked[name] = value
    # A bypassed node does not run, so it needs no inputs and its fields need not agree;
    # what it passes on is checked where it is used (see _link_problems).
    if node.mode != BYPASS:
        for name, declared in cls.inputs.items():
            linked = graph.link_into(node_id, name) is not None
            if isinstance(declared, Socket) and not declared.optional and not linked:
                found.append(problem(ProblemCode.MISSING_INPUT, f"required input ({declared.data_type}) is not connected", name))
            elif isinstance(declared, Widget) and name not in node.values and not linked:
                checked[name] = declared.default
        own = cls.check_values(checked)
        if not own:
            connected = frozenset(name for name in cls.inputs if graph.link_into(node_id, name) is not None)
            own = cls.check_connections(checked, connected)
        for name, message in own.items():
            found.append(problem(ProblemCode.INVALID_VALUE, message, name))
        if context is not None and not own:
            for name, message in cls.check_host(checked, context).items():
                is_file = isinstance(cls.inputs.get(name), FileChoice)
                found.append(problem(ProblemCode.MISSING_FILE if is_file else ProblemCode.INVALID_VALUE, message, name or None))

    for link in links_into:
        found.extend(_link_problems(graph, link.source, link.output, cls, link.input, problem))
    return found


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(value)
    except (TypeError, OverflowError):
        return False


def _link_problems(graph: Graph, source: str, output: str, cls: type[Node], input_name: str, problem) -> list[Problem]:
    src_cls = _node_class(graph, source)
    if src_cls is None:
        return []  # the source node's own problem says its type is unknown
    src_name = f"node {source} ({src_cls.type})"
    out = src_cls.output(output)
    if out is None:
        return [problem(ProblemCode.TYPE_MISMATCH, f"linked from output {output!r}, which {src_name} does not have", input_name)]
    declared = cls.inputs.get(input_name)
    if declared is None:
        return [problem(ProblemCode.TYPE_MISMATCH, f"{cls.type} has no input {input_name!r} (linked from {src_name})", input_name)]
    given = graph.output_type(source, output) or out.data_type
    if not is_compatible(given, declared.data_type):
        return [
            problem(
                ProblemCode.TYPE_MISMATCH,
                f"takes {declared.data_type}, but is linked to {src_name} output {output!r}, which gives {given}",
                input_name,
            )
        ]
    needs_value = isinstance(declared, Widget) or not declared.optional
    if needs_value and graph.nodes[source].mode == BYPASS and not _passes_through(graph, source, src_cls, out.data_type):
        return [
            problem(
                ProblemCode.MISSING_INPUT,
                f"gets nothing: {src_name} is bypassed and has no linked {out.type} input to pass on",
                input_name,
            )
        ]
    return []


def _passes_through(graph: Graph, node_id: str, cls: type[Node], data_type: str) -> bool:
    """Whether a bypassed node hands on a value for an output of ``data_type``: the
    executor passes its first input of that data type, a link or a widget's value
    (see nodeflow.engine.plan)."""
    for name, declared in cls.inputs.items():
        if declared.data_type == data_type:
            return isinstance(declared, Widget) or graph.link_into(node_id, name) is not None
    return False


# -------------------------------------------------------------------------- cycles
def _cycle_problems(graph: Graph, scope: set[str]) -> list[Problem]:
    """One problem per knot of nodes that feed each other, naming a loop through it.
    A graph without a loop (nearly every one) is told apart in one linear pass, so only
    a graph that has one pays for networkx, which then names each knot."""
    if not _has_cycle(graph, scope):
        return []
    import networkx as nx

    view = graph.dag if len(scope) == len(graph.nodes) else graph.dag.subgraph(scope)
    found = []
    for component in nx.strongly_connected_components(view):
        start = min(component, key=node_order_key)
        if len(component) == 1 and not view.has_edge(start, start):
            continue
        loop = [edge[0] for edge in nx.find_cycle(view.subgraph(component), source=start)]
        names = " -> ".join(f"{nid} ({graph.nodes[nid].type})" for nid in loop + loop[:1])
        found.append(Problem(ProblemCode.CYCLE, f"the links form a loop: {names}", start, graph.nodes[start].type))
    found.sort(key=lambda p: node_order_key(p.node_id or ""))
    return found


def _has_cycle(graph: Graph, scope: set[str]) -> bool:
    """Whether the links among ``scope`` form a loop (Kahn's algorithm: peel off nodes
    that nothing in scope feeds; whatever is left sits on or behind a loop)."""
    feeding = {node_id: 0 for node_id in scope}
    for link in graph.links.values():
        if link.source in feeding and link.target in feeding:
            feeding[link.target] += 1
    ready = [node_id for node_id, count in feeding.items() if count == 0]
    peeled = 0
    while ready:
        node_id = ready.pop()
        peeled += 1
        for link in graph.links_from(node_id):
            if link.target in feeding:
                feeding[link.target] -= 1
                if feeding[link.target] == 0:
                    ready.append(link.target)
    return peeled < len(feeding)
