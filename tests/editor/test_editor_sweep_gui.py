"""The Sweep window in the real editor on a virtual screen (Xvfb): opened on the selected
nodes, a bad value named in it, a 2x2 sweep of the bundled model started with the real
mouse on its Run button, and the contact sheet drawn in the window (pixels, not blank)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from nodeflow.editor.images import fit_rgba
from tests.editor.test_editor_gui import display, start_editor  # noqa: F401  (fixtures)
from tests.support.server_harness import default_workflow

pytestmark = pytest.mark.gui


def test_sweep_window_runs_a_two_by_two_sweep_and_draws_its_sheet(start_editor, tmp_path):
    path = tmp_path / "small.json"
    path.write_text(json.dumps(default_workflow(steps=2)))
    editor = start_editor(path, NODEFLOW_TEST_REGISTRY="installed")
    assert editor.request("sweep_open")["shown"] is False  # nothing selected: the status bar says what to do
    assert "select the node" in editor.state()["status"]

    editor.request("select", nodes=["5", "6"])
    assert editor.request("sweep_open")["shown"] is True
    editor.request("sweep_set", axes=[["5.seed", "-1..1"]])
    error = editor.state()["sweep"]["error"]
    assert error.startswith("Noise #5: ") and "'seed'" in error and "-1" in error

    editor.request("sweep_set", axes=[["5.seed", "1..2"], ["6.scale", "4,6"]])
    editor.frames_pass(3)
    sweep = editor.state()["sweep"]
    assert sweep["error"] == "" and sweep["cost"].startswith("4 point(s), ")
    assert "already in the cache" in sweep["cost"]

    x, y, w, h = sweep["run_button"]
    editor.xdotool("mousemove", str(int(x + w / 2)), str(int(y + h / 2)))
    editor.frames_pass(3)
    editor.xdotool("click", "1")
    done = editor.wait_for(lambda s: s["sweep"]["status"] not in ("idle", "running"), timeout=180)["sweep"]
    assert done["status"] == "ok" and done["done"] == 4 and done["points_bar"] == 1.0, done
    assert done["output_dir"] in done["folder"] and done["sheet"]
    assert sorted(p.name for p in (tmp_path / done["output_dir"]).iterdir() if p.name.startswith("000")) == [
        "0000_seed-1_scale-4.0.png", "0001_seed-1_scale-6.0.png", "0002_seed-2_scale-4.0.png", "0003_seed-2_scale-6.0.png"]

    editor.wait_for(lambda s: s["sweep"]["sheet_shown"])
    editor.frames_pass(5)
    screen = np.asarray(editor.screenshot(tmp_path / "sweep.png")).astype(int)
    sx, sy, sw, sh = (int(v) for v in editor.state()["sweep"]["sheet_rect"])  # after the layout settled
    shown = screen[sy:sy + sh, sx:sx + sw]
    with Image.open(tmp_path / done["sheet"]) as sheet:
        expected = (fit_rgba(sheet.convert("RGB"), sw, sh).reshape(sh, sw, 4)[..., :3] * 255).round().astype(int)
    assert shown.std() > 30  # not blank: white sheet, dark frames, four pictures
    assert np.abs(shown - expected).mean() < 4, np.abs(shown - expected).mean()
