"""Workflow files: round trips, unknown nodes, malformed files, migrations, atomic saves, schema."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodeflow import FLOAT, Float, Node, Output, Socket
from nodeflow.files import workflow as wf_module
from nodeflow.model.graph import Graph
from nodeflow.files.migrations import migrate
from nodeflow.model.registry import default_registry
from nodeflow.files.schema import registry_schema, schema_text, workflow_schema
from nodeflow.model.validation import validate
from nodeflow.files.workflow import WORKFLOW_FORMAT, WORKFLOW_VERSION, WorkflowError, save_workflow, workflow_to_dict, workflow_to_json
from nodeflow.files.open import load_workflow, workflow_from_dict, workflow_from_json
from tests.support import ROOT
from tests.support.testpack import make_registry



@pytest.fixture
def registry():
    return make_registry()


def sample_graph(registry) -> Graph:
    """Number -> Multiply -> Format -> Sink, plus a bypassed Slow and an Integer feeding a widget."""
    graph = Graph(registry)
    graph.add_node("Number", {"value": 2.5}, node_id="1", title="base", pos=(10, 20.5))
    graph.add_node("Multiply", {"b": 4.0}, node_id="2", pos=(300, 20), size=(220, 90))
    graph.add_node("Slow", {"steps": 3}, node_id="3", mode="bypass", pos=(600, 20))
    graph.add_node("Format", {"template": "x = {}", "case": "upper"}, node_id="10")
    graph.add_node("Sink", node_id="11", pos=(900, 40))
    graph.add_node("Integer", {"value": 7}, node_id="12")
    graph.connect("1", "value", "2", "a")
    graph.connect("2", "product", "3", "value")
    graph.connect("3", "value", "10", "value")
    graph.connect("10", "text", "11", "value")
    graph.connect("12", "value", "2", "b")  # a widget fed by a link
    return graph


def graph_state(graph: Graph):
    return {nid: node for nid, node in graph.nodes.items()}, set(graph.links.values())


# ----------------------------------------------------------------------------- round trip
def test_round_trip_is_exact(registry, tmp_path):
    graph = sample_graph(registry)
    ui = {"viewport": {"x": -40, "y": 12.5, "zoom": 0.8}, "groups": [{"title": "prompt", "nodes": ["1", "2"]}]}
    meta = {"title": "demo", "description": "multiplies"}
    path = tmp_path / "flow.json"
    save_workflow(path, graph, ui, meta)

    loaded = load_workflow(path, registry)
    assert graph_state(loaded.graph) == graph_state(graph)
    assert loaded.ui == ui and loaded.meta == meta and loaded.problems == []

    again = tmp_path / "again.json"
    loaded.save(again)
    assert again.read_bytes() == path.read_bytes()
    assert graph_state(load_workflow(again, registry).graph) == graph_state(graph)


def test_saved_file_is_stable_regardless_of_build_order(registry):
    forward = sample_graph(registry)
    backward = Graph(registry)
    for node_id in reversed(list(forward.nodes)):
        node = forward.nodes[node_id]
        backward.add_node(node.type, node.values, node.id, node.title, node.mode, node.pos, node.size)
    for link in reversed(list(forward.links.values())):
        backward.connect(link.source, link.output, link.target, link.input)
    text = workflow_to_json(forward)
    assert workflow_to_json(backward) == text
    ids = [node["id"] for node in json.loads(text)["nodes"]]
    assert ids == ["1", "2", "3", "10", "11", "12"]  # numeric order, not text order


def test_values_are_stored_by_name_with_defaults_and_the_ui_block_is_optional(registry):
    graph = Graph(registry)
    graph.add_node("Slow", {"steps": 5}, node_id="1")
    document = workflow_to_dict(graph)
    assert document["nodes"][0]["values"] == {"steps": 5, "delay": 0.01}
    assert "ui" not in document  # nothing placed: a headless graph has no editor state

    loaded = workflow_from_dict({"format": WORKFLOW_FORMAT, "version": 1, "nodes": [
        {"id": "1", "type": "Slow", "values": {"delay": 0.5}}]}, registry)
    node = loaded.graph.nodes["1"]
    assert node.values == {"steps": 10, "delay": 0.5} and node.mode == "normal" and node.pos == (0, 0)


def test_ui_extras_per_node_are_kept_and_dropped_with_their_node(registry):
    graph = sample_graph(registry)
    document = workflow_to_dict(graph, {"nodes": {"1": {"collapsed": True}, "2": {"color": "#f00"}}})
    loaded = workflow_from_dict(document, registry)
    assert loaded.ui == {"nodes": {"1": {"collapsed": True}, "2": {"color": "#f00"}}}
    loaded.graph.remove_node("2")
    assert workflow_to_dict(loaded.graph, loaded.ui)["ui"]["nodes"]["1"] == {"pos": [10, 20.5], "collapsed": True}
    assert "2" not in workflow_to_dict(loaded.graph, loaded.ui)["ui"]["nodes"]


def test_load_does_not_modify_the_given_dict(registry):
    document = workflow_to_dict(sample_graph(registry))
    snapshot = json.dumps(document)
    loaded = workflow_from_dict(document, registry)
    loaded.graph.set_value("1", "value", 9.0)
    assert json.dumps(document) == snapshot


@settings(max_examples=60, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=12,
    )
)
def test_any_json_value_on_an_unknown_node_survives_a_round_trip(value):
    registry = make_registry()
    graph = Graph(registry)
    graph.add_node("FromAPlugin", {"anything": value}, node_id="1", check=False)
    text = workflow_to_json(graph)
    assert json.loads(text) == workflow_to_dict(graph)
    assert workflow_from_json(text, registry).graph.nodes["1"].values == {"anything": value}


NODE_TYPES = ["Number", "Integer", "Add", "Multiply", "Format", "Slow", "Sink", "NotInstalled"]
INPUTS = ["a", "b", "value", "template", "steps", "optional_note", "elsewhere"]
OUTPUTS = ["value", "sum", "product", "text", "nothing"]


@st.composite
def random_graphs(draw):
    """Anything a graph loaded with check=False can hold: any types, links, modes, titles."""
    graph = Graph(make_registry())
    ids = draw(st.lists(st.text(min_size=1, max_size=4), min_size=1, max_size=8, unique=True))
    coordinate = st.integers(-5000, 5000) | st.floats(-5000, 5000, allow_nan=False)
    for node_id in ids:
        graph.add_node(
            draw(st.sampled_from(NODE_TYPES)),
            draw(st.dictionaries(st.sampled_from(INPUTS), st.integers(-10, 10) | st.text(max_size=5), max_size=2)),
            node_id,
            title=draw(st.text(max_size=8)),
            mode=draw(st.sampled_from(["normal", "bypass", "muted"])),
            pos=(draw(coordinate), draw(coordinate)),
            size=draw(st.none() | st.tuples(coordinate, coordinate)),
            check=False,
        )
    for _ in range(draw(st.integers(0, 10))):
        source, target = draw(st.sampled_from(ids)), draw(st.sampled_from(ids))
        graph.connect(source, draw(st.sampled_from(OUTPUTS)), target, draw(st.sampled_from(INPUTS)), check=False)
    return graph


@settings(max_examples=80, deadline=None)
@given(random_graphs(), st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3))
def test_any_graph_survives_save_and_load_exactly(tmp_path_factory, graph, meta):
    path = tmp_path_factory.mktemp("round") / "flow.json"
    save_workflow(path, graph, {"viewport": {"zoom": 1.5}}, meta)
    loaded = load_workflow(path, graph.registry)
    assert graph_state(loaded.graph) == graph_state(graph)
    assert (loaded.ui, loaded.meta, loaded.problems) == ({"viewport": {"zoom": 1.5}}, meta, [])
    before = path.read_bytes()
    loaded.save(path)
    assert path.read_bytes() == before


# ------------------------------------------------------------------------ unknown node types
UNKNOWN_NODE = {
    "id": "7",
    "type": "FancyUpscaler",
    "title": "my upscaler",
    "mode": "bypass",
    "version": 3,
    "values": {"scale": 4, "model": "x4.safetensors", "tiles": [64, 64]},
}


def test_unknown_node_types_are_kept_and_written_back_unchanged(registry, tmp_path):
    document = {
        "format": WORKFLOW_FORMAT,
        "version": 1,
        "nodes": [{"id": "1", "type": "Number", "title": "", "mode": "normal", "version": 1, "values": {"value": 1.0}},
                  UNKNOWN_NODE],
        "links": [{"from": {"node": "1", "output": "value"}, "to": {"node": "7", "input": "image"}}],
        "ui": {"nodes": {"7": {"pos": [120, 80], "size": [300, 200]}}},
    }
    path = tmp_path / "plugin.json"
    path.write_text(json.dumps(document))
    loaded = load_workflow(path, registry)
    node = loaded.graph.nodes["7"]
    assert (node.type, node.title, node.mode, node.pos, node.size) == ("FancyUpscaler", "my upscaler", "bypass",
                                                                      (120, 80), (300, 200))
    assert loaded.graph.link_into("7", "image") is not None

    resaved = workflow_to_dict(loaded.graph, loaded.ui)
    assert resaved == document
    codes = {(p.code, p.node_id) for p in validate(loaded.graph)}
    assert ("unknown_node_type", "7") in codes


# -------------------------------------------------------------------------- malformed files
def doc(**changes):
    base = {"format": WORKFLOW_FORMAT, "version": 1, "nodes": [
        {"id": "1", "type": "Number", "values": {"value": 1.0}},
        {"id": "2", "type": "Multiply", "values": {}},
    ], "links": [{"from": {"node": "1", "output": "value"}, "to": {"node": "2", "input": "a"}}]}
    base.update(changes)
    return json.dumps(base)


def node(**fields):
    return {"id": "1", "type": "Number", "values": {}, **fields}


MALFORMED = {
    "invalid json": ('{\n  "format": "nodeflow.workflow",\n  "version": 1\n  "nodes": []\n}', "line 4, column 3"),
    "top level list": ("[1, 2]", "top level must be a JSON object, not a list"),
    "missing format": ('{"version": 1, "nodes": []}', "'format' key is missing"),
    "other format": ('{"format": "krita", "version": 1}', "'format' is 'krita', expected 'nodeflow.workflow'"),
    "comfyui": ('{"3": {"class_type": "KSampler", "inputs": {}}}', "looks like a ComfyUI workflow"),
    "missing version": ('{"format": "nodeflow.workflow"}', "'version' key is missing"),
    "version text": ('{"format": "nodeflow.workflow", "version": "1"}', "'version' must be a whole number"),
    "newer version": (doc(version=WORKFLOW_VERSION + 1), "saved by a newer nodeflow (format version 2"),
    "unknown top key": (doc(extra=1), "the top level: unknown key 'extra'"),
    "nodes object": (doc(nodes={"1": {}}), "the top level: 'nodes' must be a list, not an object"),
    "node not object": (doc(nodes=[node(), "Add"]), "nodes[1] must be an object, not a string"),
    "id not string": (doc(nodes=[node(id=3)]), "nodes[0]: 'id' must be a non-empty string, not 3"),
    "type missing": (doc(nodes=[{"id": "5"}]), "nodes[0] (id '5'): 'type' must be a non-empty string, not null"),
    "values list": (doc(nodes=[node(values=[1])]), "nodes[0] (id '1'): 'values' must be an object, not a list"),
    "title number": (doc(nodes=[node(title=5)]), "nodes[0] (id '1'): 'title' must be a string, not 5"),
    "node version": (doc(nodes=[node(version=0)]), "nodes[0] (id '1'): 'version' must be a whole number of at least 1"),
    "unknown node key": (doc(nodes=[node(vals={})]), "nodes[0] (id '1'): unknown key 'vals'"),
    "duplicate id": (doc(nodes=[node(), node(type="Add")], links=[]), "duplicate node id '1' (nodes[0] and nodes[1])"),
    "link list": (doc(links=[["1", "value", "2", "a"]]), "links[0] must be an object with 'from' and 'to', not a list"),
    "link end": (doc(links=[{"from": {"node": "1", "output": "value"}, "to": {"node": "2"}}]),
                 "links[0]: 'to' must be an object"),
    "two links one input": (doc(links=[{"from": {"node": "1", "output": "value"},
                                         "to": {"node": "2", "input": "a"}}] * 2),
                            "links[1]: input 'a' of node '2' already has a link (links[0])"),
    "ui pos": (doc(ui={"nodes": {"1": {"pos": [1]}}}), "ui.nodes['1'].pos must be two numbers [x, y]"),
    "ui not object": (doc(ui=[]), "the top level: 'ui' must be an object, not a list"),
    "duplicate key": ('{"format": "nodeflow.workflow", "version": 1, "nodes": [{"id": "4", "type": "Number", '
                      '"values": {}, "values": {"value": 2}}]}', "duplicate key 'values' in a JSON object (in the "
                      "object with id '4')"),
    "nan": (doc(nodes=[node(values={"value": float("nan")})]), "NaN is not valid JSON"),
    "deep json": ('{"format": "nodeflow.workflow", "version": 1, "meta": ' + "[" * 5000 + "]" * 5000 + "}",
                  "nested too deeply"),
    "deep values": (doc(nodes=[node(values={"x": json.loads("[" * 80 + "]" * 80)})]),
                    "nested more than 64 levels deep (at nodes[0].values.x[0][0]"),
    "long string": (doc(nodes=[node(title="x" * (wf_module.MAX_STRING_LENGTH + 1))]),
                    "the text at nodes[0].title is 1000001 characters long; the limit is 1000000"),
    "v0 nodes list": ('{"format": "nodeflow.workflow", "version": 0, "nodes": []}',
                      "cannot upgrade this version 0 workflow: 'nodes' must be an object keyed by node id"),
}


@pytest.mark.parametrize("text, expected", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_files_get_an_error_that_says_where(registry, tmp_path, text, expected):
    path = tmp_path / "bad.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(WorkflowError) as caught:
        load_workflow(path, registry)
    assert expected in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_files_that_are_not_text_or_too_large_are_refused(registry, tmp_path, monkeypatch):
    binary = tmp_path / "image.json"
    binary.write_bytes(b"GIF89a\xff\xfe")
    with pytest.raises(WorkflowError, match="not UTF-8 text"):
        load_workflow(binary, registry)

    monkeypatch.setattr(wf_module, "MAX_FILE_BYTES", 100)
    big = tmp_path / "big.json"
    big.write_text(doc())
    with pytest.raises(WorkflowError, match="larger than the limit"):
        load_workflow(big, registry)


def test_a_folder_is_not_a_workflow(registry, tmp_path):
    with pytest.raises(WorkflowError, match="cannot read the file: Is a directory"):
        load_workflow(tmp_path, registry)
    with pytest.raises(FileNotFoundError):
        load_workflow(tmp_path / "missing.json", registry)


def test_node_and_link_counts_are_limited(registry, monkeypatch):
    monkeypatch.setattr(wf_module, "MAX_NODES", 1)
    with pytest.raises(WorkflowError, match="the workflow has 2 nodes; the limit is 1"):
        workflow_from_json(doc(), registry)
    monkeypatch.setattr(wf_module, "MAX_NODES", 10)
    monkeypatch.setattr(wf_module, "MAX_LINKS", 0)
    with pytest.raises(WorkflowError, match="the workflow has 1 links; the limit is 0"):
        workflow_from_json(doc(), registry)


def test_a_byte_order_mark_is_accepted(registry, tmp_path):
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + doc().encode())
    assert set(load_workflow(path, registry).graph.nodes) == {"1", "2"}


def test_links_to_missing_nodes_become_problems_not_crashes(registry):
    text = doc(links=[
        {"from": {"node": "1", "output": "value"}, "to": {"node": "2", "input": "a"}},
        {"from": {"node": "99", "output": "value"}, "to": {"node": "2", "input": "b"}},
        {"from": {"node": "1", "output": "value"}, "to": {"node": "42", "input": "x"}},
        {"from": {"node": "98", "output": "value"}, "to": {"node": "97", "input": "x"}},
    ])
    loaded = workflow_from_json(text, registry)
    assert list(loaded.graph.links.values())[0].source == "1"
    assert len(loaded.graph.links) == 1
    dangling = [(p.code, p.node_id, p.node_type, p.field) for p in loaded.problems]
    assert dangling == [
        ("dangling_link", "2", "Multiply", "b"),
        ("dangling_link", "1", "Number", None),
        ("dangling_link", None, None, None),
    ]
    assert "there is no node '99'" in loaded.problems[0].message


def test_a_cycle_in_a_file_loads_so_it_can_be_reported(registry):
    text = doc(nodes=[node(id="1", type="Add"), node(id="2", type="Add")], links=[
        {"from": {"node": "1", "output": "sum"}, "to": {"node": "2", "input": "a"}},
        {"from": {"node": "2", "output": "sum"}, "to": {"node": "1", "input": "a"}},
    ])
    loaded = workflow_from_json(text, registry)
    assert len(loaded.graph.links) == 2
    assert "cycle" in {p.code for p in validate(loaded.graph)}


# ------------------------------------------------------------------------------ migrations
V0_DOCUMENT = {
    "format": "nodeflow.workflow",
    "version": 0,
    "nodes": {
        "1": {"type": "Number", "inputs": {"value": 3}, "pos": [0, 10]},
        "2": {"type": "Multiply", "inputs": {"b": 2}, "title": "double", "bypass": True, "pos": [200, 10],
              "size": [180, 60]},
        "3": {"type": "Sink"},
    },
    "links": [["1", "value", "2", "a"], ["2", "product", "3", "value"]],
    "viewport": {"zoom": 2},
}

V1_DOCUMENT = {
    "format": "nodeflow.workflow",
    "version": 1,
    "nodes": [
        {"id": "1", "type": "Number", "title": "", "mode": "normal", "version": 1, "values": {"value": 3}},
        {"id": "2", "type": "Multiply", "title": "double", "mode": "bypass", "version": 1, "values": {"b": 2}},
        {"id": "3", "type": "Sink", "title": "", "mode": "normal", "version": 1, "values": {}},
    ],
    "links": [
        {"from": {"node": "1", "output": "value"}, "to": {"node": "2", "input": "a"}},
        {"from": {"node": "2", "output": "product"}, "to": {"node": "3", "input": "value"}},
    ],
    "ui": {"nodes": {"1": {"pos": [0, 10]}, "2": {"pos": [200, 10], "size": [180, 60]}}, "viewport": {"zoom": 2}},
}


def test_version_0_migrates_to_version_1_without_touching_its_input():
    before = json.dumps(V0_DOCUMENT)
    assert migrate(V0_DOCUMENT, 1) == V1_DOCUMENT
    assert json.dumps(V0_DOCUMENT) == before
    assert migrate(V1_DOCUMENT, 1) is V1_DOCUMENT


def test_a_version_0_file_loads_and_saves_as_the_current_version(registry, tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps(V0_DOCUMENT))
    loaded = load_workflow(path, registry)
    assert loaded.graph.nodes["2"].mode == "bypass" and loaded.graph.nodes["2"].size == (180, 60)
    assert loaded.ui == {"viewport": {"zoom": 2}}
    save_workflow(path, loaded.graph, loaded.ui)
    saved = json.loads(path.read_text())
    assert saved["version"] == WORKFLOW_VERSION
    assert saved["nodes"][0]["values"] == {"value": 3}
    assert saved["links"] == V1_DOCUMENT["links"]


def test_a_malformed_version_0_file_says_where(registry):
    bad = {**V0_DOCUMENT, "links": [["1", "value", "2"]]}
    with pytest.raises(WorkflowError, match=r"version 0 workflow: links\[0\] must be a list \[source, output"):
        workflow_from_dict(bad, registry)


class Blur(Node):
    """Version 2 renamed "radius" (pixels) to "sigma" (radius / 2)."""

    type = "Blur"
    version = 2
    image = Float(0.0)
    sigma = Float(1.0, min=0.0, max=50.0)
    outputs = (Output("image", FLOAT),)

    @classmethod
    def migrate_values(cls, values, from_version):
        if from_version < 2 and "radius" in values:
            values["sigma"] = values.pop("radius") / 2
        return values

    def run(self, ctx, image, sigma):
        return image


class BrokenMigration(Blur):
    type = "BrokenBlur"

    @classmethod
    def migrate_values(cls, values, from_version):
        raise KeyError("radius")


def blur_document(node_type: str, version: int | None, values: dict) -> dict:
    entry = {"id": "1", "type": node_type, "values": values}
    if version is not None:
        entry["version"] = version
    return {"format": WORKFLOW_FORMAT, "version": 1, "nodes": [entry]}


@pytest.fixture
def blur_registry(registry):
    registry.register(Blur)
    registry.register(BrokenMigration)
    return registry


def test_a_node_type_upgrades_values_saved_by_its_older_version(blur_registry):
    loaded = workflow_from_dict(blur_document("Blur", 1, {"image": 0.5, "radius": 6.0}), blur_registry)
    assert loaded.graph.nodes["1"].values == {"image": 0.5, "sigma": 3.0}
    assert loaded.problems == [] and validate(loaded.graph, outputs=["1"])[-1].code == "no_output_node"
    saved = workflow_to_dict(loaded.graph)["nodes"][0]
    assert saved["version"] == 2 and saved["values"] == {"image": 0.5, "sigma": 3.0}


def test_a_node_without_a_version_follows_the_installed_class(blur_registry):
    loaded = workflow_from_dict(blur_document("Blur", None, {"sigma": 4.0}), blur_registry)
    assert loaded.graph.nodes["1"].values["sigma"] == 4.0 and loaded.problems == []


def test_a_node_saved_by_a_newer_node_pack_is_kept_and_reported(blur_registry):
    loaded = workflow_from_dict(blur_document("Blur", 5, {"sigma": 2.0, "edge": "wrap"}), blur_registry)
    [problem] = loaded.problems
    assert (problem.code, problem.node_id, problem.node_type) == ("newer_node_version", "1", "Blur")
    assert "version 5 of Blur, but version 2 is installed" in problem.message
    assert workflow_to_dict(loaded.graph)["nodes"][0]["version"] == 5


def test_a_failing_node_migration_keeps_the_saved_values_and_reports_it(blur_registry):
    loaded = workflow_from_dict(blur_document("BrokenBlur", 1, {"radius": 6.0}), blur_registry)
    [problem] = loaded.problems
    assert (problem.code, problem.node_id) == ("migration_failed", "1")
    saved = workflow_to_dict(loaded.graph)["nodes"][0]
    assert saved["version"] == 1 and saved["values"]["radius"] == 6.0


class Sharpen(Node):
    """Version 2 renamed its input "src" to "image", its widget "amt" to "amount" and its
    output "out" to "image"."""

    type = "Sharpen"
    version = 2
    image = Socket(FLOAT)
    amount = Float(1.0)
    outputs = (Output("image", FLOAT),)

    @classmethod
    def renamed_ports(cls, from_version):
        return {"src": "image", "amt": "amount", "out": "image"} if from_version < 2 else {}

    def run(self, ctx, image, amount):
        return image * amount


def test_links_and_values_follow_renamed_ports_of_an_older_node_version(registry):
    registry.register(Sharpen)
    document = {"format": WORKFLOW_FORMAT, "version": 1, "nodes": [
        {"id": "1", "type": "Number", "values": {"value": 2.0}},
        {"id": "2", "type": "Sharpen", "version": 1, "values": {"amt": 3.0}},
        {"id": "3", "type": "Sink"},
    ], "links": [
        {"from": {"node": "1", "output": "value"}, "to": {"node": "2", "input": "src"}},
        {"from": {"node": "2", "output": "out"}, "to": {"node": "3", "input": "value"}},
    ]}
    loaded = workflow_from_dict(document, registry)
    assert loaded.problems == [] and validate(loaded.graph) == []
    assert loaded.graph.nodes["2"].values == {"amount": 3.0}
    assert loaded.graph.link_into("2", "image").source == "1"
    assert loaded.graph.link_into("3", "value").output == "image"


# ----------------------------------------------------------------------------- atomic save
def test_saving_creates_a_new_file_and_keeps_permissions(registry, tmp_path):
    path = tmp_path / "new.json"
    save_workflow(path, sample_graph(registry))
    assert load_workflow(path, registry).graph.nodes.keys() == sample_graph(registry).nodes.keys()
    os.chmod(path, 0o640)
    save_workflow(path, Graph(registry))
    assert (path.stat().st_mode & 0o777) == 0o640
    assert list(tmp_path.iterdir()) == [path]


def test_saving_through_a_symlink_updates_the_linked_file(registry, tmp_path):
    real = tmp_path / "real.json"
    save_workflow(real, Graph(registry))
    link = tmp_path / "link.json"
    link.symlink_to(real)
    save_workflow(link, sample_graph(registry))
    assert link.is_symlink() and "Multiply" in real.read_text()


@pytest.fixture
def previous_file(registry, tmp_path):
    path = tmp_path / "flow.json"
    save_workflow(path, sample_graph(registry))
    return path, path.read_bytes()


def test_a_failed_write_leaves_the_previous_file_and_no_temp_file(registry, previous_file, monkeypatch):
    path, before = previous_file

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("nodeflow.files.atomic.os.fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_workflow(path, Graph(registry))
    assert path.read_bytes() == before
    assert list(path.parent.iterdir()) == [path]


def test_a_value_that_cannot_be_saved_names_the_field_and_leaves_the_file(registry, previous_file):
    path, before = previous_file
    graph = sample_graph(registry)
    graph.nodes["2"].values["b"] = float("inf")
    with pytest.raises(WorkflowError, match='cannot save node 2 \\(Multiply\\) field "b": Out of range float'):
        save_workflow(path, graph)
    assert path.read_bytes() == before
    assert list(path.parent.iterdir()) == [path]


CRASHING_SAVE = """
import os, sys
sys.path.insert(0, {tests!r})
from tests.support.testpack import make_registry
from nodeflow.model.graph import Graph
from nodeflow.files.workflow import save_workflow

graph = Graph(make_registry())
for i in range(2000):
    graph.add_node("Number", {{"value": float(i)}}, title="a fairly long title to make the file big " * 3)
real_write = os.write

def half_then_die(fd, data):
    real_write(fd, bytes(data[: len(data) // 2]))
    os._exit(137)  # the process dies mid-write, like a kill -9 or a power cut

def die(*args):
    os._exit(137)

if {where!r} == "write":
    os.write = half_then_die
else:
    os.replace = die
save_workflow({path!r}, graph)
"""


@pytest.mark.parametrize("where", ["write", "replace"])
def test_a_crash_mid_save_never_destroys_the_previous_file(registry, previous_file, where):
    path, before = previous_file
    script = CRASHING_SAVE.format(tests=str(ROOT), path=str(path), where=where)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 137, result.stderr
    assert path.read_bytes() == before
    leftovers = [p.name for p in path.parent.iterdir() if p != path]
    assert len(leftovers) == 1 and leftovers[0].startswith(".flow.json.") and leftovers[0].endswith(".tmp")
    assert load_workflow(path, registry).graph.nodes.keys() == sample_graph(registry).nodes.keys()


# ---------------------------------------------------------------------------------- schema
def test_the_shipped_schema_is_the_generated_one():
    shipped = ROOT / "docs" / "workflow.schema.json"
    regenerate = "run: python -m nodeflow.files.schema > docs/workflow.schema.json"
    assert shipped.read_text(encoding="utf-8") == schema_text(), regenerate
    jsonschema.Draft202012Validator.check_schema(workflow_schema())


def test_saved_and_shipped_workflows_match_the_schema(registry):
    validator = jsonschema.Draft202012Validator(json.loads((ROOT / "docs" / "workflow.schema.json").read_text()))
    documents = [workflow_to_dict(sample_graph(registry), {"viewport": {"zoom": 1}}, {"title": "t"}), V1_DOCUMENT]
    documents += [json.loads(p.read_text(encoding="utf-8")) for p in sorted((ROOT / "workflows").glob("*.json"))]
    for document in documents:
        validator.validate(document)
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({**V1_DOCUMENT, "nodes": [{"id": 1, "type": "Number"}]})


def test_the_registry_schema_checks_each_node_types_values(registry):
    schema = registry_schema(registry)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    good = workflow_to_dict(sample_graph(registry))
    validator.validate(good)

    def with_node(**entry):
        return {**good, "nodes": [{"id": "1", **entry}]}

    assert not validator.is_valid(with_node(type="Slow", values={"steps": 0}))
    assert not validator.is_valid(with_node(type="Slow", values={"stepz": 3}))
    assert not validator.is_valid(with_node(type="Format", values={"case": "lower"}))
    assert not validator.is_valid(with_node(type="NotInstalled", values={}))
    assert validator.is_valid(with_node(type="Format", values={"case": "upper"}))


def test_the_example_in_the_format_document_is_a_valid_saved_file_verbatim():
    text = (ROOT / "docs" / "workflow-format.md").read_text(encoding="utf-8")
    example = text.split("```json\n", 1)[1].split("```", 1)[0]
    jsonschema.validate(json.loads(example), workflow_schema())
    loaded = workflow_from_json(example, default_registry())
    assert loaded.problems == [] and validate(loaded.graph) == []
    assert workflow_to_json(loaded.graph, loaded.ui, loaded.meta) == example


def test_the_schema_module_prints_the_shipped_file():
    result = subprocess.run([sys.executable, "-m", "nodeflow.files.schema"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout == (ROOT / "docs" / "workflow.schema.json").read_text()
