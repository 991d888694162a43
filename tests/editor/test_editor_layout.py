"""Where the editor puts nodes and how its zoom maps the canvas, without a window; plus
the typed seams the views rely on (edit events, worker messages, widget makers, the
progress words)."""

from __future__ import annotations

import random
import time

import pytest

from tests.support import testpack
from nodeflow.editor.controller import EditorController
from nodeflow.editor.layout import (
    ZOOM_LEVELS,
    View,
    any_overlap,
    estimate_size,
    fit_view,
    free_spot,
    layered_layout,
    overlaps,
    step_zoom,
)
from nodeflow.model.fields import Int, Seed
from nodeflow.model.graph import LinkAdded, NodeAdded, NodeMoved, NodeRemoved, ValueChanged


@pytest.fixture
def ctl(tmp_path):
    testpack.reset()
    return EditorController(testpack.make_registry(), config_folder=tmp_path / "config", autosave_delay=0.0)


def rect_of(ctl, node_id):
    return (*ctl.graph.nodes[node_id].pos, *ctl.node_size(node_id))


def test_nodes_added_one_after_another_never_land_on_each_other(ctl):
    centre = (400.0, 300.0)
    for type_name in ["Number", "Add", "Multiply", "Format", "Sink", "Slow"] * 3:
        ctl.select([])
        ctl.add_node(type_name, ctl.position_for_new_node(type_name, centre))
    rects = [rect_of(ctl, nid) for nid in ctl.graph.nodes]
    assert not any_overlap(rects)
    first = ctl.graph.nodes["1"].pos
    w, h = estimate_size(ctl.registry.get("Number"))
    assert first == (centre[0] - w / 2, centre[1] - h / 2)  # the first one in the middle of the view


def test_a_new_node_goes_beside_the_selected_one(ctl):
    n = ctl.add_node("Number", (100, 100))
    ctl.select([n])
    pos = ctl.position_for_new_node("Add", (2000, 2000))
    assert pos[0] > 100 + ctl.node_size(n)[0] and abs(pos[1] - 100) < 100


def test_a_spot_taken_moves_the_new_node_to_the_nearest_free_one():
    taken = [(0, 0, 200, 100), (220, 0, 200, 100), (0, 130, 200, 100)]
    for _ in range(50):
        near = (random.uniform(-50, 300), random.uniform(-50, 200))
        x, y = free_spot((180, 90), near, taken)
        assert not any(overlaps((x, y, 180, 90), r) for r in taken)
        assert abs(x - near[0]) + abs(y - near[1]) < 600
    assert free_spot((10, 10), (1000, 1000), taken) == (1000, 1000)


def test_layered_layout_points_every_link_right_and_overlaps_nothing():
    rng = random.Random(3)
    ids = [str(i) for i in range(1, 31)]
    edges = [(a, b) for i, a in enumerate(ids) for b in ids[i + 1:] if rng.random() < 0.08]
    sizes = {i: (rng.uniform(150, 300), rng.uniform(60, 250)) for i in ids}
    pos = layered_layout(edges, sizes)
    assert set(pos) == set(ids)
    assert not any_overlap((*pos[i], *sizes[i]) for i in ids)
    for a, b in edges:
        assert pos[a][0] + sizes[a][0] <= pos[b][0]


def test_fit_view_shows_everything_at_the_largest_zoom_that_fits():
    rects = [(0, 0, 200, 100), (1800, 600, 200, 150)]
    view = fit_view(rects, (1000, 600), margin=20)
    for x, y, w, h in rects:
        x0, y0 = view.drawn((x, y))
        assert 0 <= x0 and x0 + w * view.zoom <= 1000 and 0 <= y0 and y0 + h * view.zoom <= 600
    bigger = [z for z in ZOOM_LEVELS if z > view.zoom]
    assert bigger and 2000 * bigger[0] > 1000 - 40  # the next level up would not fit
    assert fit_view([(0, 0, 100, 100)], (1000, 1000)).zoom == 1.0  # never blown up past 1 for "fit all"


def test_zoom_keeps_the_point_under_the_cursor_still():
    view = View(1.0, (35.0, -20.0))
    anchor = (400.0, 300.0)
    under = view.model(anchor)
    for steps in (1, 2, -1, -3):
        zoomed = view.zoomed(step_zoom(view.zoom, steps), anchor)
        assert zoomed.drawn(under) == pytest.approx(anchor)
    assert step_zoom(1.0, 1) > 1.0 > step_zoom(1.0, -1)
    assert step_zoom(ZOOM_LEVELS[-1], 5) == ZOOM_LEVELS[-1]


def test_views_are_told_about_edits_as_typed_events(ctl):
    seen = []
    ctl.subscribe(seen.append)
    n = ctl.add_node("Number", (0, 0))
    a = ctl.add_node("Add", (300, 0))
    ctl.connect(n, "value", a, "a")
    ctl.set_value(a, "b", 2.0)
    ctl.move({a: (320, 10)})
    ctl.delete([a])
    kinds = [type(e) for e in seen]
    for kind in (NodeAdded, LinkAdded, ValueChanged, NodeMoved, NodeRemoved):
        assert kind in kinds, kind
    removed = next(e for e in seen if isinstance(e, NodeRemoved))
    assert removed.node.id == a and len(removed.links) == 1


def test_a_pack_can_give_its_own_field_kind_a_widget():
    from nodeflow.editor.widgets import register_widget, widget_maker

    class Percent(Int):
        pass

    assert widget_maker(Seed) is not widget_maker(Int)  # a subclass keeps its own maker
    assert widget_maker(Percent) is widget_maker(Int)  # ...and a new kind inherits its base's
    maker = lambda canvas, node, field, value, common: 0  # noqa: E731
    register_widget(Percent, maker)
    assert widget_maker(Percent) is maker and widget_maker(Int) is not maker


def test_progress_names_the_node_that_is_working(ctl):
    from nodeflow.editor.panels import run_summary
    from nodeflow.editor.runner import RunView

    n = ctl.add_node("Number", (0, 0))
    ctl.rename(n, "Load the big model")
    view = RunView(status="running", planned=("1", "2", "3"), current=n, started_at=1.0)
    text = run_summary(view, ctl.label)
    assert "Load the big model #1" in text and "0/3 nodes" in text
    assert "running" not in run_summary(RunView(status="ok", planned=("1",), finished_nodes=1), ctl.label)


def test_the_status_bar_says_where_a_run_wrote_its_files(tmp_path):
    from nodeflow import FLOAT, Node, Output

    class Writer(Node):
        type = "Writer"
        output_node = True
        outputs = (Output("value", FLOAT),)

        def run(self, ctx):
            path = ctx.output_dir / "result.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("1")
            ctx.report_written(path)
            return 1.0

    testpack.reset()
    registry = testpack.make_registry()
    registry.register(Writer, __name__)
    ctl = EditorController(registry, config_folder=tmp_path / "config", run_options={"output_dir": tmp_path / "out"})
    ctl.add_node("Writer")
    assert ctl.run() is None
    ctl.runner.wait(30)
    ctl.poll()
    assert ctl.runner.view.status == "ok", ctl.runner.view.error
    assert str(tmp_path / "out" / "result.txt") in ctl.status
    assert ctl.written == [tmp_path / "out" / "result.txt"]


def test_a_queue_of_runs_takes_new_seeds_each_time(ctl):
    r = ctl.add_node("Random", (0, 0), {"seed": 7})
    s = ctl.add_node("Sink", (300, 0))
    ctl.connect(r, "value", s, "value")
    assert ctl.run_queue(3, random.Random(1)) is None
    seeds = []
    deadline = time.monotonic() + 60
    while ctl.runner.running or ctl.queued:
        ctl.runner.wait(5)
        ctl.poll()
        seeds.append(ctl.graph.nodes[r].values["seed"])
        assert time.monotonic() < deadline
    assert ctl.runner.view.status == "ok" and "finished" in ctl.status
    distinct = set([7] + seeds)
    assert len(distinct) == 3  # the first run kept 7, the two after it got new seeds
    last = ctl.graph.nodes[r].values["seed"]
    assert ctl.undo() and ctl.graph.nodes[r].values["seed"] not in (last,)  # new seeds are an edit one can undo
    assert ctl.graph.nodes[r].values["seed"] in distinct
    # Interrupt drops what is still queued.
    ctl.run_queue(5)
    ctl.interrupt()
    assert ctl.queued == 0
    ctl.runner.wait(30)
    ctl.poll()


def test_an_empty_latent_takes_the_connected_models_native_size_and_warns_far_from_it(tmp_path):
    from nodeflow.host.settings import build_run_settings
    from nodeflow.model.registry import default_registry

    registry = default_registry()  # the settings the editor builds: where the packs' models are
    ctl = EditorController(registry, config_folder=tmp_path / "config",
                           run_options={"settings": build_run_settings(registry, environ={})})
    model = ctl.add_node("Checkpoint", (0, 0), {"checkpoint": "shapes"})  # the bundled model, trained at 32x32
    latent = ctl.add_node("EmptyLatent", (300, 0))
    assert ctl.graph.nodes[latent].values["width"] == 512  # nothing connected: the class default
    assert ctl.advice(latent) == ({}, {})
    assert ctl.connect(model, "model", latent, "model") is None
    assert (ctl.graph.nodes[latent].values["width"], ctl.graph.nodes[latent].values["height"]) == (32, 32)
    assert "32" in ctl.status and ctl.advice(latent)[1] == {}
    ctl.set_value(latent, "width", 512)  # asked for far more than the model knows
    _, warnings = ctl.advice(latent)
    assert set(warnings) == {"width"} and "native 32 px" in warnings["width"]
    ctl.undo(), ctl.undo()  # the native size was one step, the link another
    assert ctl.graph.nodes[latent].values["width"] == 512 and ctl.graph.link_into(latent, "model") is not None
