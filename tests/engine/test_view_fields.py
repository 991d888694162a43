"""A field that only chooses what is shown while a node runs (``affects_result=False``)
reaches ``run`` but not the signature: changing it re-runs nothing, and saves nothing twice."""

from nodeflow import Choice, Node, Output, STRING, String
from nodeflow.engine.executor import Executor
from nodeflow.model.graph import Graph
from tests.support.testpack import Sink, make_registry, reset

SEEN: list[tuple[str, str]] = []


class Shout(Node):
    type = "Shout"
    text = String("hi")
    view = Choice(("plain", "fancy"), default="plain", affects_result=False)
    outputs = (Output("text", STRING),)

    def run(self, ctx, text, view):
        SEEN.append((text, view))
        return text.upper()


def _graph() -> Graph:
    registry = make_registry()
    registry.register(Shout)
    graph = Graph(registry)
    graph.add_node("Shout", {"text": "hi", "view": "plain"}, node_id="1")
    graph.add_node("Sink", node_id="2")
    graph.connect("1", "text", "2", "value")
    return graph


def test_changing_a_view_field_re_runs_nothing_but_a_real_field_does():
    reset()
    SEEN.clear()
    graph = _graph()
    executor = Executor(graph.registry, device="cpu")
    assert executor.run(graph).executed == ("1", "2")
    assert SEEN == [("hi", "plain")]

    graph.set_value("1", "view", "fancy")
    assert executor.run(graph).executed == ()

    graph.set_value("1", "text", "ho")
    assert executor.run(graph).executed == ("1", "2")
    assert SEEN[-1] == ("ho", "fancy")  # run receives the view field's value


def test_the_declaration_says_so():
    assert Shout.inputs["view"].describe()["affects_result"] is False
    assert "affects_result" not in Shout.inputs["text"].describe()
