"""In which order a round runs its tools, so that each follows each other equally often.

A process on this machine runs slower just after another freed gigabytes (the virtual
machine hands freed memory back to its host and faults it in again: measured with
``bench_checkpoint_load``, nodeflow's load took 1.91 s after ComfyUI's process and
1.55 s after another nodeflow load). A plain rotation of the order (ABC, BCA, CAB) does
not balance that: with three tools every tool always follows the same one, and the
figures then measure who came before. A Williams design does: over its rounds every tool
runs in every position equally often and follows every other tool equally often.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")


def williams_orders(items: Sequence[T]) -> list[list[T]]:
    """The rounds of a Williams design over ``items``: ``len(items)`` orders for an even
    count, twice that for an odd one (each order and its mirror)."""
    n = len(items)
    if n <= 1:
        return [list(items)]
    first, low, high = [0], 1, n - 1
    while len(first) < n:
        first.append(low)
        low += 1
        if len(first) < n:
            first.append(high)
            high -= 1
    rows = [[(index + shift) % n for index in first] for shift in range(n)]
    if n % 2:
        rows += [row[::-1] for row in rows]
    return [[items[index] for index in row] for row in rows]


def order_of_round(items: Sequence[T], round_index: int) -> list[T]:
    """The order of round ``round_index`` (from 0); the design repeats after its last round."""
    orders = williams_orders(items)
    return orders[round_index % len(orders)]


def balance_note(items: Sequence[object], rounds: int) -> str:
    """A warning when ``rounds`` does not complete the design (empty when it does)."""
    size = len(williams_orders(items))
    if rounds % size == 0:
        return ""
    return (f"note: {rounds} round(s) do not complete the balanced order of {len(items)} tools "
            f"(a multiple of {size} does); who-follows-whom is uneven")


def run_rounds(tools: Sequence[str], rounds: int, measure: Callable[[str], dict[str, float]]) -> dict[str, list[dict[str, float]]]:
    """``rounds`` rounds of ``measure(tool)`` for every tool, in the design's orders; prints
    the load average, a warning when the rounds do not complete the design, and each
    measurement as it comes. Each tool's figures, round by round."""
    results: dict[str, list[dict[str, float]]] = {tool: [] for tool in tools}
    print(f"load average at start: {os.getloadavg()[0]:.2f}; {rounds} round(s) of {', '.join(tools)}", flush=True)
    if balance_note(tools, rounds):
        print(balance_note(tools, rounds), flush=True)
    for round_index in range(rounds):
        for tool in order_of_round(tools, round_index):
            figures = measure(tool)
            results[tool].append(figures)
            print(f"round {round_index + 1} {tool}: " + ", ".join(f"{k} {v:,.3f}" for k, v in figures.items()), flush=True)
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return results
