"""What views read from a node type's optional hooks, checked and typed.

:meth:`Node.insight <nodeflow.model.node.Node.insight>` returns plain JSON-like data
(easy for a pack to write); :func:`node_insight` turns it into :class:`Insight` records
and reports a hook that fails instead of raising, so a broken pack cannot break the
editor. :func:`field_options` does the same for :meth:`Node.field_options`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from nodeflow.model.context import RunSettings
from nodeflow.model.node import Node


@dataclass(frozen=True)
class Series:
    label: str
    x: tuple[float, ...]
    y: tuple[float, ...]


@dataclass(frozen=True)
class Plot:
    title: str
    series: tuple[Series, ...]
    x_label: str = ""
    y_label: str = ""


@dataclass(frozen=True)
class Insight:
    plots: tuple[Plot, ...] = ()
    notes: tuple[str, ...] = ()
    error: str | None = None


def node_insight(cls: type[Node], values: Mapping[str, Any]) -> Insight | None:
    """What ``cls.insight(values)`` offers, checked and normalised; None if it offers nothing."""
    try:
        raw = cls.insight(dict(values))
        if raw is None:
            return None
        return Insight(
            plots=tuple(_plot(p) for p in raw.get("plots", ())),
            notes=tuple(str(n) for n in raw.get("notes", ())),
        )
    except Exception as exc:  # a broken hook must not break the editor
        return Insight(error=f"{getattr(cls, 'type', cls.__name__)}.insight failed: {exc}")


def _plot(raw: Mapping[str, Any]) -> Plot:
    series = []
    for item in raw.get("series", ()):
        y = tuple(float(v) for v in item["y"])
        x = tuple(float(v) for v in item.get("x", range(len(y))))
        if len(x) != len(y):
            raise ValueError(f"series {item.get('label', '')!r} has {len(x)} x values and {len(y)} y values")
        series.append(Series(str(item.get("label", "")), x, y))
    return Plot(str(raw.get("title", "")), tuple(series), str(raw.get("x_label", "")), str(raw.get("y_label", "")))


def field_options(cls: type[Node], field_name: str, settings: RunSettings | None = None) -> list[str] | None:
    """The values ``cls.field_options`` offers for a file field (e.g. installed
    checkpoints); None when it offers none or fails (the editor then lists folders itself)."""
    try:
        options = cls.field_options(field_name, settings if settings is not None else RunSettings())
    except Exception:
        return None
    return [str(option) for option in options] if options is not None else None
