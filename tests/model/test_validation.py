"""The validator: every problem at once, each naming node, type and field."""

from __future__ import annotations

import json

import pytest

from nodeflow.model.fields import Float, Output, Socket
from nodeflow.model.graph import Graph
from nodeflow import Node
from nodeflow.model.validation import Problem, ValidationError, check, validate
from nodeflow.files.open import load_workflow, workflow_from_json
from tests.support.testpack import make_registry
from nodeflow import FLOAT


@pytest.fixture
def registry():
    return make_registry()


@pytest.fixture
def graph(registry):
    return Graph(registry)


def where(problems):
    """(code, node id, node type, field) of each problem, in order."""
    return [(p.code, p.node_id, p.node_type, p.field) for p in problems]


def chain(graph: Graph, prefix: str = "") -> str:
    """Number -> Multiply -> Sink, a valid runnable chain; returns the Sink's id."""
    graph.add_node("Number", {"value": 2.0}, node_id=f"{prefix}n")
    graph.add_node("Multiply", {"b": 3.0}, node_id=f"{prefix}m")
    graph.add_node("Sink", node_id=f"{prefix}s")
    graph.connect(f"{prefix}n", "value", f"{prefix}m", "a")
    graph.connect(f"{prefix}m", "product", f"{prefix}s", "value")
    return f"{prefix}s"


def test_a_valid_graph_has_no_problems(graph):
    chain(graph)
    assert validate(graph) == []
    check(graph)  # does not raise


def test_every_problem_is_reported_at_once_with_node_type_and_field(graph):
    chain(graph)
    add = lambda *args, **kw: graph.add_node(*args, check=False, **kw)  # noqa: E731 - as a file would load
    link = lambda *args: graph.connect(*args, check=False)  # noqa: E731
    add("Upscale", {"factor": 2}, node_id="1")                       # unknown type
    add("Slow", {"steps": 0, "delay": "fast"}, node_id="2")         # two bad values, no input
    add("Format", {"case": "lower", "colour": "red", "value": 1.0}, node_id="3")
    add("Multiply", {"b": 500.0}, node_id="4")
    add("Integer", {"value": 3}, node_id="5")
    link("3", "text", "4", "a")                                      # STRING into FLOAT socket
    link("5", "value", "3", "value")                                 # INT into FLOAT: fine
    link("n", "missing", "2", "value")                               # no such output
    link("n", "value", "3", "nothing")                               # no such input
    add("Multiply", node_id="6")                                     # required "a" not linked
    add("Add", node_id="7")
    add("Add", node_id="8")
    link("7", "sum", "8", "a")
    link("8", "sum", "7", "a")                                       # a loop

    problems = validate(graph)
    assert where(problems) == [
        ("unknown_node_type", "1", "Upscale", None),
        ("invalid_value", "2", "Slow", "steps"),
        ("invalid_value", "2", "Slow", "delay"),
        ("type_mismatch", "2", "Slow", "value"),
        ("invalid_value", "3", "Format", "case"),
        ("invalid_value", "3", "Format", "colour"),
        ("invalid_value", "3", "Format", "value"),
        ("type_mismatch", "3", "Format", "nothing"),
        ("invalid_value", "4", "Multiply", "b"),
        ("type_mismatch", "4", "Multiply", "a"),
        ("missing_input", "6", "Multiply", "a"),
        ("cycle", "7", "Add", None),
    ]
    text = [str(p) for p in problems]
    assert "'Upscale' is not installed" in text[0]
    assert text[1] == 'node 2 (Slow) field "steps": 0 is below the minimum 1'
    assert text[2] == "node 2 (Slow) field \"delay\": expected a number, got \"fast\""
    assert "does not have" in text[3] and "'missing'" in text[3]
    assert text[4] == 'node 3 (Format) field "case": "lower" is not one of: as is, upper'
    assert "has no field 'colour'" in text[5]
    assert "socket" in text[6]
    assert "has no input 'nothing'" in text[7]
    assert "above the maximum 100" in text[8]
    assert text[9] == ('node 4 (Multiply) field "a": takes FLOAT, but is linked to node 3 (Format) '
                       "output 'text', which gives STRING")
    assert text[10] == 'node 6 (Multiply) field "a": required input (FLOAT) is not connected'
    assert text[11] == "node 7 (Add): the links form a loop: 7 (Add) -> 8 (Add) -> 7 (Add)"


def test_a_file_with_problems_loads_and_reports_them_all(registry, tmp_path):
    path = tmp_path / "broken.json"
    path.write_text(json.dumps({"format": "nodeflow.workflow", "version": 1, "nodes": [
        {"id": "1", "type": "Number", "values": {"value": "two"}},
        {"id": "2", "type": "Sharpen", "values": {"amount": 3}},
        {"id": "3", "type": "Sink"},
    ], "links": [
        {"from": {"node": "1", "output": "value"}, "to": {"node": "2", "input": "image"}},
        {"from": {"node": "4", "output": "image"}, "to": {"node": "3", "input": "value"}},
    ]}))
    workflow = load_workflow(path, registry)
    problems = validate(workflow.graph, extra_problems=workflow.problems)
    assert where(problems) == [
        ("dangling_link", "3", "Sink", "value"),
        ("invalid_value", "1", "Number", "value"),
        ("unknown_node_type", "2", "Sharpen", None),
        ("missing_input", "3", "Sink", "value"),
    ]
    assert str(problems[0]) == ('node 3 (Sink) field "value": the link 4.image -> 3.value was dropped: '
                                "there is no node '4'")


def test_required_sockets_must_be_linked_but_optional_ones_and_widgets_need_not(graph):
    graph.add_node("Multiply", node_id="1")  # socket "a" unlinked, widget "b" has its default
    graph.add_node("Sink", node_id="2")      # "value" required, "optional_note" optional
    problems = validate(graph)
    assert where(problems) == [("missing_input", "1", "Multiply", "a"), ("missing_input", "2", "Sink", "value")]
    assert str(problems[0]) == 'node 1 (Multiply) field "a": required input (FLOAT) is not connected'


def test_a_widget_fed_by_a_link_is_type_checked_not_value_checked(graph):
    sink = chain(graph)
    graph.nodes["m"].values["b"] = 1e9  # out of range, but the link provides the value
    graph.add_node("Number", node_id="x")
    graph.connect("x", "value", "m", "b")
    assert validate(graph) == []

    graph.add_node("Format", node_id="f")
    graph.connect("x", "value", "f", "value")
    graph.disconnect("m", "b")
    graph.connect("f", "text", "m", "b", check=False)
    assert where(validate(graph)) == [("type_mismatch", "m", "Multiply", "b")]
    assert sink == "s"


def test_no_output_node(graph):
    graph.add_node("Number", node_id="1")
    [problem] = validate(graph)
    assert problem.code == "no_output_node" and problem.node_id is None
    assert str(problem) == "the workflow has no output node, so running it would do nothing"

    chain(graph)
    graph.set_mode("s", "bypass")
    assert [p.code for p in validate(graph)] == ["no_output_node"]


def test_requested_outputs_check_only_those_nodes_and_their_ancestors(graph):
    good = chain(graph, "a")
    bad = chain(graph, "b")
    graph.nodes["bn"].values["value"] = "ten"
    assert validate(graph, outputs=[good]) == []
    assert where(validate(graph, outputs=[bad])) == [("invalid_value", "bn", "Number", "value")]
    assert len(validate(graph)) == 1

    assert where(validate(graph, outputs=["am"])) == [("no_output_node", None, None, None)]
    assert where(validate(graph, outputs=["nope", good])) == [("no_output_node", "nope", None, None)]
    assert "contain no output node" in str(validate(graph, outputs=[])[0])


def test_load_problems_come_first_and_follow_the_requested_outputs(registry):
    text = json.dumps({"format": "nodeflow.workflow", "version": 1, "nodes": [
        {"id": "1", "type": "Number"}, {"id": "2", "type": "Sink"},
        {"id": "3", "type": "Number"}, {"id": "4", "type": "Sink"},
    ], "links": [
        {"from": {"node": "1", "output": "value"}, "to": {"node": "2", "input": "value"}},
        {"from": {"node": "3", "output": "value"}, "to": {"node": "4", "input": "value"}},
        {"from": {"node": "9", "output": "value"}, "to": {"node": "4", "input": "optional_note"}},
    ]})
    workflow = workflow_from_json(text, registry)
    problems = validate(workflow.graph, extra_problems=workflow.problems)
    assert where(problems) == [("dangling_link", "4", "Sink", "optional_note")]
    assert json.loads(json.dumps([p.to_dict() for p in problems]))[0] == {
        "code": "dangling_link", "message": problems[0].message, "node_id": "4", "node_type": "Sink",
        "field": "optional_note"}
    assert validate(workflow.graph, outputs=["2"], extra_problems=workflow.problems) == []


def test_a_cycle_names_the_nodes_on_it(graph):
    chain(graph)
    for node_id in ("1", "2", "3"):
        graph.add_node("Add", node_id=node_id)
    graph.connect("1", "sum", "2", "a")
    graph.connect("2", "sum", "3", "a")
    graph.connect("3", "sum", "1", "a", check=False)
    graph.connect("n", "value", "1", "b")  # an entry into the loop is not part of it
    graph.add_node("Add", node_id="self")
    graph.connect("self", "sum", "self", "a", check=False)

    problems = [p for p in validate(graph) if p.code == "cycle"]
    assert [str(p) for p in problems] == [
        "node 1 (Add): the links form a loop: 1 (Add) -> 2 (Add) -> 3 (Add) -> 1 (Add)",
        "node self (Add): the links form a loop: self (Add) -> self (Add)",
    ]


def test_a_bypassed_node_needs_no_inputs_but_its_links_are_type_checked(graph):
    sink = chain(graph)
    graph.add_node("Slow", node_id="slow", mode="bypass")
    assert validate(graph) == []  # its required "value" is not linked: fine, it does not run

    graph.add_node("Format", node_id="f")
    graph.connect("n", "value", "f", "value")
    graph.connect("f", "text", "slow", "value", check=False)
    assert where(validate(graph)) == [("type_mismatch", "slow", "Slow", "value")]
    assert sink


def test_a_bypassed_node_with_nothing_to_pass_on_starves_a_required_input(graph):
    chain(graph)
    graph.add_node("Slow", node_id="slow", mode="bypass")  # passes on its "value" socket: unlinked
    graph.disconnect("s", "value")
    graph.connect("slow", "value", "s", "value")
    problems = validate(graph)
    assert where(problems) == [("missing_input", "s", "Sink", "value")]
    assert "node slow (Slow) is bypassed and has no linked FLOAT input" in problems[0].message

    graph.connect("m", "product", "slow", "value")
    assert validate(graph) == []
    graph.set_mode("m", "bypass")  # passes on its linked "a"; its own widget is not needed
    assert validate(graph) == []


def test_an_unknown_mode_is_an_invalid_value(graph):
    chain(graph)
    graph.nodes["m"].mode = "muted"
    assert where(validate(graph)) == [("invalid_value", "m", "Multiply", "mode")]


def test_validation_error_lists_every_problem(graph):
    graph.add_node("Sink", node_id="1")
    graph.add_node("Number", {"value": "x"}, node_id="2", check=False)
    with pytest.raises(ValidationError) as caught:
        check(graph)
    error = caught.value
    assert [p.code for p in error.problems] == ["missing_input", "invalid_value"]
    assert str(error).splitlines() == [
        "the workflow cannot run, 2 problem(s):",
        '  - node 1 (Sink) field "value": required input (*) is not connected',
        "  - node 2 (Number) field \"value\": expected a number, got \"x\"",
    ]


def test_problem_reads_well_without_a_field_or_node():
    assert str(Problem("cycle", "loop", "4", "Add")) == "node 4 (Add): loop"
    assert str(Problem("no_output_node", "nothing to run")) == "nothing to run"


class Clamp(Node):
    """A node whose two fields must agree with each other: low <= high."""

    type = "Clamp"
    value = Socket(FLOAT)
    low = Float(0.0)
    high = Float(1.0)
    outputs = (Output("value", FLOAT),)

    @classmethod
    def check_values(cls, values):
        if "low" in values and "high" in values and values["low"] > values["high"]:
            return {"high": f"high ({values['high']}) is below low ({values['low']})"}
        return {}

    def run(self, ctx, value, low, high):
        return min(max(value, low), high)


def test_fields_that_disagree_with_each_other_are_reported_before_running(registry, graph):
    registry.register(Clamp)
    graph.add_node("Number", {"value": 2.0}, node_id="n")
    graph.add_node("Clamp", {"low": 5.0}, node_id="c")  # high keeps its default, 1.0
    graph.add_node("Sink", node_id="s")
    graph.connect("n", "value", "c", "value")
    graph.connect("c", "value", "s", "value")
    problems = validate(graph)
    assert where(problems) == [("invalid_value", "c", "Clamp", "high")]
    assert "below low (5.0)" in problems[0].message

    # A value fed by a link is unknown until the run, so the check cannot be made.
    graph.add_node("Number", {"value": 0.0}, node_id="h")
    graph.connect("h", "value", "c", "high")
    assert validate(graph) == []
