"""The executor: what runs, what is reused, failures, interruption, events, threads, devices."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from tests.support import testpack
from tests.support.testpack import RUNS, Sink

from nodeflow import FLOAT, STRING, Float, Node, Output, RunSettings, Socket, String, is_compatible
from nodeflow.engine.device import DeviceError, resolve_device
from nodeflow.model.devices import HostMemory
from nodeflow.engine.events import NodeCached, NodeFailed, NodeFinished, NodeStarted, Progress, RunFinished, RunStarted
from nodeflow.engine.executor import Executor, ExecutorBusy
from nodeflow.model.graph import Graph


class Echo(Node):
    """Reports what it was given, including the run context."""

    type = "Echo"
    value = Socket(FLOAT, optional=True)
    label = String("")
    outputs = (Output("text", STRING),)
    contexts: list = []

    def run(self, ctx, value, label):
        Echo.contexts.append(ctx)
        return f"{label}:{value}"


class Explode(Node):
    type = "Explode"
    value = Socket(FLOAT)
    outputs = (Output("value", FLOAT),)

    def run(self, ctx, value):
        return value / 0


class WrongShape(Node):
    type = "WrongShape"
    value = Socket(FLOAT)
    outputs = (Output("a", FLOAT), Output("b", FLOAT))

    def run(self, ctx, value):
        return (value,)  # one value for two outputs


class Big(Node):
    """A large text value, for memory-budget tests."""

    type = "Big"
    size = Float(1000.0, min=1, max=1e7)
    outputs = (Output("text", STRING),)

    def run(self, ctx, size):
        return "x" * int(size)


class Join(Node):
    type = "Join"
    a = Socket(STRING)
    b = Socket(STRING)
    outputs = (Output("text", STRING),)

    def run(self, ctx, a, b):
        return a + b


@pytest.fixture(autouse=True)
def fresh_counters():
    testpack.reset()
    Echo.contexts.clear()
    yield


@pytest.fixture
def graph() -> Graph:
    registry = testpack.make_registry()
    for cls in (Echo, Explode, WrongShape, Big, Join):
        registry.register(cls)
    return Graph(registry)


@pytest.fixture
def executor(graph) -> Executor:
    return Executor(graph.registry, device="cpu")


def chain(graph: Graph, *specs: tuple[str, dict]) -> list[str]:
    """Add nodes, each one's first output linked to the next one's first input that takes it,
    e.g. Number -> Multiply -> Sink."""
    ids: list[str] = []
    for type_name, values in specs:
        node_id = graph.add_node(type_name, values).id
        if ids:
            output = graph.node_class(ids[-1]).outputs[0]
            inputs = graph.node_class(node_id).inputs.values()
            target = next(i for i in inputs if is_compatible(output.data_type, i.data_type))
            graph.connect(ids[-1], output.name, node_id, target.name)
        ids.append(node_id)
    return ids


def run_ok(executor: Executor, graph: Graph, **kwargs):
    result = executor.run(graph, **kwargs)
    assert result.status == "ok", result.error or result.problems
    return result


# ----------------------------------------------------------------------- what runs
def test_only_the_ancestors_of_output_nodes_run(graph, executor):
    number, multiply, sink = chain(graph, ("Number", {"value": 2}), ("Multiply", {"b": 3}), ("Sink", {}))
    dangling = chain(graph, ("Number", {"value": 7}), ("Format", {}))  # feeds no output node

    result = run_ok(executor, graph)

    assert result.executed == (number, multiply, sink)
    assert not set(dangling) & set(result.executed + result.cached)
    assert Sink.received == [6.0]


def test_requested_outputs_limit_the_run_and_return_values(graph, executor):
    number, multiply, sink = chain(graph, ("Number", {"value": 2}), ("Multiply", {"b": 3}), ("Sink", {}))
    other_sink = chain(graph, ("Number", {"value": 9}), ("Sink", {}))[-1]

    result = run_ok(executor, graph, outputs=[sink, multiply])

    assert set(result.executed) == {number, multiply, sink}
    assert other_sink not in result.executed
    assert result.outputs == {sink: {}, multiply: {"product": 6.0}}


def test_unchanged_graph_runs_nothing_the_second_time(graph, executor):
    ids = chain(graph, ("Number", {"value": 2}), ("Multiply", {"b": 3}), ("Format", {}), ("Sink", {}))
    run_ok(executor, graph)
    RUNS.clear()

    again = run_ok(executor, graph)

    assert again.executed == ()
    assert again.cached == tuple(ids)
    assert sum(RUNS.values()) == 0


def test_changing_a_value_reruns_exactly_that_node_and_its_downstream(graph, executor):
    a = graph.add_node("Number", {"value": 1}).id
    b = graph.add_node("Number", {"value": 2}).id
    add = graph.add_node("Add").id
    graph.connect(a, "value", add, "a")
    graph.connect(b, "value", add, "b")
    multiply, sink = chain(graph, ("Multiply", {"b": 10}), ("Sink", {}))
    graph.connect(add, "sum", multiply, "a")
    text, text_sink = chain(graph, ("Format", {"template": "a={}"}), ("Sink", {}))
    graph.connect(a, "value", text, "value")
    run_ok(executor, graph)

    graph.set_value(b, "value", 5)
    result = run_ok(executor, graph)

    assert set(result.executed) == {b, add, multiply, sink}
    assert set(result.cached) == {a, text, text_sink}
    assert Sink.received[-1] == 60.0

    graph.set_value(multiply, "b", 2)
    assert set(run_ok(executor, graph).executed) == {multiply, sink}


def test_signature_ignores_number_spelling_and_value_order(graph, executor):
    number, text, sink = chain(graph, ("Number", {"value": 1.0}), ("Format", {"template": "{}", "case": "upper"}), ("Sink", {}))
    run_ok(executor, graph)
    # The same graph as loaded from a file without checks: an int for a Float, keys in another order.
    graph.add_node("Number", {"value": 1}, node_id="n", check=False)
    graph.add_node("Format", {"case": "upper", "template": "{}"}, node_id="f", check=False)
    graph.add_node("Sink", node_id="s")
    graph.connect("n", "value", "f", "value")
    graph.connect("f", "text", "s", "value")
    result = run_ok(executor, graph, outputs=["s"])
    assert result.executed == () and result.cached == ("n", "f", "s")


def test_identical_subgraphs_are_computed_once_in_one_run(graph, executor):
    first = chain(graph, ("Number", {"value": 3}), ("Multiply", {"b": 2}), ("Format", {}), ("Sink", {}))
    second = chain(graph, ("Number", {"value": 3}), ("Multiply", {"b": 2}), ("Format", {}), ("Sink", {}))

    result = run_ok(executor, graph)

    assert RUNS["Number"] == RUNS["Multiply"] == RUNS["Format"] == 1
    assert set(result.executed) == set(first)
    assert set(result.cached) == set(second)


def test_non_deterministic_nodes_and_their_downstream_always_rerun(graph, executor):
    random_id, multiply, sink = chain(graph, ("Random", {}), ("Multiply", {"b": 2}), ("Sink", {}))
    constant = chain(graph, ("Number", {"value": 1}), ("Sink", {}))
    first = run_ok(executor, graph)
    second = run_ok(executor, graph)

    assert set(first.executed) == {random_id, multiply, sink, *constant}
    assert set(second.executed) == {random_id, multiply, sink}
    assert set(second.cached) == set(constant)
    assert executor.cache.stats().entries == 2  # results that can never be reused are not kept


def test_two_random_nodes_are_not_merged(graph, executor):
    chain(graph, ("Random", {}), ("Sink", {}))
    chain(graph, ("Random", {}), ("Sink", {}))
    run_ok(executor, graph)
    assert RUNS["Random"] == 2


def test_output_nodes_rerun_when_the_output_folder_changes(graph, executor, tmp_path):
    number, sink = chain(graph, ("Number", {"value": 1}), ("Sink", {}))
    run_ok(executor, graph, output_dir=tmp_path / "a")
    assert run_ok(executor, graph, output_dir=tmp_path / "a").cached == (number, sink)

    moved = run_ok(executor, graph, output_dir=tmp_path / "b")
    assert moved.executed == (sink,) and moved.cached == (number,)


# -------------------------------------------------------------------------- inputs
def test_a_link_into_a_widget_wins_over_its_literal(graph, executor):
    five = graph.add_node("Number", {"value": 5}).id
    add = graph.add_node("Add", {"a": 1, "b": 100}).id
    sink = graph.add_node("Sink").id
    graph.connect(five, "value", add, "b")
    graph.connect(add, "sum", sink, "value")
    run_ok(executor, graph)
    assert Sink.received == [6.0]

    graph.set_value(add, "b", 200)  # hidden behind the link: nothing to recompute
    assert run_ok(executor, graph).executed == ()


def test_unconnected_optional_socket_gets_none_and_context_is_filled(graph, executor, tmp_path):
    echo, sink = chain(graph, ("Echo", {"label": "x"}), ("Sink", {}))
    settings = RunSettings(model_folders={"checkpoints": ["/m"]})

    run_ok(executor, graph, output_dir=tmp_path / "out", input_dir=tmp_path / "in", settings=settings)

    assert Sink.received == ["x:None"]
    (ctx,) = Echo.contexts
    assert (ctx.node_id, ctx.device) == (echo, "cpu")
    assert (ctx.output_dir, ctx.input_dir) == (tmp_path / "out", tmp_path / "in")
    assert ctx.settings == settings


def test_bypassed_node_passes_its_first_input_of_the_same_type(graph, executor):
    number, multiply, sink = chain(graph, ("Number", {"value": 2}), ("Multiply", {"b": 10}), ("Sink", {}))
    graph.set_mode(multiply, "bypass")

    result = run_ok(executor, graph)

    assert Sink.received == [2.0]
    assert RUNS["Multiply"] == 0
    assert result.executed == (number, sink)  # a bypassed node is neither run nor cached


def test_bypassed_node_passes_a_widget_literal_and_needs_only_that_input(graph, executor):
    upstream = graph.add_node("Number", {"value": 3}).id
    add = graph.add_node("Add", {"a": 7, "b": 0}).id
    graph.connect(upstream, "value", add, "b")  # the second FLOAT input, so it is not passed on
    sink = graph.add_node("Sink").id
    graph.connect(add, "sum", sink, "value")
    graph.set_mode(add, "bypass")

    result = run_ok(executor, graph)

    assert Sink.received == [7.0]
    assert result.executed == (sink,)


def test_bypass_passes_through_a_chain_of_bypassed_nodes(graph, executor):
    number, first, second, sink = chain(
        graph, ("Number", {"value": 4}), ("Multiply", {"b": 2}), ("Multiply", {"b": 3}), ("Sink", {})
    )
    graph.set_mode(first, "bypass")
    graph.set_mode(second, "bypass")
    result = run_ok(executor, graph, outputs=[sink, second])
    assert Sink.received == [4.0] and result.outputs[second] == {"product": 4.0}

    graph.set_mode(first, "normal")  # un-bypassing runs the node and what it feeds
    assert run_ok(executor, graph).executed == (first, sink)
    assert Sink.received == [4.0, 8.0]


def test_bypassed_output_node_does_not_run(graph, executor):
    chain(graph, ("Number", {"value": 1}), ("Sink", {}))
    kept = chain(graph, ("Number", {"value": 2}), ("Sink", {}))
    graph.set_mode(kept[1], "bypass")
    run_ok(executor, graph)
    assert Sink.received == [1.0]


# ------------------------------------------------------------------------ failures
def test_failing_node_is_named_and_the_rest_of_the_cache_is_kept(graph, executor):
    number, fail, sink = chain(graph, ("Number", {"value": 4}), ("Fail", {"fail": True}), ("Sink", {}))
    events = []

    result = executor.run(graph, on_event=events.append)

    assert result.status == "error" and result.failed_node == fail
    assert f"node {fail} (Fail)" in result.error and "this node fails on purpose" in result.error
    assert NodeFailed(fail, "Fail", "this node fails on purpose") in events
    assert result.executed == (number,) and result.outputs == {}
    assert Sink.received == []

    graph.set_value(fail, "fail", False)
    fixed = run_ok(executor, graph)
    assert fixed.executed == (fail, sink) and fixed.cached == (number,)


def test_unexpected_exception_keeps_its_traceback(graph, executor):
    number, explode, sink = chain(graph, ("Number", {"value": 1}), ("Explode", {}), ("Sink", {}))
    result = executor.run(graph)
    assert result.status == "error"
    assert f"node {explode} (Explode)" in result.error and "ZeroDivisionError" in result.error
    assert "Traceback" in result.traceback and "value / 0" in result.traceback


def test_result_of_the_wrong_shape_is_a_failure_and_is_not_cached(graph, executor):
    chain(graph, ("Number", {"value": 1}), ("WrongShape", {}), ("Sink", {}))
    assert executor.run(graph).status == "error"
    assert executor.cache.stats().entries == 1  # only the Number
    assert executor.run(graph).status == "error"  # and it fails again rather than reuse anything


def test_invalid_graph_is_reported_without_running(graph, executor):
    multiply, sink = chain(graph, ("Multiply", {}), ("Sink", {}))  # Multiply.a is not connected
    events = []

    result = executor.run(graph, on_event=events.append)

    assert result.status == "invalid"
    assert any(p.node_id == multiply and p.field == "a" for p in result.problems)
    assert "not valid" in result.error and sum(RUNS.values()) == 0
    assert [type(e) for e in events] == [RunFinished] and events[0].status == "invalid"


# -------------------------------------------------------------------- interruption
def test_interrupt_from_another_thread_stops_the_running_node(graph, executor):
    number, slow, sink = chain(graph, ("Number", {"value": 1}), ("Slow", {"steps": 500, "delay": 0.01}), ("Sink", {}))
    second_step = threading.Event()

    def listener(event):
        if isinstance(event, Progress) and event.step == 2:
            second_step.set()

    stopper = threading.Thread(target=lambda: second_step.wait(10) and executor.interrupt())
    stopper.start()
    result = executor.run(graph, on_event=listener)
    stopper.join()

    assert result.status == "interrupted"
    assert f"node {slow} (Slow)" in result.error
    assert result.executed == (number,)
    assert executor.cache.stats().entries == 1  # the Number; nothing of the Slow node

    graph.set_value(slow, "steps", 2)
    graph.set_value(slow, "delay", 0.0)
    resumed = run_ok(executor, graph)
    assert resumed.executed == (slow, sink) and resumed.cached == (number,)


def test_interrupt_is_checked_between_nodes(graph, executor):
    number, multiply, sink = chain(graph, ("Number", {"value": 1}), ("Multiply", {}), ("Sink", {}))

    def stop_after_first(event):
        if isinstance(event, NodeFinished):
            executor.interrupt()

    result = executor.run(graph, on_event=stop_after_first)
    assert result.status == "interrupted" and result.executed == (number,)
    assert f"before node {multiply}" in result.error


def test_an_interrupt_between_runs_does_not_stop_the_next_run(graph, executor):
    chain(graph, ("Number", {"value": 1}), ("Sink", {}))
    executor.interrupt()
    run_ok(executor, graph)


# -------------------------------------------------------------------------- memory
def test_run_larger_than_the_budget_completes_and_then_fits(graph):
    executor = Executor(graph.registry, device="cpu", cache_budget_bytes=5_000)
    first = graph.add_node("Big", {"size": 4_000}).id
    second = graph.add_node("Big", {"size": 4_001}).id
    join, sink = chain(graph, ("Join", {}), ("Sink", {}))
    graph.connect(first, "text", join, "a")
    graph.connect(second, "text", join, "b")
    seen_by_join = []

    def listener(event):
        if isinstance(event, NodeStarted) and event.node_id == join:
            seen_by_join.append(executor.cache.stats())

    run_ok(executor, graph, on_event=listener)

    assert [len(s) for s in Sink.received] == [8_001]
    # Both texts the Join reads stay cached (pinned) although together they exceed the budget ...
    (stats,) = seen_by_join
    assert stats.entries == 2 and stats.bytes > 5_000 and stats.evictions == 0
    # ... and the excess goes once the run no longer needs it.
    after = executor.cache.stats()
    assert after.bytes <= 5_000 and after.evictions >= 2


def test_least_recently_used_results_are_evicted_first(graph):
    executor = Executor(graph.registry, device="cpu", cache_budget_bytes=10_000)
    first = chain(graph, ("Big", {"size": 4_000}), ("Sink", {}))
    run_ok(executor, graph)
    graph.set_value(first[0], "size", 4_500)
    run_ok(executor, graph)  # both texts fit (with the tiny Sink entries)
    graph.set_value(first[0], "size", 4_000)
    assert run_ok(executor, graph).executed == ()  # the 4,000 text is now the most recent
    graph.set_value(first[0], "size", 5_000)
    run_ok(executor, graph)  # no room for three: the 4,500 text, least recently used, goes
    graph.set_value(first[0], "size", 4_000)
    assert run_ok(executor, graph).cached == tuple(first)
    graph.set_value(first[0], "size", 4_500)
    assert first[0] in run_ok(executor, graph).executed


# -------------------------------------------------------------------------- events
def test_events_arrive_in_order(graph, executor):
    number, slow, sink = chain(graph, ("Number", {"value": 1}), ("Slow", {"steps": 3, "delay": 0.0}), ("Sink", {}))
    events = []
    run_ok(executor, graph, on_event=events.append)

    assert events[0] == RunStarted((number, slow, sink))
    assert [type(e).__name__ for e in events[1:]] == [
        "NodeStarted", "NodeFinished",
        "NodeStarted", "Progress", "Progress", "Progress", "NodeFinished",
        "NodeStarted", "NodeFinished",
        "RunFinished",
    ]
    assert [(e.node_id, e.step, e.total) for e in events if isinstance(e, Progress)] == [
        (slow, 1, 3), (slow, 2, 3), (slow, 3, 3)
    ]
    finished = events[-1]
    assert finished.status == "ok" and finished.executed == (number, slow, sink)
    assert set(finished.timings) == {number, slow, sink}

    events.clear()
    run_ok(executor, graph, on_event=events.append)
    assert events[1:-1] == [NodeCached(number, "Number"), NodeCached(slow, "Slow"), NodeCached(sink, "Sink")]


def test_a_listener_that_raises_does_not_break_the_run(graph, executor, caplog):
    chain(graph, ("Number", {"value": 1}), ("Slow", {"steps": 2, "delay": 0.0}), ("Sink", {}))

    def broken(event):
        raise RuntimeError("listener bug")

    run_ok(executor, graph, on_event=broken)
    assert Sink.received == [1.0]
    assert "listener bug" in caplog.text


# ------------------------------------------------------------------------- threads
def test_a_second_run_during_a_run_is_refused_and_edits_do_not_leak_in(graph, executor):
    number, slow, sink = chain(graph, ("Number", {"value": 1}), ("Slow", {"steps": 1000, "delay": 0.005}), ("Sink", {}))
    started = threading.Event()
    future = executor.submit(graph, on_event=lambda e: isinstance(e, Progress) and started.set())
    assert started.wait(10)

    with pytest.raises(ExecutorBusy):
        executor.run(graph)
    graph.set_value(number, "value", 99)  # the GUI keeps editing
    graph.remove_node(sink)
    executor.interrupt()

    result = future.result(timeout=10)
    assert result.status == "interrupted"
    assert executor.running is False
    graph.add_node("Sink", node_id=sink)
    graph.connect(slow, "value", sink, "value")
    graph.set_value(slow, "steps", 1)
    run_ok(executor, graph)
    assert Sink.received == [99.0]


# ------------------------------------------------------------------------- devices
def test_device_resolution_without_a_pack_that_drives_gpus():
    assert resolve_device("auto") == "cpu"
    assert resolve_device("CPU") == "cpu" and resolve_device("cpu:0") == "cpu"
    with pytest.raises(DeviceError, match="needs a node pack that drives GPUs"):
        resolve_device("cuda")
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("gpu")
    with pytest.raises(DeviceError, match="the CPU is just 'cpu'"):
        resolve_device("cpu:1")
    with pytest.raises(ValueError):  # the CLI turns ValueError into a usage error
        Executor(testpack.make_registry(), device="cuda:1")


def test_the_packs_device_backend_tells_which_devices_exist():
    class TwoGpus(HostMemory):
        def resolve(self, name):
            return "cuda" if name == "auto" else name

    registry = testpack.make_registry()
    assert Executor(registry, device="auto", devices=TwoGpus()).device == "cuda"
    assert Executor(registry, device="CUDA:1", devices=TwoGpus()).device == "cuda:1"
    with pytest.raises(DeviceError, match="unknown device"):  # the form is checked before the backend is asked
        Executor(registry, device="tpu", devices=TwoGpus())


def test_executor_runs_on_the_chosen_device(graph, executor):
    chain(graph, ("Echo", {}), ("Sink", {}))
    run_ok(executor, graph, device="cpu")
    assert Echo.contexts[0].device == "cpu"
    assert Path(Echo.contexts[0].output_dir) == Path("output")


def test_the_engine_does_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys, nodeflow.api, nodeflow.engine.executor, nodeflow.engine.cache, nodeflow.engine.sizing, nodeflow.engine.device; "
        "sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
