"""ComfyUI group nodes (``extra.groupNodes``, types ``workflow>NAME`` / ``workflow/NAME``)
import as the nodes inside them and run to the same image as the workflow without them.

The fixtures are reduced from published files (tests/fixtures/comfyui/SOURCES-groupnodes.md).
"""

from __future__ import annotations

import copy
import json
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import nodeflow.api as api  # noqa: E402
from nodeflow.files.open import workflow_from_dict  # noqa: E402
from nodeflow.files.workflow import WorkflowError  # noqa: E402
from nodeflow.model.registry import default_registry  # noqa: E402
from nodeflow.model.validation import validate  # noqa: E402
from tests.packs.diffusion.test_comfyui_import import (  # noqa: E402,F401  (module fixtures)
    FIXTURES, _run, models, native_image, registry)

FLUX, SAMPLING = "groupnode_flux_ui_v04.json", "groupnode_sampling_ui_v04.json"
WHOLE = "groupnode_whole_pipeline_ui_v04.json"  # the whole pipeline in one group, outputs lists left out


def _load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def _graph(doc: dict):
    return workflow_from_dict(copy.deepcopy(doc), default_registry()).graph


def _shape(graph) -> list:
    """The graph without its ids: each node's type and values, each link by types and ports."""
    nodes = sorted((n.type, json.dumps(n.values, sort_keys=True)) for n in graph.nodes.values())
    links = sorted((graph.nodes[l.source].type, l.output, graph.nodes[l.target].type, l.input) for l in graph.links.values())
    return [nodes, links]


@pytest.mark.parametrize("fixture", [FLUX, SAMPLING, WHOLE])
def test_a_workflow_with_a_group_node_validates_and_runs_to_the_native_image(fixture, models, native_image, tmp_path):
    flow = api.open(FIXTURES / fixture, device="cpu")
    assert validate(flow.graph) == []
    assert np.array_equal(_run(flow, models, tmp_path, "grouped"), native_image)


def test_a_group_imports_as_the_same_graph_as_its_nodes_written_out():
    # custom_sampler_ui_v1.json is the same workflow with the sampler nodes in the open
    grouped, plain = _graph(_load(FLUX)), _graph(_load("custom_sampler_ui_v1.json"))
    assert _shape(grouped) == _shape(plain)


def test_inner_nodes_keep_their_titles_and_sit_where_the_instance_was():
    graph = _graph(_load(SAMPLING))
    positive, negative, sampler = graph.nodes["90:0"], graph.nodes["90:1"], graph.nodes["90:2"]
    assert (positive.title, negative.title) == ("Positive", "Negative")
    # the inner top-left node lands at the instance's (400, 100); the others keep their offsets
    assert positive.pos == (400.0, 100.0) and negative.pos == (400.0, 320.0) and sampler.pos == (840.0, 100.0)
    # widget values come from the instance, not from the definition's saved ones
    assert positive.values["text"] == "a red circle on a blue background" and negative.values["text"] == "blurry"
    assert graph.nodes["90:2.noise"].values["seed"] == 1234 and graph.nodes["90:2.cfg"].values["scale"] == 7.5


def test_repeated_input_names_and_external_outputs_map_by_the_frontends_rules():
    graph = _graph(_load(SAMPLING))
    # instance inputs clip, "Negative clip", model, latent_image feed the inner nodes they name
    assert graph.link_into("90:0", "clip").source == "4" and graph.link_into("90:1", "clip").source == "4"
    assert graph.link_into("90:2.cfg", "positive").source == "90:0"
    # output 0 is the positive encoder's (listed in 'external'), so output 1 is the sampler's latent
    assert graph.link_into("8", "latent").source == "90:2"


def test_an_output_used_only_inside_is_not_one_of_the_instances():
    doc = _load(SAMPLING)
    doc["extra"]["groupNodes"]["Sampling"]["external"] = []  # now the latent is output 0 and 1 is none
    with pytest.raises(WorkflowError, match=r"group node 90 \(group 'Sampling'\): output 1 is used, but the group has 1"):
        _graph(doc)
    doc["links"][4][2] = 0
    assert _graph(doc).link_into("8", "latent").source == "90:2"


def test_a_widget_the_group_renamed_is_found_by_its_new_name():
    # the definition's config renames the encoders' "text" to "Positive Prompt" / "Negative Prompt"
    doc = _load(WHOLE)
    instance = doc["nodes"][0]
    instance["inputs"] = [{"name": "Negative Prompt", "type": "STRING", "widget": {"name": "Negative Prompt"},
                           "link": 40}]
    doc["nodes"].append({"id": 11, "type": "PrimitiveNode", "outputs": [{"name": "STRING", "type": "STRING", "links": [40]}],
                         "widgets_values": ["grey"]})
    doc["links"].append([40, 11, 0, 10, 0, "STRING"])
    graph = _graph(doc)
    assert (graph.nodes["10:1"].values["text"], graph.nodes["10:2"].values["text"]) == (
        "a red circle on a blue background", "grey")


def test_the_old_and_new_type_prefixes_name_the_same_group():
    doc = _load(FLUX)
    (instance,) = [n for n in doc["nodes"] if n["id"] == 28]
    instance["type"] = "workflow>FLUX"
    assert _shape(_graph(doc)) == _shape(_graph(_load(FLUX)))


def test_a_widget_converted_to_an_input_inside_the_group_becomes_an_input_of_the_instance(registry):
    doc = _load(SAMPLING)
    inner = doc["extra"]["groupNodes"]["Sampling"]["nodes"][2]  # the KSampler's steps became an input
    inner["inputs"].append({"name": "steps", "type": "INT", "widget": {"name": "steps"}, "link": None})
    (instance,) = [n for n in doc["nodes"] if n["id"] == 90]
    # the converted widget comes last: out of the widget list, into the values' end and the inputs
    instance["widgets_values"] = ["a red circle on a blue background", "blurry", 1234, "fixed", 7.5, "euler", "normal", 1, 3]
    instance["inputs"].append({"name": "steps", "type": "INT", "widget": {"name": "steps"}, "link": None})
    assert _graph(doc).nodes["90:2"].values["steps"] == 3
    doc["nodes"].append({"id": 50, "type": "PrimitiveNode", "outputs": [{"name": "INT", "type": "INT", "links": [9]}],
                         "widgets_values": [4, "fixed"]})
    doc["links"].append([9, 50, 0, 90, 4, "INT"])
    instance["inputs"][-1]["link"] = 9
    assert _graph(doc).nodes["90:2"].values["steps"] == 4  # fed through the instance by a primitive


def test_group_nodes_inside_group_nodes_are_inlined():
    doc = _load(SAMPLING)
    groups = doc["extra"]["groupNodes"]
    inner = groups.pop("Sampling")
    # "Outer" holds one instance of "Sampling" and nothing else: the same inputs, widgets and outputs
    groups["Outer"] = {"nodes": [{"type": "workflow>Sampling", "pos": [0, 0],
                                  "inputs": [{"name": n, "type": t, "link": None} for n, t in
                                             [("clip", "CLIP"), ("Negative clip", "CLIP"), ("model", "MODEL"),
                                              ("latent_image", "LATENT")]],
                                  "outputs": [{"name": "CONDITIONING", "type": "CONDITIONING", "links": []},
                                              {"name": "LATENT", "type": "LATENT", "links": []}],
                                  "widgets_values": [], "index": 0}],
                       "links": [], "external": []}
    groups["Sampling"] = inner
    (instance,) = [n for n in doc["nodes"] if n["id"] == 90]
    instance["type"] = "workflow>Outer"
    graph = _graph(doc)
    assert {"90:0:0", "90:0:1", "90:0:2"} <= set(graph.nodes)
    assert graph.nodes["90:0:1"].values["text"] == "blurry"
    assert graph.link_into("8", "latent").source == "90:0:2"
    assert _shape(graph) == _shape(_graph(_load(SAMPLING)))


def test_a_group_that_contains_itself_is_refused():
    doc = _load(SAMPLING)
    doc["extra"]["groupNodes"]["Sampling"]["nodes"][2]["type"] = "workflow>Sampling"
    with pytest.raises(WorkflowError, match="Sampling"):
        _graph(doc)


def test_a_muted_instance_mutes_the_nodes_inside():
    doc = _load(SAMPLING)
    (instance,) = [n for n in doc["nodes"] if n["id"] == 90]
    instance["mode"] = 2
    graph = _graph(doc)
    assert not any(nid.startswith("90:") for nid in graph.nodes)


# ------------------------------------------------------------------ errors
def test_a_group_with_a_custom_node_type_is_refused_naming_it():
    doc = _load(FLUX)
    doc["extra"]["groupNodes"]["FLUX"]["nodes"][1]["type"] = "SamplerDPMPP_Fancy"
    with pytest.raises(WorkflowError, match=r"group node 28 \(group 'FLUX'\): inner node 1 is a SamplerDPMPP_Fancy"):
        _graph(doc)


@pytest.mark.parametrize("breakage, message", [
    (lambda g: g.pop("nodes"), "the definition has no 'nodes' list"),
    (lambda g: g.update(nodes=[]), "the definition has no inner nodes"),
    (lambda g: g["nodes"][0].pop("type"), "inner node 0 needs a 'type'"),
    (lambda g: g.update(links={"0": 1}), "'links' must be a list"),
    (lambda g: g["links"].append([7, 0, 3, 0]), r"links\[6\] is not \[origin, slot, target, slot\]"),
    (lambda g: g["links"].append([0, 0, 1, 5]), "inner node 28:1 \\(KSamplerSelect\\) has no input slot 5"),
])
def test_a_malformed_group_definition_names_the_node_and_the_group(breakage, message):
    doc = _load(FLUX)
    breakage(doc["extra"]["groupNodes"]["FLUX"])
    with pytest.raises(WorkflowError, match=r"ComfyUI group node 28 \(group 'FLUX'\): " + message):
        _graph(doc)


def test_an_instance_of_an_undefined_group_says_so():
    doc = _load(FLUX)
    del doc["extra"]["groupNodes"]["FLUX"]
    with pytest.raises(WorkflowError, match=r"group node 28 \(group 'FLUX'\): the file's extra.groupNodes does not define"):
        _graph(doc)


def test_an_instance_linked_on_an_input_the_group_lacks_is_refused():
    doc = _load(FLUX)
    (instance,) = [n for n in doc["nodes"] if n["id"] == 28]
    instance["inputs"].append({"name": "extra", "type": "MODEL", "link": 69})
    with pytest.raises(WorkflowError, match=r"group node 28 \(group 'FLUX'\): input 3 \('extra'\) is not an input"):
        _graph(doc)


def test_groups_of_groups_that_multiply_past_the_node_limit_are_refused_before_they_are_built():
    doc = _load(SAMPLING)
    groups = doc["extra"]["groupNodes"]
    # each level holds ten instances of the next: 10^6 nodes if inlined
    for level in range(6):
        inner = f"L{level + 1}" if level < 5 else "Sampling"
        groups[f"L{level}"] = {"nodes": [{"type": f"workflow>{inner}", "inputs": [], "outputs": []}] * 10,
                               "links": [], "external": []}
    (instance,) = [n for n in doc["nodes"] if n["id"] == 90]
    instance["type"], instance["inputs"], instance["widgets_values"] = "workflow>L0", [], []
    doc["links"] = [l for l in doc["links"] if l[1] != 90 and l[3] != 90]
    with pytest.raises(WorkflowError, match=r"more than 5000 nodes once its group nodes are inlined"):
        _graph(doc)


# ------------------------------------------------- group nodes inside subgraph definitions
IN_SUBGRAPH, WRITTEN_OUT = "groupnode_in_subgraph_ui_v1.json", "subgraph_without_groupnode_ui_v1.json"


def test_a_group_node_inside_a_subgraph_runs_as_the_subgraph_with_its_nodes_written_out(models, native_image, tmp_path):
    """A subgraph definition holding a group node instance (``workflow>Prompts``, defined in
    the file's extra.groupNodes) imports as the same graph as that subgraph with the group's
    two encoders in the open, and both run to the native image."""
    grouped, plain = api.open(FIXTURES / IN_SUBGRAPH, device="cpu"), api.open(FIXTURES / WRITTEN_OUT, device="cpu")
    assert validate(grouped.graph) == [] and _shape(grouped.graph) == _shape(plain.graph)
    positive, negative = grouped.graph.nodes["30:1:0"], grouped.graph.nodes["30:1:1"]  # instance 30, group 1, index
    assert (positive.title, positive.values["text"]) == ("Positive", "a red circle on a blue background")
    assert (negative.title, negative.values["text"]) == ("Negative", "blurry")
    assert grouped.graph.link_into("30:1:1", "clip").source == "4"  # the subgraph's input, through the group's
    image = _run(grouped, models, tmp_path, "grouped")
    assert np.array_equal(image, _run(plain, models, tmp_path, "plain")) and np.array_equal(image, native_image)


def test_a_group_node_a_subgraph_uses_but_the_file_does_not_define_names_both():
    doc = _load(IN_SUBGRAPH)
    doc["definitions"]["subgraphs"][0]["nodes"][0]["type"] = "workflow>Missing"
    with pytest.raises(WorkflowError, match=r"subgraph 'Sample': ComfyUI group node 1 \(group 'Missing'\): the file's "
                                            r"extra.groupNodes does not define this group"):
        _graph(doc)


# ------------------------------------------------------------ the group node's own title
def _frames(doc: dict) -> list[tuple[str, set[str]]]:
    """The imported workflow's ui.groups: each frame's title and the nodes whose top-left
    corner lies inside it (the editor's rule for which nodes a frame holds)."""
    workflow = workflow_from_dict(copy.deepcopy(doc), default_registry())
    found = []
    for group in workflow.ui.get("groups") or []:
        (x, y), (w, h) = group["pos"], group["size"]
        held = {nid for nid, n in workflow.graph.nodes.items() if x <= n.pos[0] <= x + w and y <= n.pos[1] <= y + h}
        found.append((group["title"], held))
    return found


def test_a_group_nodes_title_frames_its_inner_nodes():
    """The instance's title (the group's name when it has none, as the frontend shows it) is
    kept as a titled frame around the nodes it became, which the editor draws and collapses."""
    ((title, held),) = _frames(_load(SAMPLING))
    assert title == "Sampling"
    assert {"90:0", "90:1", "90:2", "90:2.noise", "90:2.cfg"} <= held and not held & {"4", "5"}
    doc = _load(SAMPLING)
    next(n for n in doc["nodes"] if n["id"] == 90)["title"] = "Prompts and sampler"
    assert [title for title, _ in _frames(doc)] == ["Prompts and sampler"]


def test_a_group_node_inside_a_subgraph_keeps_its_title_as_a_frame_there():
    assert _frames(_load(IN_SUBGRAPH)) == [("Prompts", {"30:1:0", "30:1:1"})]
    assert _frames(_load(WRITTEN_OUT)) == []


def test_a_group_in_a_group_gives_two_frames_the_outer_around_the_inner():
    doc = _load(SAMPLING)
    groups = doc["extra"]["groupNodes"]
    groups["Outer"] = {"nodes": [{"type": "workflow>Sampling", "title": "Inner", "pos": [0, 0],
                                  "inputs": [{"name": n, "type": t, "link": None} for n, t in
                                             [("clip", "CLIP"), ("Negative clip", "CLIP"), ("model", "MODEL"),
                                              ("latent_image", "LATENT")]],
                                  "outputs": [{"name": "CONDITIONING", "type": "CONDITIONING", "links": []},
                                              {"name": "LATENT", "type": "LATENT", "links": []}],
                                  "widgets_values": [], "index": 0}], "links": [], "external": []}
    next(n for n in doc["nodes"] if n["id"] == 90)["type"] = "workflow>Outer"
    frames = dict(_frames(doc))
    assert set(frames) == {"Outer", "Inner"} and {"90:0:0", "90:0:1", "90:0:2"} <= frames["Inner"] <= frames["Outer"]
    workflow = workflow_from_dict(doc, default_registry())
    outer, inner = sorted(workflow.ui["groups"], key=lambda g: g["title"] != "Outer")
    assert outer["pos"][0] < inner["pos"][0] and outer["size"][0] > inner["size"][0]
