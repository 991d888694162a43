"""Pictures of numbers, drawn with Pillow: line plots, scatter maps, heat maps, vector
fields and captioned grids, as float RGB arrays [H, W, 3] in [0, 1].

The explain nodes return these as IMAGE values, so a plot is a picture like any other:
it previews in the editor, saves as a PNG and works headless (no plotting library).
Drawing is deterministic (Pillow's built-in font), so the docs' pictures are stable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# A palette that reads on white and is distinct in grey (Okabe-Ito, plus two).
PALETTE = ((0, 114, 178), (213, 94, 0), (0, 158, 115), (204, 121, 167), (230, 159, 0),
           (86, 180, 233), (120, 120, 120), (0, 0, 0), (240, 228, 66), (150, 60, 200))
BACKGROUND = (255, 255, 255)
INK = (30, 30, 30)
GRID = (225, 225, 225)


@lru_cache(maxsize=8)
def font(size: int = 11) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


@dataclass
class Line:
    label: str
    x: Sequence[float]
    y: Sequence[float]
    marks: bool = False  # a dot at every point (the steps a sampler visits)
    colour: tuple[int, int, int] | None = None
    joined: bool = True  # False: dots only
    width: int = 2


@dataclass
class Panel:
    title: str
    lines: list[Line] = field(default_factory=list)
    x_label: str = ""
    y_label: str = ""
    log_y: bool = False


def to_float(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def to_pil(array: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if not math.isfinite(low) or not math.isfinite(high) or high <= low:
        return [low]
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = min((m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw), default=raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000 or abs(value) < 0.01:
        return f"{value:.0e}".replace("e+0", "e").replace("e-0", "e-")
    return f"{value:.3g}"


def line_panel(panel: Panel, width: int = 420, height: int = 280) -> np.ndarray:
    """One plot: its lines over shared axes, a legend, axis labels."""
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = 52, 10, 22, 34
    draw.text((left, 4), panel.title, fill=INK, font=font(12))
    xs = [float(v) for line in panel.lines for v in line.x]
    ys = [float(v) for line in panel.lines for v in line.y]
    if panel.log_y:
        ys = [math.log10(max(v, 1e-12)) for v in ys]
    if not xs:
        return to_float(image)
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pad = (y1 - y0) * 0.05
    y0, y1 = y0 - pad, y1 + pad
    plot_w, plot_h = width - left - right, height - top - bottom

    def to_screen(x: float, y: float) -> tuple[float, float]:
        if panel.log_y:
            y = math.log10(max(y, 1e-12))
        return left + (x - x0) / (x1 - x0) * plot_w, top + (1 - (y - y0) / (y1 - y0)) * plot_h

    for tick in _ticks(y0, y1):
        sy = top + (1 - (tick - y0) / (y1 - y0)) * plot_h
        draw.line([(left, sy), (left + plot_w, sy)], fill=GRID)
        label = _fmt(10 ** tick if panel.log_y else tick)
        draw.text((left - 4, sy), label, fill=INK, font=font(10), anchor="rm")
    for tick in _ticks(x0, x1):
        sx = left + (tick - x0) / (x1 - x0) * plot_w
        draw.line([(sx, top), (sx, top + plot_h)], fill=GRID)
        draw.text((sx, top + plot_h + 3), _fmt(tick), fill=INK, font=font(10), anchor="ma")
    draw.rectangle([left, top, left + plot_w, top + plot_h], outline=INK)
    for index, line in enumerate(panel.lines):
        colour = line.colour or PALETTE[index % len(PALETTE)]
        points = [to_screen(float(x), float(y)) for x, y in zip(line.x, line.y)]
        if len(points) > 1 and line.joined:
            draw.line(points, fill=colour, width=line.width)
        if line.marks or len(points) == 1 or not line.joined:
            for sx, sy in points:
                draw.ellipse([sx - 2.5, sy - 2.5, sx + 2.5, sy + 2.5], fill=colour)
    legend_y = top + 4
    for index, line in enumerate(panel.lines):
        if not line.label:
            continue
        colour = line.colour or PALETTE[index % len(PALETTE)]
        box = draw.textbbox((0, 0), line.label, font=font(10))
        lx = left + plot_w - (box[2] - box[0]) - 22
        draw.rectangle([lx - 2, legend_y - 1, left + plot_w - 3, legend_y + 11], fill=BACKGROUND)
        draw.line([(lx, legend_y + 6), (lx + 12, legend_y + 6)], fill=colour, width=3)
        draw.text((lx + 16, legend_y), line.label, fill=INK, font=font(10))
        legend_y += 13
    draw.text((left + plot_w / 2, height - 14), panel.x_label, fill=INK, font=font(10), anchor="ma")
    if panel.y_label:
        label = Image.new("RGB", (plot_h, 12), BACKGROUND)
        ImageDraw.Draw(label).text((plot_h / 2, 0), panel.y_label, fill=INK, font=font(10), anchor="ma")
        image.paste(label.rotate(90, expand=True), (2, top))
    return to_float(image)


def side_by_side(pictures: Sequence[np.ndarray], gap: int = 6) -> np.ndarray:
    """Pictures in one row on white, top-aligned."""
    height = max(p.shape[0] for p in pictures)
    width = sum(p.shape[1] for p in pictures) + gap * (len(pictures) - 1)
    out = np.ones((height, width, 3), dtype=np.float32)
    x = 0
    for picture in pictures:
        out[: picture.shape[0], x: x + picture.shape[1]] = picture
        x += picture.shape[1] + gap
    return out


def stacked(pictures: Sequence[np.ndarray], gap: int = 6) -> np.ndarray:
    """Pictures in one column on white, left-aligned."""
    width = max(p.shape[1] for p in pictures)
    height = sum(p.shape[0] for p in pictures) + gap * (len(pictures) - 1)
    out = np.ones((height, width, 3), dtype=np.float32)
    y = 0
    for picture in pictures:
        out[y: y + picture.shape[0], : picture.shape[1]] = picture
        y += picture.shape[0] + gap
    return out


def grid(rows: Sequence[Sequence[np.ndarray]], row_labels: Sequence[str] = (), column_labels: Sequence[str] = (),
         cell: int = 64, title: str = "") -> np.ndarray:
    """Equal cells (each picture scaled to ``cell`` px, nearest neighbour) with a label
    left of each row and above each column."""
    label_w = max((draw_width(label) for label in row_labels), default=0) + (10 if row_labels else 0)
    head = (16 if title else 0) + (14 if column_labels else 0)
    columns = max((len(row) for row in rows), default=0)
    width = label_w + columns * (cell + 3) + 3
    height = head + len(rows) * (cell + 3) + 3
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    if title:
        draw.text((3, 2), title, fill=INK, font=font(12))
    for c, label in enumerate(column_labels):
        draw.text((label_w + 3 + c * (cell + 3) + cell / 2, head - 13), label, fill=INK, font=font(10), anchor="ma")
    for r, row in enumerate(rows):
        y = head + 3 + r * (cell + 3)
        if r < len(row_labels):
            draw.text((3, y + cell / 2), row_labels[r], fill=INK, font=font(10), anchor="lm")
        for c, picture in enumerate(row):
            tile = to_pil(picture).resize((cell, cell), Image.NEAREST)
            image.paste(tile, (label_w + 3 + c * (cell + 3), y))
    return to_float(image)


def draw_width(text: str, size: int = 10) -> int:
    box = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), text, font=font(size))
    return int(box[2] - box[0])


def heat_map(matrix: np.ndarray, labels: Sequence[str], title: str = "", cell: int = 22) -> np.ndarray:
    """A square matrix of values in [-1, 1] (cosine similarities): blue low, red high,
    the value written in each cell, the labels on the left and numbered on top."""
    n = matrix.shape[0]
    label_w = max((draw_width(f"{i + 1} {label}") for i, label in enumerate(labels)), default=0) + 8
    top = 20 + 14
    image = Image.new("RGB", (label_w + n * cell + 4, top + n * cell + 4), BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.text((3, 2), title, fill=INK, font=font(12))
    low, high = float(matrix.min()), float(matrix.max())
    span = max(high - low, 1e-6)
    for i in range(n):
        draw.text((3, top + i * cell + cell / 2), f"{i + 1} {labels[i]}", fill=INK, font=font(10), anchor="lm")
        draw.text((label_w + i * cell + cell / 2, top - 12), str(i + 1), fill=INK, font=font(10), anchor="ma")
        for j in range(n):
            t = (float(matrix[i, j]) - low) / span
            colour = (int(60 + 195 * t), int(90 + 80 * (1 - abs(2 * t - 1))), int(255 - 195 * t))
            x, y = label_w + j * cell, top + i * cell
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=colour)
            if cell >= 20:
                value = round(float(matrix[i, j]), 2)
                text = f"{value:.2f}"[1:] if 0 <= value < 1 else f"{value:.1f}"
                draw.text((x + cell / 2, y + cell / 2), text, fill=(255, 255, 255), font=font(8), anchor="mm")
    return to_float(image)


def scatter_map(points: np.ndarray, labels: Sequence[str], colours: Sequence[tuple[int, int, int]] | None = None,
                arrows: Sequence[tuple[np.ndarray, np.ndarray, str]] = (), title: str = "",
                size: int = 420, x_label: str = "", y_label: str = "") -> np.ndarray:
    """Labelled points in 2-D (a PCA map), with arrows ``(from, to, label)``."""
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.text((3, 2), title, fill=INK, font=font(12))
    for row, (_, _, label) in enumerate(arrows):  # arrow captions under the title
        draw.text((3, 18 + 13 * row), label, fill=(200, 0, 0), font=font(10))
    margin, top = 20, 38 + 13 * len(arrows)
    right = min(max((draw_width(label) for label in labels), default=0) + 14, size // 3)
    every = [points] + [np.stack([a, b]) for a, b, _ in arrows]
    allp = np.concatenate(every, axis=0) if len(points) or arrows else np.zeros((1, 2))
    low, high = allp.min(axis=0), allp.max(axis=0)
    span = np.maximum(high - low, 1e-6)
    inner = size - margin - right

    def to_screen(p: np.ndarray) -> tuple[float, float]:
        q = (p - low) / span
        return margin + q[0] * inner, top + (1 - q[1]) * (size - top - margin)

    draw.rectangle([margin - 8, top - 8, size - 4, size - margin + 8], outline=GRID)
    draw.text((size / 2, size - 12), x_label, fill=INK, font=font(10), anchor="ma")
    if y_label:
        draw.text((3, size / 2), y_label, fill=INK, font=font(10), anchor="lm")
    for i, point in enumerate(points):
        sx, sy = to_screen(point)
        colour = colours[i] if colours else PALETTE[i % len(PALETTE)]
        outline = INK if sum(colour) > 600 else colour
        draw.ellipse([sx - 4, sy - 4, sx + 4, sy + 4], fill=colour, outline=outline)
        draw.text((sx + 6, sy), labels[i], fill=INK, font=font(10), anchor="lm")
    for start, end, label in arrows:
        (ax, ay), (bx, by) = to_screen(start), to_screen(end)
        draw.line([(ax, ay), (bx, by)], fill=(200, 0, 0), width=2)
        angle = math.atan2(by - ay, bx - ax)
        for turn in (2.6, -2.6):
            draw.line([(bx, by), (bx + 9 * math.cos(angle + turn), by + 9 * math.sin(angle + turn))], fill=(200, 0, 0), width=2)
    return to_float(image)


def vector_field(points: np.ndarray, directions: np.ndarray, data: np.ndarray, extent: float,
                 paths: Sequence[np.ndarray] = (), title: str = "", size: int = 300,
                 path_colour: tuple[int, int, int] = (213, 94, 0)) -> np.ndarray:
    """Arrows ``directions`` at ``points`` (2-D, in [-extent, extent]), the data set as grey
    dots, and ``paths`` (each [steps, 2]) drawn as lines ending in a dot."""
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    top = 18

    def to_screen(p: np.ndarray) -> tuple[float, float]:
        return ((p[0] + extent) / (2 * extent) * (size - 8) + 4,
                top + (1 - (p[1] + extent) / (2 * extent)) * (size - top - 4))

    for p in data:
        sx, sy = to_screen(p)
        draw.point((sx, sy), fill=(170, 170, 170))
    # Every arrow the same length (the direction is what matters), darker where the field is stronger.
    lengths = np.linalg.norm(directions, axis=1)
    strongest = float(lengths.max()) if len(lengths) else 0.0
    cell = (size - top) / math.sqrt(max(len(points), 1))
    for p, d, length in zip(points, directions, lengths):
        ax, ay = to_screen(p)
        if length <= 1e-12 or strongest <= 0:
            draw.ellipse([ax - 1.2, ay - 1.2, ax + 1.2, ay + 1.2], fill=(0, 114, 178))
            continue
        dx, dy = d[0] / length * cell * 0.75, -d[1] / length * cell * 0.75
        shade = 0.25 + 0.75 * (length / strongest) ** 0.5
        colour = (int(255 - shade * 255), int(255 - shade * 141), int(255 - shade * 77))
        draw.line([(ax, ay), (ax + dx, ay + dy)], fill=colour, width=1)
        draw.ellipse([ax + dx - 1.3, ay + dy - 1.3, ax + dx + 1.3, ay + dy + 1.3], fill=colour)
    for path in paths:
        screen = [to_screen(p) for p in path]
        draw.line(screen, fill=path_colour, width=1)
        ex, ey = screen[-1]
        draw.ellipse([ex - 2, ey - 2, ex + 2, ey + 2], fill=path_colour)
    draw.rectangle([0, 0, size - 1, size - 1], outline=GRID)
    draw.text((4, 2), title, fill=INK, font=font(11))
    return to_float(image)


def caption(picture: np.ndarray, text: str) -> np.ndarray:
    """``picture`` with a line of text above it."""
    head = Image.new("RGB", (max(picture.shape[1], draw_width(text, 12) + 6), 18), BACKGROUND)
    ImageDraw.Draw(head).text((3, 2), text, fill=INK, font=font(12))
    return stacked([to_float(head), picture], gap=0)


def as_image(picture: np.ndarray):
    """A float array [H, W, 3] -> an IMAGE value (torch [1, H, W, 3])."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(picture, dtype=np.float32))[None]
