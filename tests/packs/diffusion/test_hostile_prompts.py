"""A prompt is untrusted text: parsing it takes time in proportion to its length and can be interrupted."""

from __future__ import annotations

import time

import pytest

from nodes.diffusion.impl.prompt import EMPHASIS, parse_weights


def test_deeply_nested_brackets_parse_in_linear_time():
    depth = 25_000  # within the prompt field's 100,000-character limit
    started = time.perf_counter()
    [(piece, weight)] = parse_weights("(" * depth + "x" + ")" * depth)
    nested = time.perf_counter() - started
    assert piece == "x" and weight == float("inf")  # 1.1 ** 25000 overflows, as the old parser did
    started = time.perf_counter()
    parse_weights("(a" * depth)  # every run inside a different number of open brackets
    assert time.perf_counter() - started < 5 and nested < 5  # was over 90 s


def test_crossing_round_and_square_brackets_multiply():
    assert parse_weights("(a [b) c]") == [("a ", EMPHASIS), ("b", pytest.approx(1.0)), (" c", 1 / EMPHASIS)]
    assert parse_weights("(x:0) y") == [("x", 0.0), (" y", 1.0)]


def test_parsing_a_long_prompt_can_be_interrupted():
    class Stop(Exception):
        pass

    def check():
        raise Stop

    with pytest.raises(Stop):
        parse_weights("(a " * 20_000, check)
