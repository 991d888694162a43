"""The editor's behaviour without a window: every edit, undo/redo, clipboard, links,
files, autosave/recovery and runs, through EditorController."""

from __future__ import annotations

import json
import time

import pytest

from tests.support import testpack
from nodeflow.editor.commands import AddNode, History, SetValue
from nodeflow.editor.controller import EditorController, search_node_types
from nodeflow.model.hooks import node_insight
from nodeflow.files.open import load_workflow


@pytest.fixture
def ctl(tmp_path):
    testpack.reset()
    return EditorController(testpack.make_registry(), config_folder=tmp_path / "config", autosave_delay=0.0)


def chain(ctl):
    """Number -> Add.a -> Sink, the smallest runnable graph."""
    n = ctl.add_node("Number", (0, 0), {"value": 2.0})
    a = ctl.add_node("Add", (200, 0), {"b": 3.0})
    s = ctl.add_node("Sink", (400, 0))
    assert ctl.connect(n, "value", a, "a") is None
    assert ctl.connect(a, "sum", s, "value") is None
    return n, a, s


def snapshot(graph):
    return (
        {nid: (n.type, dict(n.values), n.title, n.mode, tuple(n.pos)) for nid, n in graph.nodes.items()},
        sorted(map(str, graph.iter_links())),
    )


# ------------------------------------------------------------------- commands
def test_add_node_takes_defaults_and_undo_redo_keep_its_id(ctl):
    node_id = ctl.add_node("Multiply", (10, 20))
    assert ctl.graph.nodes[node_id].values == {"b": 1.0}
    assert ctl.graph.nodes[node_id].pos == (10, 20)
    ctl.undo()
    assert node_id not in ctl.graph.nodes
    ctl.redo()
    assert ctl.graph.nodes[node_id].type == "Multiply"


def test_unknown_type_is_refused_with_reason(ctl):
    assert ctl.add_node("NoSuchNode") is None
    assert "unknown node type 'NoSuchNode'" in ctl.status
    assert not ctl.history.can_undo()


def test_delete_removes_links_and_undo_restores_them(ctl):
    n, a, s = chain(ctl)
    before = snapshot(ctl.graph)
    ctl.select([a])
    assert ctl.delete()
    assert a not in ctl.graph.nodes and not list(ctl.graph.iter_links())
    ctl.undo()
    assert snapshot(ctl.graph) == before
    ctl.redo()
    assert set(ctl.graph.nodes) == {n, s}


def test_incompatible_link_is_refused_with_reason(ctl):
    f = ctl.add_node("Format", (0, 0))
    m = ctl.add_node("Multiply", (200, 0))
    reason = ctl.connect(f, "text", m, "a")
    assert reason is not None and "gives STRING" in reason and "takes FLOAT" in reason
    assert ctl.status == reason
    assert ctl.graph.link_into(m, "a") is None


def test_cycle_and_self_links_are_refused(ctl):
    a = ctl.add_node("Add")
    b = ctl.add_node("Add")
    assert ctl.connect(a, "sum", b, "a") is None
    assert "cycle" in ctl.connect(b, "sum", a, "a")
    assert "itself" in ctl.connect(a, "sum", a, "b")


def test_linking_into_an_occupied_input_replaces_it_as_one_undo_step(ctl):
    n1 = ctl.add_node("Number", values={"value": 1.0})
    n2 = ctl.add_node("Number", values={"value": 2.0})
    a = ctl.add_node("Add")
    ctl.connect(n1, "value", a, "a")
    assert ctl.connect(n2, "value", a, "a") is None
    assert ctl.graph.link_into(a, "a").source == n2
    ctl.undo()
    assert ctl.graph.link_into(a, "a").source == n1
    ctl.redo()
    assert ctl.graph.link_into(a, "a").source == n2


def test_int_output_may_feed_a_float_input(ctl):
    i = ctl.add_node("Integer")
    a = ctl.add_node("Add")
    assert ctl.connect(i, "value", a, "b") is None


def test_disconnect_and_undo(ctl):
    n, a, s = chain(ctl)
    assert ctl.disconnect(a, "a")
    assert ctl.graph.link_into(a, "a") is None
    ctl.undo()
    assert ctl.graph.link_into(a, "a").source == n
    assert not ctl.disconnect(n, "value")  # nothing linked there: no undo step


def test_set_value_checks_the_field_and_undoes(ctl):
    m = ctl.add_node("Multiply")
    assert ctl.set_value(m, "b", 5.0) is None
    refusal = ctl.set_value(m, "b", 1000.0)
    assert refusal is not None and "Multiply.b" in refusal and "maximum" in refusal
    assert ctl.graph.nodes[m].values["b"] == 5.0
    ctl.undo()
    assert ctl.graph.nodes[m].values["b"] == 1.0


def test_a_slider_drag_is_one_undo_step():
    # Successive edits of one field within a second merge, like a slider drag.
    first, second = SetValue("1", "b", 2.0, at=10.0), SetValue("1", "b", 3.0, at=10.5)
    assert first.merge(second) and first.value == 3.0
    assert not first.merge(SetValue("1", "b", 4.0, at=12.0))
    assert not first.merge(SetValue("1", "a", 4.0, at=10.6))


def test_move_rename_and_bypass_undo(ctl):
    n, a, s = chain(ctl)
    assert ctl.move({a: (250, 40), n: (0, 0)})  # n did not move: only a is recorded
    assert ctl.graph.nodes[a].pos == (250, 40)
    assert ctl.rename(a, "total")
    ctl.select([a, s])
    assert ctl.toggle_bypass()
    assert [ctl.graph.nodes[x].mode for x in (a, s)] == ["bypass", "bypass"]
    assert ctl.toggle_bypass()  # all bypassed: brings them back
    assert ctl.graph.nodes[a].mode == "normal"
    for _ in range(2):
        ctl.undo()
    assert ctl.graph.nodes[a].title == "total" and ctl.graph.nodes[a].mode == "normal"
    ctl.undo()
    assert ctl.graph.nodes[a].mode == "normal" and ctl.graph.nodes[a].title == ""
    ctl.undo()
    assert ctl.graph.nodes[a].pos == (200, 0)
    assert ctl.graph.nodes[a].mode == "normal"


def test_copy_paste_keeps_internal_links_and_drops_external_ones(ctl):
    n, a, s = chain(ctl)
    m = ctl.add_node("Multiply")
    ctl.connect(a, "sum", m, "a")
    ctl.select([a, s])  # a <- n is external, a -> s internal, a -> m external
    assert ctl.copy() == 2
    new = ctl.paste()
    assert len(new) == 2 and set(new).isdisjoint({n, a, s, m})
    types = {ctl.graph.nodes[x].type: x for x in new}
    pasted_links = [l for l in ctl.graph.iter_links() if l.target in new or l.source in new]
    assert [(l.source, l.target) for l in pasted_links] == [(types["Add"], types["Sink"])]
    assert ctl.graph.nodes[types["Add"]].pos == (240, 40)  # offset from the original
    assert ctl.selection == set(new)
    ctl.undo()
    assert set(ctl.graph.nodes) == {n, a, s, m}


def test_duplicate_and_select_all(ctl):
    chain(ctl)
    ctl.select_all()
    before = len(ctl.graph.nodes)
    new = ctl.duplicate()
    assert len(new) == before == 3
    assert len(list(ctl.graph.iter_links())) == 4  # both links copied
    ctl.undo()
    assert len(ctl.graph.nodes) == before


def test_more_than_a_hundred_steps_undo_and_redo_exactly(ctl):
    states = [snapshot(ctl.graph)]
    ids = []
    for i in range(60):
        ids.append(ctl.add_node("Number", (i * 10, 0)))
        states.append(snapshot(ctl.graph))
        ctl.move({ids[-1]: (i * 10, 50)})
        states.append(snapshot(ctl.graph))
    assert len(states) - 1 == 120
    for expected in reversed(states[:-1]):
        assert ctl.undo()
        assert snapshot(ctl.graph) == expected
    assert not ctl.undo()
    for expected in states[1:]:
        assert ctl.redo()
        assert snapshot(ctl.graph) == expected


def test_history_limit_forgets_the_oldest_steps(ctl):
    ctl.history = History(limit=150)
    for i in range(200):
        ctl.add_node("Number")
    undone = 0
    while ctl.undo():
        undone += 1
    assert undone == 150 and len(ctl.graph.nodes) == 50


def test_palette_search_filters_by_name_category_and_description(ctl):
    names = lambda q: [cls.type for cls in search_node_types(ctl.registry, q)]
    assert names("mul") == ["Multiply"]
    assert "Slow" in names("progress")  # from the description
    assert len(names("test")) == len([t for t in ctl.registry.types() if t.category == "test"])  # the category
    assert names("sum two") == ["Add"]
    assert names("zzz") == []


# ------------------------------------------------------------------ files
def test_dirty_marker_follows_edits_saves_and_undo_to_the_saved_point(ctl, tmp_path):
    assert not ctl.dirty and not ctl.title.startswith("*")
    chain(ctl)
    assert ctl.dirty and ctl.title.startswith("*untitled")
    with pytest.raises(ValueError):
        ctl.save()  # no file yet: the view asks where
    path = ctl.save(tmp_path / "flow.json")
    assert not ctl.dirty and ctl.title == "flow.json - nodeflow"
    ctl.add_node("Number")
    assert ctl.dirty
    ctl.undo()
    assert not ctl.dirty
    assert load_workflow(path, ctl.registry).graph.nodes.keys() == ctl.graph.nodes.keys()


def test_open_save_round_trip_and_recent_files(ctl, tmp_path):
    n, a, s = chain(ctl)
    ctl.rename(a, "total")
    first = ctl.save(tmp_path / "one.json")
    ctl.new()
    assert not ctl.graph.nodes and ctl.path is None
    second = ctl.save(tmp_path / "two.json")
    problems = ctl.open(first)
    assert problems == []
    assert ctl.graph.nodes[a].title == "total" and ctl.graph.link_into(s, "value").source == a
    assert not ctl.history.can_undo() and not ctl.dirty
    assert ctl.recent_files()[:2] == [str(first.resolve()), str(second.resolve())]
    # a second controller (next start) sees the same list
    again = EditorController(ctl.registry, config_folder=tmp_path / "config")
    assert again.recent_files()[0] == str(first.resolve())


def test_startup_opens_the_most_recent_existing_file(ctl, tmp_path):
    chain(ctl)
    path = ctl.save(tmp_path / "last.json")
    again = EditorController(ctl.registry, config_folder=tmp_path / "config")
    again.open_startup()
    assert again.path == path and len(again.graph.nodes) == 3


def test_opening_a_broken_file_raises_and_keeps_the_current_graph(ctl, tmp_path):
    chain(ctl)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(Exception):
        ctl.open(bad)
    assert len(ctl.graph.nodes) == 3


def test_autosave_writes_recovery_after_a_change_and_next_start_offers_it(tmp_path):
    clock = [100.0]
    ctl = EditorController(testpack.make_registry(), config_folder=tmp_path / "cfg", autosave_delay=3.0, clock=lambda: clock[0])
    assert not ctl.tick()  # nothing changed
    n, a, s = chain(ctl)
    clock[0] += 1.0
    assert not ctl.tick()  # changes still settling
    clock[0] += 3.0
    assert ctl.tick()
    recovery = tmp_path / "cfg" / "recovery.json"
    assert json.loads(recovery.read_text())["workflow"]["format"] == "nodeflow.workflow"
    assert not ctl.tick()  # nothing new since

    # the process "crashes" here; the next start finds the recovery copy
    after = EditorController(testpack.make_registry(), config_folder=tmp_path / "cfg")
    assert after.recovery_offer() is not None
    after.restore_recovery()
    assert snapshot(after.graph) == snapshot(ctl.graph)
    assert after.dirty  # restored work is not saved anywhere yet
    after.close()  # a clean exit removes it
    assert not recovery.exists()
    assert EditorController(testpack.make_registry(), config_folder=tmp_path / "cfg").recovery_offer() is None


def test_saving_removes_the_recovery_copy(ctl, tmp_path):
    chain(ctl)
    assert ctl.tick()
    assert ctl.recovery_offer() is not None
    ctl.save(tmp_path / "f.json")
    assert ctl.recovery_offer() is None


# -------------------------------------------------------------------- runs
def test_run_in_background_reports_states_and_outputs(ctl):
    n, a, s = chain(ctl)
    assert ctl.run() is None
    ctl.runner.wait(30)
    ctl.poll()
    view = ctl.runner.view
    assert view.status == "ok", view.error
    assert view.node_states == {n: "done", a: "done", s: "done"}
    assert testpack.Sink.received == [5.0]
    assert view.fraction == 1.0
    # unchanged graph: the second run comes from the cache
    ctl.run()
    ctl.runner.wait(30)
    ctl.poll()
    assert set(ctl.runner.view.node_states.values()) == {"cached"}


def test_run_failure_marks_the_node_and_keeps_the_graph(ctl):
    n = ctl.add_node("Number")
    f = ctl.add_node("Fail")
    s = ctl.add_node("Sink")
    ctl.connect(n, "value", f, "value")
    ctl.connect(f, "value", s, "value")
    before = snapshot(ctl.graph)
    ctl.run()
    ctl.runner.wait(30)
    ctl.poll()
    view = ctl.runner.view
    assert view.status == "error"
    assert view.node_states[f] == "error" and view.error_node == f
    assert "fails on purpose" in view.error and "fails on purpose" in ctl.status
    assert snapshot(ctl.graph) == before


def test_a_run_that_does_not_validate_marks_the_nodes_at_fault(ctl):
    a = ctl.add_node("Multiply", (200, 0), {"b": 3.0})  # its socket "a" is left unlinked
    s = ctl.add_node("Sink", (400, 0))
    assert ctl.connect(a, "product", s, "value") is None
    stray = ctl.add_node("Multiply")  # feeds nothing: does not block the run
    ctl.run()
    ctl.runner.wait(30)
    ctl.poll()
    view = ctl.runner.view
    assert view.status == "invalid"
    assert view.node_states.get(a) == "error" and view.error_node == a
    assert stray not in view.node_states
    assert "is not connected" in view.error and "is not connected" in ctl.status


def test_interrupt_stops_a_run(ctl):
    n = ctl.add_node("Number")
    slow = ctl.add_node("Slow", values={"steps": 500, "delay": 0.01})
    s = ctl.add_node("Sink")
    ctl.connect(n, "value", slow, "value")
    ctl.connect(slow, "value", s, "value")
    ctl.run()
    assert "already" in ctl.run()
    deadline = time.monotonic() + 10
    while ctl.runner.view.step is None and time.monotonic() < deadline:
        ctl.poll()
        time.sleep(0.01)
    assert ctl.runner.view.step is not None and ctl.runner.view.step[0] == slow
    ctl.interrupt()
    ctl.runner.wait(10)
    ctl.poll()
    assert ctl.runner.view.status == "interrupted"
    assert "interrupted" in ctl.status


def test_run_without_output_nodes_is_refused(ctl):
    ctl.add_node("Number")
    assert "nothing to run" in ctl.run()


def test_edits_during_a_run_do_not_touch_the_running_copy(ctl):
    n, a, s = chain(ctl)
    ctl.run()
    ctl.set_value(n, "value", 10.0)
    ctl.runner.wait(30)
    ctl.poll()
    assert testpack.Sink.received == [5.0]


# ------------------------------------------------------------------ insight
def test_insight_hook_is_called_generically(ctl):
    class Schedule(testpack.Slow):
        type = "ScheduleDemo"

        @classmethod
        def insight(cls, values, upstream):
            steps = values["steps"]
            return {"plots": [{"title": "sigma", "series": [{"label": "s", "y": [steps - i for i in range(steps)]}]}]}

    ctl.registry.register(Schedule)
    node = ctl.add_node("ScheduleDemo", values={"steps": 4})
    insight = ctl.insight(node)
    assert insight.plots[0].series[0].y == (4.0, 3.0, 2.0, 1.0)
    assert insight.plots[0].series[0].x == (0.0, 1.0, 2.0, 3.0)
    assert ctl.insight(ctl.add_node("Number")) is None

    class Broken(testpack.Number):
        type = "BrokenInsight"

        @classmethod
        def insight(cls, values, upstream):
            raise RuntimeError("no config")

    assert "no config" in node_insight(Broken, {}).error


def test_sampler_explains_its_noise_schedule():
    from nodes.diffusion.sampling import Sampler

    values = {**Sampler.default_values(), "steps": 12}
    normal = node_insight(Sampler, values)
    assert normal.error is None
    sigma = normal.plots[0].series[0].y
    assert len(sigma) == 12 and all(a > b for a, b in zip(sigma, sigma[1:]))  # noise falls every step
    alpha_bar = normal.plots[1].series[0].y
    assert all(0 < a < 1 for a in alpha_bar) and alpha_bar[-1] > alpha_bar[0]
    karras = node_insight(Sampler, {**values, "sampler": "euler", "schedule": "karras"}).plots[0].series[0].y
    # karras spans the model's whole range: from its top level (above the first spaced step) to lower
    assert karras[0] == pytest.approx(14.6146, rel=1e-3) and karras[0] >= sigma[0] and karras[-1] < sigma[-1]


def test_field_options_hook_feeds_file_combos():
    from nodeflow.model.hooks import field_options

    class Loader(testpack.Number):
        type = "LoaderDemo"

        @classmethod
        def field_options(cls, name, settings):
            return ["a.safetensors", "b"] if name == "value" else []

    assert field_options(Loader, "value") == ["a.safetensors", "b"]
    assert field_options(testpack.Number, "value") is None


def test_opening_a_non_workflow_file_imports_it_without_a_save_target(ctl, tmp_path):
    chain(ctl)
    saved = ctl.save(tmp_path / "flow.json")
    imported = tmp_path / "flow.txt"  # any file the loader understands that is not our .json
    imported.write_bytes(saved.read_bytes())
    ctl.open(imported)
    assert len(ctl.graph.nodes) == 3 and ctl.path is None
    assert "imported flow.txt" in ctl.status
    with pytest.raises(ValueError):
        ctl.save()  # never overwrites the source; the view asks for a new name


def test_compound_edit_is_one_undo_step_and_all_or_nothing(ctl):
    assert ctl.edit_many([AddNode("Number"), AddNode("Add")], "add two")
    assert len(ctl.graph.nodes) == 2
    ctl.undo()
    assert not ctl.graph.nodes
    assert not ctl.edit_many([AddNode("Number"), AddNode("NoSuchNode")], "half valid")
    assert not ctl.graph.nodes and "NoSuchNode" in ctl.status  # the first part was rolled back


def test_first_start_opens_the_shipped_default_workflow_without_a_save_target(tmp_path):
    from nodeflow.editor.shipped import default_workflow
    from nodeflow.model.registry import default_registry

    ctl = EditorController(default_registry(), config_folder=tmp_path / "fresh")
    ctl.open_startup()
    shipped = json.loads(default_workflow().read_text())
    assert set(ctl.graph.nodes) == {node["id"] for node in shipped["nodes"]}
    assert ctl.problems == [] and ctl.graph.output_nodes()  # ready to Run
    assert ctl.path is None and not ctl.dirty  # Ctrl+S asks where instead of overwriting the example


def test_run_collects_result_pictures_and_per_step_previews(tmp_path):
    import torch

    from tests.editor_gui_app import registry

    ctl = EditorController(registry(), config_folder=tmp_path / "cfg")
    sunset = ctl.add_node("Sunset", values={"steps": 5, "delay": 0.0, "size": 32})
    show = ctl.add_node("ShowImage")
    ctl.connect(sunset, "image", show, "image")
    ctl.run()
    ctl.runner.wait(30)
    view = ctl.runner.view
    assert view.status == "ok", view.error
    assert [(node, image.size) for node, image in view.images] == [(show, (32, 32))]
    assert len(view.step_previews) == 5 and view.live_preview is view.step_previews[-1]
    # IMAGE tensors [B, H, W, 3] in [0, 1] become one picture per batch item
    from nodeflow.editor.images import to_pil_images

    batch = to_pil_images(torch.zeros(2, 8, 16, 3))
    assert [image.size for image in batch] == [(16, 8), (16, 8)]
    assert to_pil_images("not a picture") == [] and to_pil_images(torch.zeros(3)) == []


# ------------------------------------------------------------------ reroutes
def test_a_reroute_on_a_link_passes_the_value_and_its_type_and_costs_nothing(ctl, tmp_path):
    from nodeflow.engine.plan import build_plan

    n, a, s = chain(ctl)
    reroute = ctl.add_reroute(a, "a", (100, 60))
    assert ctl.graph.nodes[reroute].type == "Reroute"
    assert ctl.graph.link_into(reroute, "value").source == n and ctl.graph.link_into(a, "a").source == reroute
    assert ctl.graph.output_type(reroute, "value") == "FLOAT"  # the type of what feeds it
    second = ctl.add_reroute(a, "a", (150, 60))  # a reroute after a reroute still carries FLOAT
    assert ctl.graph.output_type(second, "value") == "FLOAT"

    plan = build_plan(ctl.graph, [s])
    assert {step.node_id for step in plan.steps} == {n, a, s}  # reroutes have no step, so no cache entry
    assert ctl.run([s]) is None
    ctl.runner.wait(30)
    ctl.poll()
    assert ctl.runner.view.status == "ok", ctl.runner.view.error
    assert testpack.Sink.received == [5.0]  # the same result as without the reroutes

    saved = ctl.save(tmp_path / "rerouted.json")
    again = load_workflow(saved, ctl.registry)
    assert again.graph.nodes[reroute].type == "Reroute" and again.graph.link_into(a, "a").source == second
    ctl.undo()  # one step takes the second reroute away and relinks the first
    assert second not in ctl.graph.nodes and ctl.graph.link_into(a, "a").source == reroute
    ctl.undo()
    assert reroute not in ctl.graph.nodes and ctl.graph.link_into(a, "a").source == n


def test_a_reroute_refuses_a_link_its_source_type_forbids(ctl):
    text = ctl.add_node("Format")
    add = ctl.add_node("Add")
    sink = ctl.add_node("Sink")
    assert ctl.connect(text, "text", sink, "value") is None  # ANY takes text
    reroute = ctl.add_reroute(sink, "value", (0, 0))
    assert ctl.graph.output_type(reroute, "value") == "STRING"
    reason = ctl.connect(reroute, "value", add, "a")
    assert reason is not None and "gives STRING" in reason and "takes FLOAT" in reason
    assert ctl.add_reroute(add, "b", (0, 0)) is None and "no link" in ctl.status


# ------------------------------------------------------------------ groups
def test_a_group_collapses_hiding_its_nodes_saved_and_undoable(ctl, tmp_path):
    n, a, s = chain(ctl)  # at x 0, 200, 400
    ctl.ui["groups"] = [{"title": "inputs", "pos": [-20, -40], "size": [360, 200]}]  # holds n and a
    assert ctl.toggle_group(0)
    assert ctl.collapsed_nodes() == {n, a}
    saved = ctl.save(tmp_path / "collapsed.json")
    assert json.loads(saved.read_text())["ui"]["groups"][0]["collapsed"] == [n, a]
    reopened = EditorController(ctl.registry, config_folder=tmp_path / "config2", autosave_delay=0.0)
    reopened.open(saved)
    assert reopened.collapsed_nodes() == {n, a}

    assert ctl.run([s]) is None  # hidden nodes still run: collapsing is only the view
    ctl.runner.wait(30)
    ctl.poll()
    assert ctl.runner.view.status == "ok" and testpack.Sink.received == [5.0]

    ctl.undo()
    assert ctl.collapsed_nodes() == set() and "collapsed" not in ctl.ui["groups"][0]
    ctl.redo()
    assert ctl.collapsed_nodes() == {n, a}
    assert ctl.toggle_group(0) and ctl.collapsed_nodes() == set()  # expand
    ctl.ui["groups"].append({"title": "empty", "pos": [900, 900], "size": [100, 100]})
    assert not ctl.toggle_group(1) and "holds no nodes" in ctl.status
