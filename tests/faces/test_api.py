"""The scripting API on real workflow files."""

from __future__ import annotations

import json

import pytest
from tests.support import testpack
from tests.support.testpack import RUNS, Sink

import nodeflow.api
from nodeflow.api import RunFailed
from nodeflow.model.graph import GraphError

WORKFLOW = {
    "format": "nodeflow.workflow",
    "version": 1,
    "nodes": [
        {"id": "1", "type": "Number", "title": "Base", "mode": "normal", "values": {"value": 2}},
        {"id": "2", "type": "Multiply", "title": "Scale", "mode": "normal", "values": {"b": 3}},
        {"id": "3", "type": "Format", "title": "", "mode": "normal", "values": {"template": "n={}"}},
        {"id": "4", "type": "Sink", "title": "Out", "mode": "normal", "values": {}},
        {"id": "5", "type": "Number", "title": "Base", "mode": "normal", "values": {"value": 0}},
    ],
    "links": [
        {"from": {"node": "1", "output": "value"}, "to": {"node": "2", "input": "a"}},
        {"from": {"node": "2", "output": "product"}, "to": {"node": "3", "input": "value"}},
        {"from": {"node": "3", "output": "text"}, "to": {"node": "4", "input": "value"}},
    ],
    "ui": {"nodes": {"1": {"pos": [10, 20]}}, "viewport": {"zoom": 1.5}},
}


@pytest.fixture(autouse=True)
def fresh_counters():
    testpack.reset()


@pytest.fixture
def registry():
    return testpack.make_registry()


@pytest.fixture
def path(tmp_path):
    file = tmp_path / "flow.json"
    file.write_text(json.dumps(WORKFLOW))
    return file


@pytest.fixture
def wf(path, registry):
    return nodeflow.api.open(path, registry=registry, device="cpu")


def test_open_set_and_run(wf, tmp_path):
    wf.set("2.b", 10)
    wf.set("Scale", "b", 5)  # by unique title, field apart
    result = wf.run(outputs=["Out", "2"], output_dir=tmp_path / "out")
    assert result.status == "ok"
    assert result.outputs == {"4": {}, "2": {"product": 10.0}}
    assert Sink.received == ["n=10.0"]
    assert wf.get("2.b") == 5.0 and wf.get("Scale", "b") == 5.0


def test_the_flow_reuses_results_between_runs(wf):
    wf.run()
    assert wf.run().executed == ()
    wf.set("3.template", "value: {}")
    assert set(wf.run().executed) == {"3", "4"}
    assert Sink.received == ["n=6.0", "value: 6.0"]
    assert RUNS["Number"] == 1


def test_unknown_nodes_and_fields_get_clear_errors(wf):
    with pytest.raises(GraphError, match="no node with id or title 'Scael'; did you mean 'Scale'"):
        wf.set("Scael.b", 1)
    with pytest.raises(GraphError, match="more than one node is titled 'Base'"):
        wf.set("Base.value", 1)
    with pytest.raises(GraphError, match=r"node 2 \(Multiply\): 'bb' is not a field of it; did you mean 'b'"):
        wf.set("2.bb", 1)
    with pytest.raises(GraphError, match=r"'a' is a socket"):
        wf.set("2.a", 1)
    with pytest.raises(GraphError, match=r"node 2: Multiply.b: 1000 is above the maximum 100"):
        wf.set("2", "b", 1000)
    with pytest.raises(GraphError, match="expected NODE.NAME"):
        wf.set("2", 1)


def test_a_widget_fed_by_a_link_refuses_a_value(wf):
    wf.connect("5.value", "2.b")
    with pytest.raises(GraphError, match="fed by a link from node 5"):
        wf.set("2.b", 4)


def test_a_failed_run_raises_with_its_result(registry, tmp_path):
    wf = nodeflow.api.new(registry, device="cpu")
    number = wf.add("Number", value=1)
    fail = wf.add("Fail", title="Breaker")
    sink = wf.add("Sink")
    wf.connect(f"{number}.value", "Breaker.value").connect(f"{fail}.value", f"{sink}.value")

    with pytest.raises(RunFailed, match=r"node 2 \(Fail\) failed: this node fails on purpose") as caught:
        wf.run()
    assert caught.value.result.failed_node == fail
    assert wf.run(check=False).status == "error"

    wf.set("Breaker.fail", False)
    assert wf.run().executed == (fail, sink)


def test_load_problems_stop_the_run(registry, tmp_path):
    data = json.loads(json.dumps(WORKFLOW))
    data["links"].append({"from": {"node": "99", "output": "text"}, "to": {"node": "4", "input": "optional_note"}})
    wf = nodeflow.api.from_dict(data, registry, device="cpu")
    with pytest.raises(RunFailed, match="there is no node '99'") as caught:
        wf.run()
    assert caught.value.result.status == "invalid"
    assert sum(RUNS.values()) == 0


def test_save_keeps_values_and_layout(wf, registry, tmp_path):
    wf.set("1.value", 7)
    wf.save(tmp_path / "saved.json")
    again = nodeflow.api.open(tmp_path / "saved.json", registry=registry, device="cpu")
    assert again.get("1.value") == 7.0
    assert again.graph.nodes["1"].pos == (10, 20)
    assert again.ui["viewport"] == {"zoom": 1.5}
    again.run()
    assert Sink.received == ["n=21.0"]
