"""What the editor does with the files a user opens and saves, without a window: Save
never overwrites a foreign file or a shipped example, the file dialog's answer names
the file the user meant, imports are laid out without overlaps, and nothing of the
last file (result, selection, red error) is left over after New or Open."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support import testpack
from nodeflow.editor.app import chosen_path, dialog_folder
from nodeflow.editor.controller import EditorController
from nodeflow.editor.events import StatusKind
from nodeflow.editor.layout import any_overlap, estimate_size
from nodeflow.editor.shipped import default_workflow, is_shipped, may_overwrite
from nodeflow.model.registry import default_registry

COMFY = Path(__file__).resolve().parents[1] / "fixtures" / "comfyui"


@pytest.fixture
def ctl(tmp_path):
    testpack.reset()
    return EditorController(testpack.make_registry(), config_folder=tmp_path / "config", autosave_delay=0.0)


@pytest.fixture(scope="module")
def diffusion_registry():
    return default_registry()


def test_saving_a_comfyui_file_never_overwrites_it(tmp_path, diffusion_registry):
    original = tmp_path / "comfy_ui.json"
    shutil.copy(COMFY / "txt2img_ui_v04.json", original)
    before = original.read_bytes()
    ctl = EditorController(diffusion_registry, config_folder=tmp_path / "config")
    ctl.open(original)
    assert ctl.graph.nodes and ctl.path is None  # Ctrl+S becomes Save As
    assert "Save asks where" in ctl.status
    with pytest.raises(ValueError):
        ctl.save()
    # Save As onto the ComfyUI file itself is refused too, with the reason.
    with pytest.raises(ValueError):
        ctl.save(original)
    assert ctl.status_kind is StatusKind.ERROR and "not a nodeflow workflow" in ctl.status
    assert original.read_bytes() == before
    copy = ctl.save(tmp_path / "comfy_ui-nodeflow.json")
    assert may_overwrite(copy) and ctl.path == copy and original.read_bytes() == before


def test_a_shipped_example_opens_without_a_save_target(tmp_path, diffusion_registry):
    example = default_workflow()
    assert example is not None and is_shipped(example)
    before = example.read_bytes()
    ctl = EditorController(diffusion_registry, config_folder=tmp_path / "config")
    ctl.open(example)
    assert ctl.path is None and ctl.opened_from == example
    with pytest.raises(ValueError):
        ctl.save(example)
    assert example.read_bytes() == before
    # The file dialog does not open inside the installed examples.
    assert not dialog_folder(ctl).resolve().is_relative_to(example.parent.resolve())


def test_a_native_workflow_is_saved_in_place(ctl, tmp_path):
    ctl.add_node("Number", (0, 0))
    path = ctl.save(tmp_path / "mine.json")
    ctl.open(path)
    assert ctl.path == path
    ctl.add_node("Add", (300, 0))
    assert ctl.save() == path


def test_the_file_dialog_answer_names_the_file_typed_or_picked(tmp_path):
    # Dear PyGui puts the selected filter's extension on a typed name and joins a typed
    # absolute path to the current folder; the editor reads what the user meant.
    assert chosen_path({"file_name": "x.png", "current_path": str(tmp_path),
                        "file_path_name": str(tmp_path / "x.json")}) == tmp_path / "x.png"
    elsewhere = tmp_path / "other" / "y.png"
    assert chosen_path({"file_name": str(elsewhere), "current_path": str(tmp_path),
                        "file_path_name": str(tmp_path) + str(elsewhere)}) == elsewhere
    assert chosen_path({"file_name": "", "current_path": str(tmp_path),
                        "selections": {"z.png": str(tmp_path / "z.png")}}) == tmp_path / "z.png"
    assert chosen_path({"file_name": "", "current_path": "", "file_path_name": ""}) is None


def test_an_imported_comfyui_graph_is_laid_out_without_overlaps(tmp_path, diffusion_registry):
    ctl = EditorController(diffusion_registry, config_folder=tmp_path / "config")
    for fixture in ("custom_sampler_ui_v1.json", "txt2img_ui_v04.json", "txt2img_api.json"):
        ctl.open(COMFY / fixture)
        rects = [(*n.pos, *estimate_size(diffusion_registry.get(n.type))) for n in ctl.graph.nodes.values()]
        assert not any_overlap(rects), fixture
        for link in ctl.graph.iter_links():  # read left to right
            assert ctl.graph.nodes[link.source].pos[0] < ctl.graph.nodes[link.target].pos[0], (fixture, link)


def test_new_and_open_leave_nothing_of_the_last_file(ctl, tmp_path):
    n = ctl.add_node("Number", (0, 0), {"value": 2.0})
    s = ctl.add_node("Sink", (300, 0))
    ctl.connect(n, "value", s, "value")
    path = ctl.save(tmp_path / "one.json")
    ctl.run()
    ctl.runner.wait(30)
    assert ctl.runner.view.status == "ok" and ctl.runner.view.outputs
    ctl.select([n, s])
    ctl.connect(s, "value", n, "value")  # refused: shown in red
    assert ctl.status_kind is StatusKind.ERROR
    ctl.new()
    assert ctl.runner.view.status == "idle" and not ctl.runner.view.outputs and not ctl.runner.view.images
    assert not ctl.selection and ctl.status_kind is StatusKind.INFO
    ctl.open(path)
    assert not ctl.selection and ctl.runner.view.status == "idle"


def test_a_refusal_stops_being_red_once_the_user_edits_again(ctl):
    f = ctl.add_node("Format")
    m = ctl.add_node("Multiply")
    assert ctl.connect(f, "text", m, "a") is not None
    assert ctl.status_kind is StatusKind.ERROR
    ctl.set_value(m, "b", 4.0)
    assert ctl.status_kind is StatusKind.INFO and "cannot link" not in ctl.status


def test_a_group_nodes_title_frames_the_nodes_it_became_in_the_editor(tmp_path, diffusion_registry):
    """A ComfyUI group node inside a subgraph: its title is a frame holding its two encoders
    (and nothing else), which collapses to hide them."""
    from nodeflow.editor.groups import members

    ctl = EditorController(diffusion_registry, config_folder=tmp_path / "config")
    ctl.open(COMFY / "groupnode_in_subgraph_ui_v1.json")
    (group,) = ctl.groups()
    assert group["title"] == "Prompts"
    assert sorted(members(group, {nid: n.pos for nid, n in ctl.graph.nodes.items()})) == ["30:1:0", "30:1:1"]
    assert ctl.toggle_group(0) and ctl.collapsed_nodes() == {"30:1:0", "30:1:1"}


def test_an_imported_group_still_frames_its_nodes_after_the_layout(tmp_path, diffusion_registry):
    from nodeflow.editor.groups import MoveGroup, group_rect, members
    from nodeflow.editor.commands import Compound, Move

    ctl = EditorController(diffusion_registry, config_folder=tmp_path / "config")
    ctl.open(COMFY / "txt2img_ui_v04.json")
    (group,) = ctl.ui["groups"]
    assert group["title"] == "Model"
    inside = members(group, {nid: n.pos for nid, n in ctl.graph.nodes.items()})
    assert [ctl.graph.nodes[n].type for n in inside] == ["Checkpoint"]
    x, y, w, h = group_rect(group)
    node = ctl.graph.nodes[inside[0]]
    nw, nh = estimate_size(diffusion_registry.get(node.type))
    assert x < node.pos[0] and node.pos[0] + nw < x + w and y < node.pos[1] and node.pos[1] + nh < y + h
    # Moving the group moves its nodes; one undo puts both back.
    before = (list(group["pos"]), node.pos)
    ctl.execute(Compound([MoveGroup(group, (100.0, 50.0)), Move({node.id: (node.pos[0] + 100, node.pos[1] + 50)})]))
    assert group["pos"] == [before[0][0] + 100, before[0][1] + 50] and node.pos == (before[1][0] + 100, before[1][1] + 50)
    ctl.undo()
    assert (group["pos"], ctl.graph.nodes[node.id].pos) == before
