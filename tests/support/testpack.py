"""A test-only node pack: small arithmetic, text, slow, failing and random nodes.

Each node counts its runs in ``RUNS`` so tests can say exactly which nodes executed.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

from nodeflow import ANY, FLOAT, INT, STRING, Bool, Choice, Float, Int, Node, NodeError, Output, Seed, Socket, String
from nodeflow.model.registry import NodeRegistry

RUNS: Counter[str] = Counter()  # node type -> number of runs
_lock = threading.Lock()


def _count(node_type: str) -> None:
    with _lock:
        RUNS[node_type] += 1


class Number(Node):
    type = "Number"
    category = "test"
    description = "A constant number."
    value = Float(0.0, min=-1e6, max=1e6, tooltip="the number")
    outputs = (Output("value", FLOAT),)

    def run(self, ctx, value):
        _count(self.type)
        return value


class Integer(Node):
    type = "Integer"
    category = "test"
    value = Int(0, min=-1000, max=1000)
    outputs = (Output("value", INT),)

    def run(self, ctx, value):
        _count(self.type)
        return value


class Add(Node):
    type = "Add"
    category = "test"
    description = "Sum of two numbers."
    a = Float(0.0)
    b = Float(0.0)
    outputs = (Output("sum", FLOAT),)

    def run(self, ctx, a, b):
        _count(self.type)
        return a + b


class Multiply(Node):
    type = "Multiply"
    category = "test"
    a = Socket(FLOAT)
    b = Float(1.0, min=-100, max=100)
    outputs = (Output("product", FLOAT),)

    def run(self, ctx, a, b):
        _count(self.type)
        return a * b


class Format(Node):
    type = "Format"
    category = "test"
    template = String("{}", multiline=True)
    value = Socket(FLOAT)
    case = Choice(["as is", "upper"], default="as is")
    outputs = (Output("text", STRING),)

    def run(self, ctx, template, value, case):
        _count(self.type)
        text = template.format(value)
        return text.upper() if case == "upper" else text


class Slow(Node):
    type = "Slow"
    category = "test"
    description = "Passes a number through in steps, reporting progress."
    value = Socket(FLOAT)
    steps = Int(10, min=1, max=1000)
    delay = Float(0.01, min=0.0, max=10.0)
    outputs = (Output("value", FLOAT),)

    def run(self, ctx, value, steps, delay):
        _count(self.type)
        for i in range(steps):
            time.sleep(delay)
            ctx.progress(i + 1, steps)
        return value


class Fail(Node):
    type = "Fail"
    category = "test"
    value = Socket(FLOAT)
    fail = Bool(True)
    outputs = (Output("value", FLOAT),)

    def run(self, ctx, value, fail):
        _count(self.type)
        if fail:
            raise NodeError("this node fails on purpose")
        return value


class Random(Node):
    type = "Random"
    category = "test"
    deterministic = False
    seed = Seed(0)
    outputs = (Output("value", FLOAT),)

    def run(self, ctx, seed):
        _count(self.type)
        return random.random()


class Sink(Node):
    type = "Sink"
    category = "test"
    description = "An output node that records what it receives."
    output_node = True
    value = Socket(ANY)
    optional_note = Socket(STRING, optional=True)
    outputs = ()
    received: list = []

    def run(self, ctx, value, optional_note):
        _count(self.type)
        Sink.received.append(value)
        return None


NODE_TYPES = [Number, Integer, Add, Multiply, Format, Slow, Fail, Random, Sink]


def make_registry() -> NodeRegistry:
    registry = NodeRegistry()
    for cls in NODE_TYPES:
        registry.register(cls, "tests.testpack")
    return registry


def reset() -> None:
    RUNS.clear()
    Sink.received.clear()
