"""The editor's Sweep without a window: the fields of the selected nodes, checked values,
the cost planned against the editor's cache, a run on the editor's run thread with
progress over points and steps, Stop, resume, and the contact sheet. The bundled model."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from nodeflow.editor.controller import EditorController
from nodeflow.editor.sweeping import SweepSession
from nodeflow.host.settings import build_run_settings
from nodeflow.model.registry import default_registry
from tests.support.server_harness import default_workflow


@pytest.fixture
def ctl(tmp_path):
    registry = default_registry()
    options = {"settings": build_run_settings(registry, environ={}), "output_dir": tmp_path / "output",
               "input_dir": tmp_path / "input"}
    controller = EditorController(registry, config_folder=tmp_path / "config", run_options=options)
    path = tmp_path / "small.json"
    path.write_text(json.dumps(default_workflow(steps=3)))
    controller.open(path)
    yield controller
    controller.close()


def drive(ctl: EditorController, session: SweepSession, timeout: float = 120, on_frame=None) -> list[tuple]:
    """The render loop's part: poll until the sweep ends; returns (points done, step) per frame."""
    seen = []
    deadline = time.monotonic() + timeout
    while session.running:
        assert time.monotonic() < deadline, "the sweep did not end"
        ctl.poll()
        session.poll()
        seen.append((session.state.done, ctl.runner.view.step))
        if on_frame is not None:
            on_frame()
        time.sleep(0.01)
    return seen


def test_nothing_selected_or_nothing_to_vary_is_said(ctl):
    session = SweepSession(ctl)
    assert "select the node" in session.take_selection()
    ctl.select(["8"])  # VAEDecode: tiling and tile size can vary
    assert session.take_selection() is None and set(session.choices()) == {"8.tiling", "8.tile_size"}
    ctl.select(["5", "7"])
    assert session.take_selection() is None
    choices = session.choices()
    assert "5.seed" in choices and "7.steps" in choices and "7.sampler" in choices
    assert choices["5.seed"] == "Noise #5: seed"
    assert session.axes == [("5.seed", f"{ctl.graph.nodes['5'].values['seed']}..{ctl.graph.nodes['5'].values['seed'] + 1}")]


def test_bad_values_are_refused_naming_node_and_field(ctl):
    ctl.select(["5", "6"])
    session = SweepSession(ctl)
    session.take_selection()
    session.set_axis(0, "5.seed", "-2..1")
    message = session.plan()
    assert isinstance(message, str) and message.startswith("Noise #5: ") and "'seed'" in message and "-2" in message
    session.set_axis(0, "6.scale", "4,lots")
    message = session.plan()
    assert isinstance(message, str) and message.startswith("CFG #6: ") and "'scale'" in message and "lots" in message
    session.set_axis(0, "5.seed", "1..3")
    session.set_axis(1, "6.scale", "4,6")
    session.mode = "zip"
    assert "one length" in session.plan()
    assert session.start() is not None and not ctl.runner.running  # refused, nothing started


def test_a_two_by_two_sweep_is_costed_against_the_cache_runs_with_progress_and_draws_the_sheet(ctl):
    assert ctl.run() is None  # one ordinary run first: the model and prompts are then in the cache
    ctl.runner.wait(120)
    ctl.poll()
    assert ctl.runner.view.status == "ok"
    ctl.select(["5", "6"])
    session = SweepSession(ctl)
    assert session.take_selection() is None
    session.set_axis(0, "5.seed", "1..2")
    session.set_axis(1, "6.scale", "4,6")
    sweep = session.plan()
    assert not isinstance(sweep, str), sweep
    cost = session.cost_text(sweep)
    # Checkpoint, both prompts, the latent and seed 1's noise come from the ordinary run's cache.
    assert sweep.plan.cached == {"Checkpoint": 1, "TextEncoder": 2, "EmptyLatent": 1, "Noise": 1}
    assert sweep.plan.executions == {"Noise": 1, "CFG": 2, "Sampler": 4, "VAEDecode": 4, "SaveImage": 4}
    assert cost.startswith("4 point(s), 15 node execution(s) instead of 36") and "already in the cache: 5 step(s)" in cost

    assert session.start() is None
    assert ctl.run() is not None  # one thing at a time on the run thread
    seen = drive(ctl, session)
    state = session.state
    assert state.status == "ok", state.error
    assert state.done == 4 and not state.failed
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)  # points count up
    assert {step[2] for _, step in seen if step} == {3}  # the sampler's steps were shown as they went
    manifest = json.loads(state.manifest.read_text())
    assert sum(len(p["executed"]) for p in manifest["points"]) == 15  # exactly the plan's cost ran
    images = sorted(state.output_dir.glob("000*.png"))
    assert len(images) == 4 and all(p in ctl.written for p in images) and state.sheet in ctl.written
    assert state.output_dir.parent == Path(ctl.runner.run_options["output_dir"]) / "sweeps"
    # The sheet is in the dialog's state and in the result panel; its cells hold the images.
    sheet = np.asarray(state.sheet_image)
    assert ctl.runner.view.images[0][0] == "sheet" and ctl.runner.view.images[0][1].size == state.sheet_image.size
    layout = manifest["sheet"]
    for cell in layout["cells"]:
        x, y = cell["box"][0] + layout["border"], cell["box"][1] + layout["border"]
        from PIL import Image

        with Image.open(state.output_dir / manifest["points"][cell["point"]]["files"][0]) as picture:
            expected = np.asarray(picture.convert("RGB"))
        s = layout["scale"]
        assert np.array_equal(sheet[y:y + 32 * s:s, x:x + 32 * s:s], expected)
    assert "sweep finished" in ctl.status


def test_stop_ends_the_sweep_between_points_and_running_it_again_resumes(ctl, tmp_path):
    ctl.graph.set_value("7", "steps", 25)
    ctl.select(["5"])
    session = SweepSession(ctl)
    session.take_selection()
    session.set_axis(0, "5.seed", "1..6")
    session.output_dir = tmp_path / "kept"
    assert session.start() is None
    stopped = []

    def stop_after_first_point():
        if session.state.done >= 1 and not stopped:
            stopped.append(True)
            ctl.interrupt()  # what Stop and Esc do

    drive(ctl, session, on_frame=stop_after_first_point)
    first = session.state
    assert first.status == "interrupted" and 1 <= first.done < 6, first
    assert not ctl.runner.running and "stopped after" in ctl.status

    ctl.graph.set_value("7", "steps", 25)
    assert session.start() is None
    drive(ctl, session)
    assert session.state.status == "ok" and session.state.skipped == first.done and session.state.done == 6
