"""Prompt text -> weighted token windows, the way SD users know it from A1111 / ComfyUI.

Emphasis syntax (weights multiply when nested):

=================  =========================================
``(word)``         weight x 1.1
``((word))``       x 1.21
``[word]``         / 1.1
``(word:1.3)``     x 1.3 (any number, also below 1 or negative)
``\\(`` ``\\)`` ``\\[`` ``\\]`` ``\\\\``   literal brackets / backslash
``BREAK``          start a new 75-token window here
``embedding:NAME`` the textual-inversion embedding NAME (its vectors take token places)
=================  =========================================

A bracket that is never closed weights the rest of the prompt; a closing bracket with
no opening one, and a ``:`` that is not a ``:number)``, are plain text.

CLIP reads 77 tokens: a start token, 75 tokens of text, an end token. Longer prompts
are cut into windows of 75 tokens, each wrapped in start/end and padded; the encoder
runs once per window and the windows' embeddings are concatenated along the token axis.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

WINDOW = 75  # text tokens per 77-token CLIP window
EMPHASIS = 1.1
BREAK = "BREAK"

_TOKEN = re.compile(
    r"""
    (?P<escape>\\[()\[\]\\])
    | (?P<weight>:\s*(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*\))
    | (?P<open_round>\()
    | (?P<open_square>\[)
    | (?P<close_round>\))
    | (?P<close_square>\])
    | (?P<text>[^\\()\[\]:]+|[\\:])
    """,
    re.VERBOSE,
)
_BREAK_SPLIT = re.compile(r"\s*\bBREAK\b\s*")
# ComfyUI's form: "embedding:" and a file name (extension optional) up to a space or comma.
EMBEDDING = re.compile(r"\bembedding:([^\s,]+)")
PLACEHOLDER_ID = 0  # the id an embedding vector's token place gets; its input embedding is replaced


def parse_weights(text: str, check: Callable[[], None] = lambda: None) -> list[tuple[str, float]]:
    """``text`` (one ``BREAK``-free part) as (piece, weight) runs, adjacent equal weights merged.

    Linear in the length of ``text``: brackets are recorded as spans and each run's weight
    is the product of the spans around it, worked out in one sweep (rescaling every open
    run at each close made 25,000 nested brackets take minutes). ``check`` is called every
    few thousand tokens, so a host can interrupt (it raises)."""
    pieces: list[str] = []
    spans: list[tuple[int, int, float, bool]] = []  # (first run, end run, factor, round?) per bracket pair
    round_open: list[int] = []
    square_open: list[int] = []

    for count, match in enumerate(_TOKEN.finditer(text)):
        if count % 4096 == 4095:
            check()
        kind = match.lastgroup if match.lastgroup != "number" else "weight"
        piece = match.group(0)
        if kind == "escape":
            pieces.append(piece[1])
        elif kind == "open_round":
            round_open.append(len(pieces))
        elif kind == "open_square":
            square_open.append(len(pieces))
        elif kind == "weight" and round_open:
            spans.append((round_open.pop(), len(pieces), float(match.group("number")), True))
        elif kind == "close_round" and round_open:
            spans.append((round_open.pop(), len(pieces), EMPHASIS, True))
        elif kind == "close_square" and square_open:
            spans.append((square_open.pop(), len(pieces), 1 / EMPHASIS, False))
        else:  # text, or a bracket / weight with nothing to close: plain text
            pieces.append(piece)
    spans += [(start, len(pieces), EMPHASIS, True) for start in round_open]
    spans += [(start, len(pieces), 1 / EMPHASIS, False) for start in square_open]
    weights = _span_products(len(pieces), spans)

    merged: list[tuple[str, float]] = []
    for piece, weight in zip(pieces, weights):
        if merged and merged[-1][1] == weight:
            merged[-1] = (merged[-1][0] + piece, weight)
        else:
            merged.append((piece, weight))
    return merged or [("", 1.0)]


def embedding_names(text: str) -> list[str]:
    """The ``embedding:NAME`` names ``text`` holds, read as the encoder reads them: after
    the weights are parsed, so ``(embedding:NAME:1.2)`` names ``NAME`` (the raw text
    would give ``NAME:1.2)``)."""
    return [
        name
        for part in _BREAK_SPLIT.split(text)
        for piece, _weight in parse_weights(part)
        for name in EMBEDDING.findall(piece)
    ]


def _span_products(count: int, spans: list[tuple[int, int, float, bool]]) -> list[float]:
    """For each of ``count`` runs, the product of the factors of the spans holding it.

    Spans of one bracket kind nest (they come off a stack); round and square ones may
    cross, so each kind is swept on its own with a stack of running products (no
    division, so a factor of 0 is exact) and the two results multiplied."""
    weights = [1.0] * count
    for kind in (True, False):
        starting: dict[int, list[tuple[int, float]]] = {}
        for start, end, factor, is_round in spans:
            if end > start and is_round is kind:
                starting.setdefault(start, []).append((end, factor))
        stack: list[tuple[int, float]] = [(count + 1, 1.0)]
        for index in range(count):
            while stack[-1][0] <= index:
                stack.pop()
            for end, factor in sorted(starting.get(index, ()), key=lambda span: -span[0]):
                stack.append((end, stack[-1][1] * factor))
            weights[index] *= stack[-1][1]
    return weights


@dataclass
class Window:
    """One 77-token encoder input, the weight of each position, and the embedding
    vectors that replace the input embedding at some positions (textual inversion)."""

    ids: list[int]
    weights: list[float]
    vectors: dict[int, Any] | None = None  # position -> [dim] tensor


def weighted_tokens(
    tokenizer: Any, text: str, check: Callable[[], None] = lambda: None, embedding: Callable[[str], Any] | None = None
) -> list[list[tuple[Any, ...]]]:
    """Token ids with weights, without start/end tokens, split into the parts ``BREAK``
    separates; ``check`` is called between pieces so a long prompt can be interrupted.

    With ``embedding`` (name -> [n, dim] vectors), each ``embedding:NAME`` becomes n
    entries ``(PLACEHOLDER_ID, weight, vector)``; without, it is read as plain text."""
    parts: list[list[tuple[Any, ...]]] = []
    for part in _BREAK_SPLIT.split(text):
        tokens: list[tuple[Any, ...]] = []
        for number, (piece, weight) in enumerate(parse_weights(part, check)):
            if number % 256 == 255:
                check()
            pieces = EMBEDDING.split(piece) if embedding is not None else [piece]
            for index, chunk in enumerate(pieces):
                if index % 2:  # a name the pattern captured
                    tokens.extend((PLACEHOLDER_ID, weight, vector) for vector in embedding(chunk))
                elif chunk.strip():
                    ids = tokenizer(chunk, add_special_tokens=False, truncation=False, verbose=False).input_ids
                    tokens.extend((token, weight) for token in ids)
        parts.append(tokens)
    return parts


def windows(parts: Sequence[Sequence[tuple[int, float]]], bos: int, eos: int, pad: int) -> list[Window]:
    """Cut weighted tokens into 77-token windows: start, up to 75 tokens, end, padding.

    The end token follows the text directly and padding comes after it, as diffusers'
    pipelines tokenize (``padding="max_length"``), so a short prompt gives exactly their
    input ids. Each ``BREAK`` part starts a new window; an empty prompt is one window."""
    out: list[Window] = []
    for tokens in parts:
        for start in range(0, max(len(tokens), 1), WINDOW):
            chunk = list(tokens[start : start + WINDOW])
            filler = WINDOW - len(chunk)
            vectors = {1 + i: entry[2] for i, entry in enumerate(chunk) if len(entry) > 2}
            out.append(
                Window(
                    ids=[bos] + [entry[0] for entry in chunk] + [eos] + [pad] * filler,
                    weights=[1.0] + [entry[1] for entry in chunk] + [1.0] + [1.0] * filler,
                    vectors=vectors or None,
                )
            )
    return out
