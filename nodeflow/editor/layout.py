"""Where nodes go: a free spot for a new node, a layered layout for imported graphs,
and the view transform that makes zoom and "fit" possible on Dear PyGui's node editor.

All of it is plain geometry on rectangles in canvas units (the model's positions), so
it is tested without a window. A rectangle is ``(x, y, width, height)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping

import networkx as nx

Rect = tuple[float, float, float, float]

GAP = 24.0  # the least space kept between a placed node and its neighbours
LAYER_GAP = (70.0, 40.0)  # between layers (x) and between nodes of a layer (y)
ZOOM_LEVELS = (0.2, 0.25, 0.3, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 1.0, 1.15, 1.3, 1.5, 1.75, 2.0)

# What a node measures at zoom 1 before it is drawn, from its declaration: a title bar,
# one row per input and output, taller rows for multi-line text.
NODE_WIDTH, TITLE_HEIGHT, ROW_HEIGHT, TEXT_BOX_HEIGHT = 250.0, 34.0, 26.0, 100.0  # measured at zoom 1


def estimate_size(cls: type | None) -> tuple[float, float]:
    if cls is None:
        return NODE_WIDTH, TITLE_HEIGHT + 2 * ROW_HEIGHT
    rows, width = 0.0, NODE_WIDTH
    for field_decl in cls.inputs.values():
        if getattr(field_decl, "multiline", False):  # a box of `lines` (4: TEXT_BOX_HEIGHT), `width` times as wide
            lines = getattr(field_decl, "lines", 4)
            rows += (TEXT_BOX_HEIGHT + 16 * (lines - 4)) / ROW_HEIGHT
            width = max(width, NODE_WIDTH + 170 * (getattr(field_decl, "width", 1.0) - 1.0))
        else:
            rows += 1.0
    rows += len(cls.outputs)
    return width, TITLE_HEIGHT + ROW_HEIGHT * max(rows, 1.0) + 8.0


def overlaps(a: Rect, b: Rect, gap: float = 0.0) -> bool:
    return (a[0] < b[0] + b[2] + gap and b[0] < a[0] + a[2] + gap
            and a[1] < b[1] + b[3] + gap and b[1] < a[1] + a[3] + gap)


def any_overlap(rects: Iterable[Rect]) -> bool:
    items = list(rects)
    return any(overlaps(items[i], items[j]) for i in range(len(items)) for j in range(i + 1, len(items)))


def free_spot(size: tuple[float, float], near: tuple[float, float], taken: Iterable[Rect], step: float = GAP) -> tuple[float, float]:
    """The position closest to ``near`` where a node of ``size`` overlaps none of
    ``taken`` (with :data:`GAP` around it), searched ring by ring outwards."""
    rects = list(taken)
    w, h = size

    def free(x: float, y: float) -> bool:
        return not any(overlaps((x, y, w, h), r, GAP) for r in rects)

    x0, y0 = near
    if free(x0, y0):
        return x0, y0
    for ring in range(1, 400):
        candidates = [(dx, dy) for dx in range(-ring, ring + 1) for dy in range(-ring, ring + 1) if max(abs(dx), abs(dy)) == ring]
        candidates.sort(key=lambda d: (math.hypot(d[0], d[1]), -d[0], d[1]))  # prefer right, then down
        for dx, dy in candidates:
            x, y = x0 + dx * step, y0 + dy * step
            if free(x, y):
                return x, y
    return x0, max((r[1] + r[3] for r in rects), default=y0) + GAP  # below everything


def layered_layout(edges: Iterable[tuple[str, str]], sizes: Mapping[str, tuple[float, float]],
                   origin: tuple[float, float] = (40.0, 40.0)) -> dict[str, tuple[float, float]]:
    """Positions for a DAG drawn left to right, Sugiyama-style: each node in the column
    of its longest path from a source (so every link points right), nodes of a column
    ordered by the mean row of what feeds them (fewer crossings), no two overlapping."""
    dag = nx.DiGraph()
    dag.add_nodes_from(sizes)
    dag.add_edges_from((a, b) for a, b in edges if a in sizes and b in sizes and a != b)
    if not nx.is_directed_acyclic_graph(dag):
        dag = nx.DiGraph(e for e in nx.dfs_edges(dag))  # a broken file: lay out a spanning forest
        dag.add_nodes_from(sizes)
    layer: dict[str, int] = {}
    for node in nx.topological_sort(dag):
        layer[node] = max((layer[p] + 1 for p in dag.predecessors(node)), default=0)
    # A source feeding only a later column sits just before its first consumer.
    for node in sorted(layer, key=lambda n: -layer[n]):
        if dag.in_degree(node) == 0 and dag.out_degree(node):
            layer[node] = min(layer[s] for s in dag.successors(node)) - 1
    columns: dict[int, list[str]] = {}
    for node in sorted(layer, key=_natural):
        columns.setdefault(layer[node], []).append(node)
    row: dict[str, float] = {}
    for index in sorted(columns):
        column = columns[index]
        column.sort(key=lambda n: (_mean(row[p] for p in dag.predecessors(n) if p in row), _natural(n)))
        for position, node in enumerate(column):
            row[node] = position
    positions: dict[str, tuple[float, float]] = {}
    x = origin[0]
    for index in sorted(columns):
        column = columns[index]
        y = origin[1]
        for node in column:
            positions[node] = (x, y)
            y += sizes[node][1] + LAYER_GAP[1]
        x += max(sizes[n][0] for n in column) + LAYER_GAP[0]
    return positions


def _mean(values: Iterable[float]) -> float:
    items = list(values)
    return sum(items) / len(items) if items else -1.0


def _natural(node_id: str) -> tuple[int, str]:
    return (int(node_id), "") if node_id.isdigit() else (1 << 30, node_id)


@dataclass(frozen=True)
class View:
    """How canvas units map to the node editor's own coordinates: ``drawn = pos * zoom
    + offset``. Dear PyGui's node editor cannot scale, so the editor zooms by placing
    nodes at scaled positions and drawing them with a font and widths of that scale."""

    zoom: float = 1.0
    offset: tuple[float, float] = (0.0, 0.0)

    def drawn(self, pos: tuple[float, float]) -> tuple[float, float]:
        return pos[0] * self.zoom + self.offset[0], pos[1] * self.zoom + self.offset[1]

    def model(self, drawn: tuple[float, float]) -> tuple[float, float]:
        return (drawn[0] - self.offset[0]) / self.zoom, (drawn[1] - self.offset[1]) / self.zoom

    def zoomed(self, zoom: float, anchor: tuple[float, float]) -> "View":
        """The view at ``zoom`` that keeps the canvas point drawn at ``anchor`` in place."""
        mx, my = self.model(anchor)
        return View(zoom, (anchor[0] - mx * zoom, anchor[1] - my * zoom))


def bounds(rects: Iterable[Rect]) -> Rect | None:
    items = list(rects)
    if not items:
        return None
    x0 = min(r[0] for r in items)
    y0 = min(r[1] for r in items)
    x1 = max(r[0] + r[2] for r in items)
    y1 = max(r[1] + r[3] for r in items)
    return x0, y0, x1 - x0, y1 - y0


def fit_view(rects: Iterable[Rect], visible: tuple[float, float], margin: float = 30.0,
             levels: tuple[float, ...] = ZOOM_LEVELS, most: float = 1.0) -> View:
    """The view that shows every rectangle (canvas units) inside a visible area of
    ``visible`` (width, height) drawn units whose top-left is drawn (0, 0): the largest
    zoom level that fits, at most ``most``, with the content centred."""
    box = bounds(rects)
    if box is None:
        return View()
    width, height = max(visible[0] - 2 * margin, 1.0), max(visible[1] - 2 * margin, 1.0)
    fitting = [z for z in levels if z <= most and box[2] * z <= width and box[3] * z <= height]
    zoom = max(fitting) if fitting else min(levels)
    ox = round((visible[0] - box[2] * zoom) / 2 - box[0] * zoom)
    oy = round((visible[1] - box[3] * zoom) / 2 - box[1] * zoom)
    return View(zoom, (ox, oy))


def step_zoom(zoom: float, steps: int, levels: tuple[float, ...] = ZOOM_LEVELS) -> float:
    """The zoom level ``steps`` levels above (or below, if negative) ``zoom``."""
    nearest = min(range(len(levels)), key=lambda i: abs(levels[i] - zoom))
    return levels[max(0, min(len(levels) - 1, nearest + steps))]
