"""Optional explanations a node type can offer about its settings, drawn by the editor
(and, below, the values it offers for a file field).

A node class may define a classmethod ``insight(values) -> dict`` that, from its
widget values alone (no run, no model loading beyond configs), returns plots such as a
sampler's noise schedule::

    @classmethod
    def insight(cls, values):
        sigmas = schedule_sigmas(..., values["scheduler"], values["steps"])
        return {"plots": [{"title": "Noise schedule", "x_label": "step", "y_label": "sigma",
                           "series": [{"label": "sigma", "x": list(range(len(sigmas))), "y": sigmas}]}]}

The editor calls :func:`node_insight` for the selected node; it never needs to know
what the plot means. A hook that fails is reported, never raised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from nodeflow.model.context import RunSettings


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


def has_insight(cls: type) -> bool:
    return callable(getattr(cls, "insight", None))


def node_insight(cls: type, values: Mapping[str, Any]) -> Insight | None:
    """What ``cls.insight(values)`` offers, checked and normalised; None if it has no hook."""
    hook = getattr(cls, "insight", None)
    if not callable(hook):
        return None
    try:
        raw = hook(dict(values)) or {}
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


def field_options(cls: type, field_name: str, settings: RunSettings | None = None) -> list[str] | None:
    """The values a node type offers for a file field (e.g. installed checkpoints), from
    an optional classmethod ``field_options(field_name, settings) -> list[str]``; None
    when the node type has no such hook or it fails (the editor then lists folders itself)."""
    hook = getattr(cls, "field_options", None)
    if not callable(hook):
        return None
    try:
        options = hook(field_name, settings if settings is not None else RunSettings())
    except Exception:
        return None
    return [str(option) for option in options] if options is not None else None
