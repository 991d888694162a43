"""What a sweep varies: axes of values for node fields, crossed or zipped into points.

An axis is written ``NODE.FIELD=SPEC`` (NODE an id or a unique title), SPEC being

- a range ``1..64`` (both ends included) or ``0.5..2:0.25`` (with a step);
- a list ``4,6,8`` (each item JSON, or plain text);
- a file ``@prompts.txt``: one value per non-empty line, taken as text for text
  fields and read as JSON otherwise.

Every value is checked by the field's own declaration before anything runs, so a bad
value is reported naming the node, the field and the value. Several axes are crossed
(``product``: every combination, the last axis varying fastest) or ``zip``-ped (the
i-th value of each axis; all axes must be equally long).
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from nodeflow.model.errors import NodeflowError
from nodeflow.model.fields import Choice, FieldError, FileChoice, String
from nodeflow.model.graph import Graph, GraphError

MAX_POINTS = 100_000  # a typo such as 1..10000000 is refused before anything is built


class SweepError(NodeflowError, ValueError):
    """A sweep that cannot be built or run as asked; the message says which axis and why."""


@dataclass(frozen=True)
class Axis:
    node_id: str
    field: str
    values: tuple[Any, ...]

    @property
    def name(self) -> str:
        return f"{self.node_id}.{self.field}"


@dataclass(frozen=True)
class Point:
    """One run of the sweep: the value of every axis at it."""

    index: int  # position in the order the user asked for (product or zip order)
    coords: tuple[int, ...]  # index into each axis' values
    overrides: tuple[tuple[str, str, Any], ...]  # (node id, field, value) per axis

    @property
    def key(self) -> str:
        """A stable text for the overrides, used to find the point again when resuming."""
        return json.dumps([[n, f, v] for n, f, v in self.overrides], sort_keys=True, default=str)

    def label(self) -> str:
        return ", ".join(f"{field}={short(value)}" for _, field, value in self.overrides)


def short(value: Any, limit: int = 40) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_axis(text: str, graph: Graph, base_dir: str | os.PathLike[str] = ".") -> Axis:
    """``NODE.FIELD=SPEC`` as an :class:`Axis` of checked values."""
    target, sep, spec = text.partition("=")
    node_ref, dot, field = target.rpartition(".")
    if not sep or not dot or not node_ref or not field or not spec:
        raise SweepError(f"--vary expects NODE.FIELD=VALUES (e.g. 5.seed=1..16), got {text!r}")
    return make_axis(graph, node_ref, field, _values(spec, graph, node_ref, field, base_dir), where=f"--vary {text}")


def make_axis(graph: Graph, node_ref: str, field: str, values: Iterable[Any], where: str = "") -> Axis:
    """An axis of ``values`` for ``node_ref.field``, each checked by the field."""
    where = where or f"{node_ref}.{field}"
    try:
        node_id = graph.find_node(node_ref)
    except GraphError as exc:
        raise SweepError(f"{where}: {exc}") from None
    cls = graph.node_class(node_id)
    widget = cls.widgets().get(field) if cls is not None else None
    if widget is None:
        kind = ("not installed" if cls is None else "a socket (it takes a link, not a value)" if field in cls.inputs
                else f"not a field of it; its fields are: {', '.join(cls.widgets()) or 'none'}")
        raise SweepError(f"{where}: node {node_id} ({graph.nodes[node_id].type}): {field!r} is {kind}")
    if graph.link_into(node_id, field) is not None:
        raise SweepError(f"{where}: node {node_id} field {field!r} is fed by a link, so a value would be ignored")
    checked = []
    for value in values:
        try:
            checked.append(widget.validate(value))
        except FieldError as exc:
            raise SweepError(f"{where}: node {node_id} ({cls.type}) field {field!r}: value {short(value)}: {exc}") from None
    if not checked:
        raise SweepError(f"{where}: no values")
    return Axis(node_id, field, tuple(checked))


def points(axes: Sequence[Axis], mode: str = "product") -> list[Point]:
    """The points of ``axes`` crossed (``product``) or zipped (``zip``), in that order."""
    if not axes:
        raise SweepError("a sweep needs at least one axis (--vary NODE.FIELD=VALUES)")
    names = [axis.name for axis in axes]
    if len(set(names)) != len(names):
        raise SweepError(f"an axis is given twice: {', '.join(sorted({n for n in names if names.count(n) > 1}))}")
    if mode == "zip":
        lengths = {axis.name: len(axis.values) for axis in axes}
        if len(set(lengths.values())) > 1:
            raise SweepError("--zip needs axes of one length; got " + ", ".join(f"{n}: {k}" for n, k in lengths.items()))
        combos = [tuple(i for _ in axes) for i in range(len(axes[0].values))]
    elif mode == "product":
        total = 1
        for axis in axes:
            total *= len(axis.values)
        if total > MAX_POINTS:
            raise SweepError(f"the sweep has {total} points, more than {MAX_POINTS}")
        combos = list(itertools.product(*(range(len(axis.values)) for axis in axes)))
    else:
        raise SweepError(f"mode must be 'product' or 'zip', not {mode!r}")
    return [
        Point(index, coords, tuple((a.node_id, a.field, a.values[i]) for a, i in zip(axes, coords)))
        for index, coords in enumerate(combos)
    ]


def axes_from_mapping(graph: Graph, vary: Mapping[str, Any]) -> list[Axis]:
    """Axes from the scripting API's ``{"5.seed": range(1, 17), "Prompt.text": [...]}``; a
    string value is read as a SPEC (``"1..16"``, ``"@prompts.txt"``)."""
    axes = []
    for target, values in vary.items():
        if isinstance(values, str):
            axes.append(parse_axis(f"{target}={values}", graph))
            continue
        node_ref, dot, field = str(target).rpartition(".")
        if not dot:
            raise SweepError(f"expected NODE.FIELD (e.g. '5.seed'), got {target!r}")
        axes.append(make_axis(graph, node_ref, field, list(values)))
    return axes


# --------------------------------------------------------------------------- specs
def _values(spec: str, graph: Graph, node_ref: str, field: str, base_dir: str | os.PathLike[str]) -> list[Any]:
    textual = _is_textual(graph, node_ref, field)
    if spec.startswith("@"):
        path = Path(base_dir, spec[1:]).expanduser()
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise SweepError(f"--vary {node_ref}.{field}: cannot read {path}: {exc.strerror or exc}") from None
        return [line if textual else _item(line) for line in (l.strip() for l in lines) if line]
    if ".." in spec and not textual:
        return _range(spec, f"{node_ref}.{field}")
    return [item if textual else _item(item) for item in (i.strip() for i in spec.split(","))]


def _is_textual(graph: Graph, node_ref: str, field: str) -> bool:
    try:
        cls = graph.node_class(graph.find_node(node_ref))
    except GraphError:
        return False
    widget = cls.widgets().get(field) if cls is not None else None
    return isinstance(widget, (String, FileChoice, Choice))


def _item(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _range(spec: str, where: str) -> list[Any]:
    bounds, _, step_text = spec.partition(":")
    start_text, _, stop_text = bounds.partition("..")
    try:
        start, stop = Decimal(start_text.strip()), Decimal(stop_text.strip())
        step = Decimal(step_text.strip()) if step_text else Decimal(1)
    except InvalidOperation:
        raise SweepError(f"--vary {where}: a range is START..STOP or START..STOP:STEP, got {spec!r}") from None
    if step <= 0:
        raise SweepError(f"--vary {where}: the step must be positive, got {step}")
    count = int((stop - start) / step) + 1 if stop >= start else 0
    if count <= 0:
        raise SweepError(f"--vary {where}: the range {spec!r} is empty (STOP must not be below START)")
    if count > MAX_POINTS:
        raise SweepError(f"--vary {where}: the range {spec!r} has {count} values, more than {MAX_POINTS}")
    integral = all(d == d.to_integral_value() for d in (start, step))
    return [int(start + i * step) if integral else float(start + i * step) for i in range(count)]
