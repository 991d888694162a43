"""What a run will do: the needed nodes in order, each with its content signature.

Signatures
    A node's signature is a hash of its type, its class version and output names, its
    literal widget values in canonical form (validated by the field, so ``1`` and
    ``1.0`` for a Float are the same; JSON with sorted keys), and, per input name, the
    signature and output name of the value feeding it. Node ids and titles are not
    part of it, so identical subgraphs share one signature and are computed once.
    The run's device is part of every signature (cached tensors stay on their device).
    A non-deterministic node also hashes a fresh per-run nonce (so it and everything
    downstream re-run every time); an output node also hashes the output folder.
    A node that reads files says so through ``Node.fingerprint`` (e.g. size and
    modification time), which is hashed in too, so a file replaced on disk under the
    same name is read again. Not in it: the rest of the run's ``settings``.

Inputs
    A socket gets the value of the output linked to it; an unconnected optional socket
    gets ``None``. A widget gets its literal value unless a link feeds it, in which
    case the link wins.

Bypass
    A node in mode ``NodeMode.BYPASS`` does not run. Each of its outputs passes on its first
    input (in declaration order) of the same data type: that input's link, or for an
    unlinked widget its literal value; ``None`` when that input is an unconnected
    socket or there is no such input (validation reports the first case when a
    required input downstream depends on it). Only the nodes feeding the passed-on
    inputs are needed.

The plan is built from a snapshot of the graph (``graph.copy()``) and holds its own
values, so editing the graph during a run does not affect the run.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple

from nodeflow.model.fields import FieldError, Widget
from nodeflow.model.graph import Graph, GraphError, Link, NodeInstance, NodeMode
from nodeflow.model.node import Node
from nodeflow.model.context import RunContext

BYPASS = NodeMode.BYPASS  # bound once: compared for every node of every run


@dataclass(frozen=True)
class Const:
    """A literal value standing in for an output (a bypassed node passing on a widget value)."""

    value: Any
    kind: type = field(init=False, repr=False)  # so that Const(1) != Const(True) != Const(1.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", type(self.value))


# Where a value comes from: (signature of the producing step, output name), a constant,
# or None for the value None.
ValueRef = tuple[str, str] | Const | None


def producer(ref: ValueRef) -> str | None:
    """The signature of the step whose output ``ref`` reads, if any."""
    return ref[0] if isinstance(ref, tuple) else None


def resolve(ref: ValueRef, values: dict[str, dict[str, Any]]) -> Any:
    """The value ``ref`` stands for, given the outputs of the steps run so far."""
    if isinstance(ref, tuple):
        return values[ref[0]].get(ref[1])
    return ref.value if isinstance(ref, Const) else None


class Step(NamedTuple):  # immutable like a frozen dataclass, but several times cheaper to build
    """One node of the plan: everything needed to run it, independent of the graph."""

    node_id: str
    node_type: str
    cls: type[Node]
    signature: str
    literals: dict[str, Any]  # widget values not fed by a link
    sources: dict[str, ValueRef]  # every other input: linked ones and unconnected sockets (None)
    reads: tuple[str, ...]  # signatures of the steps whose outputs it reads
    reusable: bool = True  # False when the signature depends on this run's nonce: never seen again


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]  # topological order; bypassed nodes have no step
    outputs: dict[str, dict[str, ValueRef]]  # requested node id -> output name -> value


def default_outputs(graph: Graph) -> list[str]:
    """Every output node that is not bypassed."""
    return [nid for nid in graph.output_nodes() if graph.nodes[nid].mode != BYPASS]


def build_plan(
    graph: Graph,
    outputs: Iterable[str] | None = None,
    salt: str = "",
    nonce: str = "",
    output_dir: str = "",
    memo: SignatureMemo | None = None,
    context: RunContext | None = None,
    fresh_outputs: bool = False,
) -> Plan:
    """Plan the run of ``outputs`` (default: :func:`default_outputs`) on a validated graph.

    ``salt`` goes into every signature (the device), ``nonce`` into those of
    non-deterministic nodes, ``output_dir`` into those of output nodes, and each node's
    ``fingerprint(values, context)`` into its own. A ``memo`` kept between runs saves
    re-hashing nodes whose inputs did not change. ``fresh_outputs`` gives output nodes the
    nonce too, so they run (and save their files) again even when all else is cached, as
    in a fresh process: what ``nodeflow run --server`` asks a warm server for.
    """
    context = context if context is not None else RunContext()
    memo = memo if memo is not None else SignatureMemo()
    requested = list(dict.fromkeys(default_outputs(graph) if outputs is None else outputs))
    for node_id in requested:
        if node_id not in graph.nodes:
            raise GraphError(f"there is no node {node_id!r} to run", node_id)
    links_into: dict[str, dict[str, Link]] = {}
    for (target, input_name), link in graph.links.items():
        links_into.setdefault(target, {})[input_name] = link

    classes: dict[str, type[Node]] = {}
    passthrough: dict[str, dict[str, Link | Const | None]] = {}

    def class_of(node_id: str) -> type[Node]:
        cls = classes.get(node_id)
        if cls is None:
            cls = classes[node_id] = _node_class(graph, node_id)
        return cls

    def feeding_links(node_id: str) -> list[Link]:
        linked = links_into.get(node_id, {})
        if graph.nodes[node_id].mode != BYPASS and not class_of(node_id).passes_through:
            return list(linked.values())
        choices = passthrough[node_id] = _bypass_choices(class_of(node_id), graph.nodes[node_id], linked)
        return [choice for choice in choices.values() if isinstance(choice, Link)]

    order = _topological_order(requested, feeding_links)
    refs: dict[str, dict[str, ValueRef]] = {}
    steps: list[Step] = []
    volatile: set[str] = set()
    for node_id in order:
        cls = class_of(node_id)
        if node_id in passthrough:
            refs[node_id] = {
                name: refs[choice.source].get(choice.output) if isinstance(choice, Link) else choice
                for name, choice in passthrough[node_id].items()
            }
            continue
        node = graph.nodes[node_id]
        linked = links_into.get(node_id, {})
        literals: dict[str, Any] = {}
        sources: dict[str, ValueRef] = {}
        for name, widget in _input_widgets(cls):
            link = linked.get(name)
            if link is not None:
                sources[name] = refs[link.source].get(link.output)
            elif widget is not None:
                literals[name] = node.values.get(name, widget.default)
            else:
                sources[name] = None
        reads = tuple(ref[0] for ref in sources.values() if type(ref) is tuple)
        once = not cls.deterministic or (fresh_outputs and cls.output_node)
        extra = (
            salt,
            f"{nonce}/{node_id}" if once else "",
            output_dir if cls.output_node else "",
            _fingerprint(cls, literals, context),
        )
        # A signature that depends on this run's nonce never recurs: not worth remembering.
        fresh = once or any(read in volatile for read in reads)
        signature, literals = memo.signature(cls, literals, sources, extra, remember=not fresh)
        if fresh:
            volatile.add(signature)
        steps.append(Step(node_id, cls.type, cls, signature, literals, sources, reads, reusable=not fresh))
        refs[node_id] = {name: (signature, name) for name in _output_names(cls)}
    return Plan(tuple(steps), {nid: refs[nid] for nid in requested})


def _fingerprint(cls: type[Node], literals: dict[str, Any], context: RunContext) -> str:
    try:
        return cls.fingerprint(literals, context) or ""
    except Exception:  # a plug-in's hook must not stop planning; the node's run reports the real problem
        return ""


@functools.cache
def _input_widgets(cls: type[Node]) -> tuple[tuple[str, Widget | None], ...]:
    """Each input's name with its widget declaration, or None for a socket."""
    return tuple((name, declared if isinstance(declared, Widget) else None) for name, declared in cls.inputs.items())


@functools.cache
def _output_names(cls: type[Node]) -> tuple[str, ...]:
    return tuple(o.name for o in cls.outputs)


def _node_class(graph: Graph, node_id: str) -> type[Node]:
    cls = graph.node_class(node_id)
    if cls is None:
        raise GraphError(f"node {node_id}: unknown node type {graph.nodes[node_id].type!r}", node_id)
    return cls


def _bypass_choices(cls: type[Node], node: NodeInstance, linked: dict[str, Link]) -> dict[str, Link | Const | None]:
    """For each output of a bypassed node, where the value it passes on comes from."""
    choices: dict[str, Link | Const | None] = {}
    for output in cls.outputs:
        choice: Link | Const | None = None
        for name, declared in cls.inputs.items():
            if declared.data_type == output.data_type:
                choice = linked.get(name)
                if choice is None and isinstance(declared, Widget):
                    choice = Const(_canonical(declared, node.values.get(name, declared.default)))
                break
        choices[output.name] = choice
    return choices


def _topological_order(roots: list[str], feeding_links) -> list[str]:
    """The roots and their ancestors, every node after the nodes feeding it (iterative DFS)."""
    order: list[str] = []
    done: set[str] = set()
    on_path: set[str] = set()
    for root in roots:
        if root in done:
            continue
        stack: list[tuple[str, Any]] = [(root, iter(feeding_links(root)))]
        on_path.add(root)
        while stack:
            node_id, pending = stack[-1]
            for link in pending:
                source = link.source
                if source in on_path:
                    raise GraphError("the graph has a cycle", source)
                if source not in done:
                    on_path.add(source)
                    stack.append((source, iter(feeding_links(source))))
                    break
            else:
                stack.pop()
                on_path.discard(node_id)
                done.add(node_id)
                order.append(node_id)
    return order


class SignatureMemo:
    """Remembers the signature (and canonical literals) of each (node class, literal values,
    sources, extras) seen, so an unchanged node costs a dict lookup instead of field
    validation, a JSON dump and a hash."""

    MAX_ENTRIES = 100_000  # about 30 MB at worst; cleared when full

    def __init__(self) -> None:
        self._known: dict[tuple, tuple[str, dict[str, Any]]] = {}

    def signature(
        self,
        cls: type[Node],
        literals: dict[str, Any],
        sources: dict[str, ValueRef],
        extra: tuple,
        remember: bool = True,
    ) -> tuple[str, dict[str, Any]]:
        """The signature and the literals in canonical form (shared: do not modify them)."""
        if not remember:
            return _signature(cls, literals, sources, extra)
        try:
            key = (cls, tuple(literals.items()), tuple(sources.items()), extra)
            known = self._known.get(key)
        except TypeError:  # an unhashable literal (only in unchecked files): just compute
            return _signature(cls, literals, sources, extra)
        if known is None:
            if len(self._known) >= self.MAX_ENTRIES:
                self._known.clear()
            known = self._known[key] = _signature(cls, literals, sources, extra)
        return known


def _signature(
    cls: type[Node], literals: dict[str, Any], sources: dict[str, ValueRef], extra: tuple
) -> tuple[str, dict[str, Any]]:
    canonical = {name: _canonical(cls.inputs[name], value) for name, value in literals.items()}  # type: ignore[arg-type]
    signed = {name: value for name, value in canonical.items() if cls.inputs[name].affects_result}  # type: ignore[attr-defined]
    return _digest(_class_key(cls), signed, sources, extra), canonical


def _class_key(cls: type[Node]) -> list[Any]:
    return [cls.type, cls.version, [o.name for o in cls.outputs]]


def _canonical(declared: Widget, value: Any) -> Any:
    try:
        return declared.validate(value)
    except FieldError:
        return value  # validation reports it; the signature just has to be stable


def _digest(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=_encode)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _encode(value: Any) -> Any:
    if isinstance(value, Const):
        return {"const": value.value}
    return repr(value)  # only reachable for odd values from unchecked files; stable enough
