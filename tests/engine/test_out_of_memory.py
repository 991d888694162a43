"""A node that runs out of memory: the cache's unpinned results are freed and the node is run
once more; a second failure names the node. The device is simulated: a fixed pool of bytes
that values hold while alive, and an allocation that does not fit raises what torch raises
(an ``OutOfMemoryError``, a RuntimeError) — on a GPU the same tests hold with real memory."""

from __future__ import annotations

import gc
import weakref

import pytest

from tests.support import testpack
from nodeflow import FLOAT, Float, Node, Output, Socket
from nodeflow.engine.cache import OutputCache
from nodeflow.engine.device import is_out_of_memory
from nodeflow.engine.executor import Executor
from nodeflow.model.graph import Graph
from nodeflow.model.types import DataType


class OutOfMemoryError(RuntimeError):
    """What torch.OutOfMemoryError is to the executor: a RuntimeError of that name."""


class Pool:
    capacity = 100
    used = 0
    attempts: list[str] = []


class Block:
    """Bytes of the simulated device, held until the block is garbage."""

    def __init__(self, size: int, who: str):
        Pool.attempts.append(who)
        if Pool.used + size > Pool.capacity:
            raise OutOfMemoryError(f"simulated device: tried to allocate {size}, {Pool.capacity - Pool.used} free")
        Pool.used += size
        weakref.finalize(self, _release, size)


def _release(size: int) -> None:
    Pool.used -= size


BLOCK = DataType("BLOCK", (90, 90, 90), "a simulated device allocation", Block)


class Allocate(Node):
    type = "Allocate"
    size = Float(10, min=0, max=1000)
    outputs = (Output("block", BLOCK),)

    def run(self, ctx, size):
        return Block(int(size), f"Allocate {int(size)}")


class Keep(Node):
    type = "Keep"
    block = Socket(BLOCK)
    output_node = True
    outputs = ()

    def run(self, ctx, block):
        return None


@pytest.fixture(autouse=True)
def empty_pool():
    gc.collect()
    Pool.used, Pool.attempts = 0, []
    testpack.reset()
    yield
    gc.collect()


@pytest.fixture
def graph() -> Graph:
    registry = testpack.make_registry()
    registry.register(Allocate)
    registry.register(Keep)
    return Graph(registry)


def _allocation(graph: Graph, size: int) -> str:
    node = graph.add_node("Allocate", {"size": size}).id
    graph.connect(node, "block", graph.add_node("Keep", {}).id, "block")
    return node


def test_cached_results_are_freed_and_the_node_retried_once(graph):
    executor = Executor(graph.registry, cache=OutputCache(10**9), device="cpu")
    _allocation(graph, 60)
    assert executor.run(graph).status == "ok"
    gc.collect()
    assert Pool.used == 60  # the first block stays cached on the "device"

    second = Graph(graph.registry)
    node = _allocation(second, 70)  # does not fit beside the cached block
    result = executor.run(second)

    assert result.status == "ok", result.error
    assert Pool.attempts == ["Allocate 60", "Allocate 70", "Allocate 70"]
    assert executor.cache.stats().evictions >= 1
    assert node in result.executed


def test_a_second_failure_names_the_node(graph):
    executor = Executor(graph.registry, device="cpu")
    node = _allocation(graph, 500)  # more than the whole device
    result = executor.run(graph)

    assert result.status == "error"
    assert result.failed_node == node
    assert f"node {node} (Allocate) failed: out of memory on cpu, also after freeing" in result.error
    assert Pool.attempts == ["Allocate 500", "Allocate 500"]  # retried exactly once


def test_values_the_run_still_needs_are_not_freed(graph):
    class Pair(Node):
        type = "Pair"
        a = Socket(BLOCK)
        b = Socket(BLOCK)
        output_node = True
        outputs = ()

        def run(self, ctx, a, b):
            return None

    graph.registry.register(Pair)
    executor = Executor(graph.registry, cache=OutputCache(10**9), device="cpu")
    pair = graph.add_node("Pair", {}).id
    first = graph.add_node("Allocate", {"size": 50}).id
    second = graph.add_node("Allocate", {"size": 60}).id
    graph.connect(first, "block", pair, "a")
    graph.connect(second, "block", pair, "b")
    result = executor.run(graph)  # the first block is pinned for Pair: 50 and 60 never fit together
    assert result.status == "error"
    assert result.failed_node == (second if Pool.attempts[0] == "Allocate 50" else first)
    assert "out of memory" in result.error


def test_a_real_allocation_failure_on_the_cpu_is_retried_and_reported(graph):
    torch = pytest.importorskip("torch")

    class Huge(Node):
        type = "Huge"
        value = Float(1.0)
        outputs = (Output("value", FLOAT),)
        tries = 0

        def run(self, ctx, value):
            Huge.tries += 1
            return float(torch.empty(2**60, dtype=torch.uint8)[0])

    class Take(Node):
        type = "Take"
        value = Socket(FLOAT)
        output_node = True
        outputs = ()

        def run(self, ctx, value):
            return None

    graph.registry.register(Huge)
    graph.registry.register(Take)
    node = graph.add_node("Huge", {}).id
    graph.connect(node, "value", graph.add_node("Take", {}).id, "value")
    result = Executor(graph.registry, device="cpu").run(graph)
    assert result.status == "error" and result.failed_node == node
    assert "out of memory on cpu" in result.error and Huge.tries == 2


@pytest.mark.parametrize("error, expected", [
    (OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
    (RuntimeError("MPS backend out of memory"), True),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: not enough memory"), True),
    (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1152921504606846976 bytes"), True),
    (MemoryError(), True),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False),
    (ValueError("out of memory"), False),
])
def test_out_of_memory_errors_are_told_apart_from_other_failures(error, expected):
    assert is_out_of_memory(error) is expected
