"""Window tests of the explain workflows: opened in the real editor with the installed
packs and run on the bundled model, their plots and strips are drawn inside the
Preview Image nodes (pixels, not blank), and a Sampler previews the view its preview
field picks, step by step."""

from __future__ import annotations

import numpy as np
import pytest

from tests.editor.test_editor_gui import display, start_editor  # noqa: F401  (the window fixtures)
from tests.support import WORKFLOWS

pytestmark = pytest.mark.gui


def drawn(editor, tmp_path, node_ids, name):
    """The on-screen crops of the pictures inside ``node_ids``, once all are shown."""
    state = editor.wait_for(lambda s: all(n in s["thumb_rects"] and s["thumb_rects"][n][2] > 8 for n in node_ids),
                            timeout=60)
    editor.frames_pass(4)
    screen = np.asarray(editor.screenshot(tmp_path / f"{name}.png")).astype(np.float32)
    crops = {}
    for node_id in node_ids:
        x, y, w, h = (int(v) for v in state["thumb_rects"][node_id])
        crops[node_id] = screen[y: y + h, x: x + w]
    return crops


def preview_nodes(state):
    return sorted((nid for nid, n in state["nodes"].items() if n["type"] == "PreviewImage"), key=int)


def test_schedules_workflow_draws_its_plot_inside_the_preview_node(start_editor, tmp_path):
    editor = start_editor(WORKFLOWS / "explain" / "schedules.json", NODEFLOW_TEST_REGISTRY="installed")
    assert editor.request("run")["refused"] is None
    done = editor.wait_for(lambda s: s["run"]["status"] != "running", timeout=120)
    assert done["run"]["status"] == "ok", done["run"]
    (crop,) = drawn(editor, tmp_path, preview_nodes(done), "schedules").values()
    assert crop.size and crop.std() > 20  # a white plot with lines and text, not a blank box
    white = np.all(crop > 235, axis=-1).mean()
    assert 0.15 < white < 0.98, white  # the plot's white ground inside the dark frame of the thumbnail
    coloured = (crop.max(axis=-1) - crop.min(axis=-1)) > 60  # the schedules' coloured lines
    assert coloured.mean() > 0.005


def test_sampler_insides_workflow_draws_its_strips_and_previews_the_cfg_difference(start_editor, tmp_path):
    editor = start_editor(WORKFLOWS / "explain" / "sampler-insides.json", NODEFLOW_TEST_REGISTRY="installed")
    assert editor.request("run")["refused"] is None
    done = editor.wait_for(lambda s: s["run"]["status"] != "running", timeout=180)
    assert done["run"]["status"] == "ok", done["run"]
    # The last sampler to run previewed each of its 20 steps (the insides node and the live one both do).
    assert done["run"]["steps_previewed"] >= 20
    ids = preview_nodes(done)
    crops = drawn(editor, tmp_path, ids, "insides")
    for node_id, crop in crops.items():
        assert crop.size and crop.std() > 15, (node_id, crop.std())
    strips = max(crops.values(), key=lambda c: c.shape[0] * c.shape[1] if c.shape[0] > c.shape[1] * 0.8 else 0)
    colourful = (strips.max(axis=-1) - strips.min(axis=-1)) > 60
    assert colourful.mean() > 0.2  # the rows of latents and noise are many colours
