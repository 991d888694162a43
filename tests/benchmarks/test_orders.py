"""The side-by-side benchmarks run their tools in orders where each follows each other
equally often; a plain rotation let the tool after ComfyUI's process look 20% slower."""

from __future__ import annotations

from collections import Counter

import pytest

from benchmarks.orders import balance_note, order_of_round, williams_orders


@pytest.mark.parametrize("count", [2, 3, 4, 5, 6])
def test_every_tool_follows_every_other_and_holds_every_position_equally_often(count):
    tools = [f"tool{i}" for i in range(count)]
    rounds = williams_orders(tools)
    assert all(sorted(order) == tools for order in rounds)
    follows = Counter((order[i - 1], order[i]) for order in rounds for i in range(1, count))
    positions = Counter((tool, i) for order in rounds for i, tool in enumerate(order))
    assert len(follows) == count * (count - 1) and len(set(follows.values())) == 1
    assert len(positions) == count * count and len(set(positions.values())) == 1


def test_a_plain_rotation_would_not_be_balanced_and_the_design_repeats():
    tools = ["comfyui", "nodeflow", "diffusers"]
    rotation = [tools[r:] + tools[:r] for r in range(3)]
    assert len({(o[i - 1], o[i]) for o in rotation for i in (1, 2)}) == 3  # only 3 of the 6 pairs
    assert [order_of_round(tools, r) for r in range(6)] == [order_of_round(tools, r + 6) for r in range(6)]
    assert balance_note(tools, 6) == "" and "multiple of 6" in balance_note(tools, 3)
