"""The procedural dataset: one coloured shape on a plain background, with captions.

Everything is deterministic from a seed. Images are drawn at 4x and downsampled, so edges
are anti-aliased like a photograph's rather than aliased like a bitmap.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SIZE = 32
_SUPERSAMPLE = 4

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 30),
    "purple": (140, 40, 180),
    "orange": (250, 140, 20),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
COLOUR_NAMES = list(COLOURS)
SHAPES = ["circle", "square", "triangle", "star", "cross"]
# Shapes the base model never sees: taught by the bundled LoRA (Scene.shape indexes ALL_SHAPES).
NEW_SHAPES = ["heart"]
ALL_SHAPES = SHAPES + NEW_SHAPES
SIZE_BINS = 3  # small / medium / large, for the judging classifier
POSITION_BINS = 3  # per axis: left / centre / right, top / middle / bottom
_COLOUR_JITTER = 12
_RADIUS_RANGE = (6.0, 12.0)  # half-extent of a shape, in output pixels

# Every word a caption can use: the tokenizer vocabulary.
WORDS = ["a", "on", "with", "background", "shape", ","] + COLOUR_NAMES + SHAPES


@dataclass(frozen=True)
class Scene:
    colour: int  # index into COLOUR_NAMES (the shape's colour)
    shape: int  # index into SHAPES
    background: int  # index into COLOUR_NAMES, never equal to colour
    radius: float
    cx: float
    cy: float
    jitter: tuple[int, ...]  # 6 ints: RGB offsets for the shape and the background

    @property
    def size_bin(self) -> int:
        low, high = _RADIUS_RANGE
        return min(SIZE_BINS - 1, int((self.radius - low) / (high - low) * SIZE_BINS))

    @property
    def position_bin(self) -> int:
        col = min(POSITION_BINS - 1, int(self.cx / SIZE * POSITION_BINS))
        row = min(POSITION_BINS - 1, int(self.cy / SIZE * POSITION_BINS))
        return row * POSITION_BINS + col


def random_scene(rng: random.Random, colour: int | None = None, shape: int | None = None,
                 background: int | None = None) -> Scene:
    colour = rng.randrange(len(COLOURS)) if colour is None else colour
    shape = rng.randrange(len(SHAPES)) if shape is None else shape
    if background is None:
        background = rng.choice([i for i in range(len(COLOURS)) if i != colour])
    radius = rng.uniform(*_RADIUS_RANGE)
    margin = radius + 1
    jitter = tuple(rng.randint(-_COLOUR_JITTER, _COLOUR_JITTER) for _ in range(6))
    return Scene(colour, shape, background, radius, rng.uniform(margin, SIZE - margin),
                 rng.uniform(margin, SIZE - margin), jitter)


def _rgb(name_index: int, offsets: tuple[int, ...]) -> tuple[int, int, int]:
    base = COLOURS[COLOUR_NAMES[name_index]]
    return tuple(max(0, min(255, c + o)) for c, o in zip(base, offsets))  # type: ignore[return-value]


def _star(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    points = []
    for k in range(10):
        radius = r if k % 2 == 0 else r * 0.42
        angle = -math.pi / 2 + k * math.pi / 5
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return points


def render(scene: Scene, size: int = SIZE) -> Image.Image:
    """The scene at ``size`` pixels (a multiple of 32: the same scene, finer)."""
    s = _SUPERSAMPLE * size // SIZE
    image = Image.new("RGB", (SIZE * s, SIZE * s), _rgb(scene.background, scene.jitter[3:]))
    _draw(ImageDraw.Draw(image), scene, s, _rgb(scene.colour, scene.jitter[:3]))
    return image.resize((size, size), Image.Resampling.BOX)


def render_mask(scene: Scene, size: int = SIZE) -> Image.Image:
    """Where the shape is: white on black ("L"), anti-aliased like the image."""
    s = _SUPERSAMPLE * size // SIZE
    image = Image.new("L", (SIZE * s, SIZE * s), 0)
    _draw(ImageDraw.Draw(image), scene, s, 255)
    return image.resize((size, size), Image.Resampling.BOX)


def _heart(cx: float, cy: float, r: float, steps: int = 48) -> list[tuple[float, float]]:
    """The classic parametric heart, scaled to fill about the same box as the other shapes."""
    points = []
    for k in range(steps):
        t = 2 * math.pi * k / steps
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        points.append((cx + x / 16 * r, cy - (y + 2.5) / 15 * r))
    return points


def _draw(draw: ImageDraw.ImageDraw, scene: Scene, s: int, fill) -> None:
    cx, cy, r = scene.cx * s, scene.cy * s, scene.radius * s
    name = ALL_SHAPES[scene.shape]
    if name == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif name == "square":
        h = r * 0.85  # same visual weight as a circle of radius r
        draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=fill)
    elif name == "triangle":
        draw.polygon([(cx, cy - r), (cx + r * 0.95, cy + r * 0.75), (cx - r * 0.95, cy + r * 0.75)], fill=fill)
    elif name == "star":
        draw.polygon(_star(cx, cy, r * 1.1), fill=fill)
    elif name == "cross":  # thick enough to survive the autoencoder
        w = r * 0.38
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)
    elif name == "heart":
        draw.polygon(_heart(cx, cy, r), fill=fill)
    else:
        raise ValueError(f"unknown shape {name!r}")


# --- captions ---------------------------------------------------------------------------

_FULL_TEMPLATES = [
    "a {c} {s} on a {b} background",
    "a {b} background with a {c} {s}",
    "{c} {s}, {b} background",
    "a {c} {s} on {b}",
    "{c} {s} on a {b} background",
    "{b} background, {c} {s}",
]
# Captions that name only some attributes: they teach the model what a single word means,
# which is what makes a prompt like "a circle" and a negative prompt like "red" work.
_PARTIAL_TEMPLATES = [
    "a {s}",
    "{s}",
    "a {c} {s}",
    "{c} {s}",
    "{c}",
    "a {c} shape",
    "a {s} on a {b} background",
    "a {b} background",
    "{b} background",
    "a {c} shape on a {b} background",
]


def full_caption(scene: Scene, template: int = 0) -> str:
    return _FULL_TEMPLATES[template].format(
        c=COLOUR_NAMES[scene.colour], s=ALL_SHAPES[scene.shape], b=COLOUR_NAMES[scene.background])


def caption(scene: Scene, rng: random.Random, partial_fraction: float = 0.25) -> str:
    """A caption for ``scene``: usually complete in a random word order, sometimes partial."""
    templates = _PARTIAL_TEMPLATES if rng.random() < partial_fraction else _FULL_TEMPLATES
    return rng.choice(templates).format(
        c=COLOUR_NAMES[scene.colour], s=ALL_SHAPES[scene.shape], b=COLOUR_NAMES[scene.background])


def mentioned(text: str) -> tuple[int, int, int]:
    """(colour, shape, background) indices a caption names, -1 where it names none.

    A colour word directly before "background" or directly after "on" is the background's;
    the other is the shape's.
    """
    words = text.replace(",", " ").split()
    colour = shape = background = -1
    for i, word in enumerate(words):
        if word in COLOURS:
            if words[i + 1:i + 2] == ["background"] or words[i - 1:i] == ["on"]:
                background = COLOUR_NAMES.index(word)
            else:
                colour = COLOUR_NAMES.index(word)
        elif word in SHAPES:
            shape = SHAPES.index(word)
    return colour, shape, background


# --- splits -----------------------------------------------------------------------------

TRAIN_SEED = 0
HELD_OUT_SEED = 1_000_003  # a separate stream: held-out scenes never appear in training


def split_scenes(count: int, seed: int, shapes: tuple[int, ...] | None = None) -> list[Scene]:
    """The scenes of a split: combinations cycle through all (colour, shape, background)
    triples (over ``shapes``, default the base five) so every split is balanced; size,
    position and colour jitter are random."""
    rng = random.Random(seed)
    combos = [(c, s, b) for c in range(len(COLOURS)) for s in (shapes or range(len(SHAPES)))
              for b in range(len(COLOURS)) if b != c]
    rng.shuffle(combos)
    return [random_scene(rng, *combos[i % len(combos)]) for i in range(count)]


def make_split(count: int, seed: int, shapes: tuple[int, ...] | None = None, masks: bool = False,
               size: int = SIZE) -> dict[str, np.ndarray]:
    """``count`` scenes rendered: images uint8 [N, size, size, 3] plus integer labels (and
    with ``masks`` the shapes' masks, uint8 [N, size, size])."""
    scenes = split_scenes(count, seed, shapes)
    extra = {"masks": np.stack([np.asarray(render_mask(s, size)) for s in scenes])} if masks else {}
    return {
        **extra,
        "images": np.stack([np.asarray(render(s, size)) for s in scenes]),
        "colour": np.array([s.colour for s in scenes], dtype=np.int64),
        "shape": np.array([s.shape for s in scenes], dtype=np.int64),
        "background": np.array([s.background for s in scenes], dtype=np.int64),
        "size": np.array([s.size_bin for s in scenes], dtype=np.int64),
        "position": np.array([s.position_bin for s in scenes], dtype=np.int64),
    }


def scene_of(split: dict[str, np.ndarray], i: int) -> Scene:
    """Enough of a Scene to caption item ``i`` of a split."""
    return Scene(int(split["colour"][i]), int(split["shape"][i]), int(split["background"][i]),
                 0.0, 0.0, 0.0, (0,) * 6)


def held_out_prompts(count: int, seed: int = HELD_OUT_SEED) -> list[tuple[str, Scene]]:
    """Full-caption prompts over balanced combinations, in varied word orders."""
    rng = random.Random(seed + 1)
    combos = [(c, s, b) for c in range(len(COLOURS)) for s in range(len(SHAPES))
              for b in range(len(COLOURS)) if b != c]
    rng.shuffle(combos)
    prompts = []
    for i in range(count):
        scene = Scene(*combos[i % len(combos)], 0.0, 0.0, 0.0, (0,) * 6)
        prompts.append((full_caption(scene, rng.randrange(len(_FULL_TEMPLATES))), scene))
    return prompts
