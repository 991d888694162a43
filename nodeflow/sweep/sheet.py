"""The contact sheet: every point's first image in one PNG, the values written on it.

Two crossed axes make an XY grid: the first axis' values label the rows (left), the
second's the columns (top). Anything else (one axis, zipped or more than two axes) is a
grid in point order with each cell's values written under it. Images are enlarged by a
whole factor (nearest neighbour, so pixels stay exact) until a cell is at least
``MIN_CELL`` pixels wide, and framed by a ``BORDER``-pixel line of ``FRAME``.
The layout (every cell's and label's box) goes into the manifest.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from nodeflow.sweep.axes import Axis, Point, short

MIN_CELL = 128
BORDER = 2
GAP = 8
FRAME = (40, 40, 40)
BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)
MISSING = (200, 200, 200)


def font():
    from PIL import ImageFont

    return ImageFont.load_default()


def label_size(text: str) -> tuple[int, int]:
    from PIL import Image, ImageDraw

    left, top, right, bottom = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), text, font=font())
    return right, bottom


def contact_sheet(axes: Sequence[Axis], mode: str, cells: Sequence[tuple[Point, Path | None]], path: Path) -> dict[str, Any]:
    """Write the sheet of ``cells`` (point, its first image or None) to ``path``; returns the layout."""
    from PIL import Image, ImageDraw

    images = {point.index: Image.open(file).convert("RGB") if file else None for point, file in cells}
    sizes = [im.size for im in images.values() if im is not None] or [(64, 64)]
    width, height = max(w for w, _ in sizes), max(h for _, h in sizes)
    scale = max(1, math.ceil(MIN_CELL / max(width, height)))
    cell_w, cell_h = width * scale + 2 * BORDER, height * scale + 2 * BORDER
    grid = mode == "product" and len(axes) == 2
    points = [point for point, _ in cells]
    if grid:
        rows, cols = len(axes[0].values), len(axes[1].values)
        where = {p.index: (p.coords[0], p.coords[1]) for p in points}
        row_labels = [f"{axes[0].field}={short(v)}" for v in axes[0].values]
        col_labels = [f"{axes[1].field}={short(v)}" for v in axes[1].values]
        left = max(label_size(t)[0] for t in row_labels) + GAP
        top = max(label_size(t)[1] for t in col_labels) + GAP
        cell_labels = {}
        below = 0
    else:
        cols = max(1, math.ceil(math.sqrt(len(points))))
        rows = math.ceil(len(points) / cols)
        where = {p.index: divmod(i, cols) for i, p in enumerate(points)}
        cell_labels = {p.index: p.label() for p in points}
        left = top = 0
        below = max(label_size(t)[1] for t in cell_labels.values()) + GAP // 2
    step_x = max(cell_w, *(label_size(t)[0] for t in cell_labels.values()), *([label_size(t)[0] for t in col_labels] if grid else [0])) + GAP
    step_y = cell_h + below + GAP
    sheet = Image.new("RGB", (GAP + left + cols * step_x, GAP + top + rows * step_y), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    layout: dict[str, Any] = {"file": path.name, "scale": scale, "border": BORDER, "cells": [], "labels": []}

    def text(at: tuple[int, int], value: str, role: str) -> None:
        draw.text(at, value, fill=INK, font=font())
        layout["labels"].append({"text": value, "box": list(draw.textbbox(at, value, font=font())), "role": role})

    if grid:
        for c, value in enumerate(col_labels):
            text((GAP + left + c * step_x, GAP), value, "column")
        for r, value in enumerate(row_labels):
            text((GAP, GAP + top + r * step_y + (cell_h - label_size(value)[1]) // 2), value, "row")
    for point in points:
        r, c = where[point.index]
        x, y = GAP + left + c * step_x, GAP + top + r * step_y
        draw.rectangle([x, y, x + cell_w - 1, y + cell_h - 1], fill=FRAME)
        image = images[point.index]
        inner = (x + BORDER, y + BORDER)
        if image is None:
            draw.rectangle([inner[0], inner[1], x + cell_w - 1 - BORDER, y + cell_h - 1 - BORDER], fill=MISSING)
        else:
            sheet.paste(image.resize((image.width * scale, image.height * scale), Image.NEAREST), inner)
        layout["cells"].append({"point": point.index, "box": [x, y, x + cell_w, y + cell_h], "image": image is not None})
        if point.index in cell_labels:
            text((x, y + cell_h + GAP // 4), cell_labels[point.index], "cell")
    sheet.save(path)
    return layout
