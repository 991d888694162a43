"""ComfyUI workflows load like our own: API and UI formats (schema 0.4 and 1) and PNGs.

The fixtures in tests/fixtures/comfyui/ are written by hand from ComfyUI's public file
formats. Each is converted, run on the tiny SD model and compared with the equivalent
native workflow: the same image, bit for bit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import nodeflow.api as api  # noqa: E402
from nodeflow import RunSettings  # noqa: E402
from nodeflow.model.registry import default_registry  # noqa: E402
from nodeflow.files.workflow import WorkflowError  # noqa: E402
from nodeflow.files.open import load_workflow, workflow_from_dict  # noqa: E402
from nodes.diffusion.comfyui import steps_and_denoise  # noqa: E402
from tests.support.tiny_models import shared_tiny_sd  # noqa: E402
from tests.support import FIXTURES, ROOT

FIXTURES = FIXTURES / "comfyui"
PROMPT, NEGATIVE, SEED, STEPS, SCALE = "a red circle on a blue background", "blurry", 1234, 3, 7.5


@pytest.fixture(scope="module")
def registry():
    return default_registry()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Settings with a checkpoints folder holding the tiny model as ``tiny-sd``."""
    model = shared_tiny_sd(tmp_path_factory)
    return RunSettings(model_folders={"checkpoints": [model.parent]})


def _run(flow: api.Flow, models, tmp_path: Path, name: str) -> np.ndarray:
    result = flow.run(output_dir=tmp_path / name, device="cpu", settings=models)
    saved = [out["images"] for nid, out in result.outputs.items() if flow.graph.nodes[nid].type == "SaveImage"]
    assert len(saved) == 1
    return saved[0].numpy()


@pytest.fixture(scope="module")
def native_image(models, tmp_path_factory):
    """The same text-to-image graph, built with nodeflow's own nodes."""
    flow = api.new(device="cpu")
    flow.add("Checkpoint", "ckpt", checkpoint="tiny-sd")
    flow.add("TextEncoder", "pos", text=PROMPT)
    flow.add("TextEncoder", "neg", text=NEGATIVE)
    flow.add("EmptyLatent", "latent", width=32, height=32, batch=1)
    flow.add("Noise", "noise", seed=SEED)
    flow.add("CFG", "cfg", scale=SCALE)
    flow.add("Sampler", "sampler", sampler="euler", schedule="normal", steps=STEPS)
    flow.add("VAEDecode", "decode")
    flow.add("SaveImage", "save")
    for source, target in [
        ("ckpt.clip", "pos.clip"), ("ckpt.clip", "neg.clip"), ("ckpt.model", "latent.model"),
        ("ckpt.model", "cfg.model"), ("pos.conditioning", "cfg.positive"), ("neg.conditioning", "cfg.negative"),
        ("noise.noise", "sampler.noise"), ("cfg.guider", "sampler.guider"), ("latent.latent", "sampler.latent"),
        ("sampler.latent", "decode.latent"), ("ckpt.vae", "decode.vae"), ("decode.image", "save.images"),
    ]:
        flow.connect(source, target)
    return _run(flow, models, tmp_path_factory.mktemp("native"), "native")


@pytest.mark.parametrize("fixture", ["txt2img_api.json", "txt2img_ui_v04.json", "custom_sampler_ui_v1.json",
                                     # the body a script POSTs to /prompt, with a "16:5" (subgraph-expanded) id
                                     "prompt_request_body_api.json"])
def test_comfyui_file_runs_to_the_same_image_as_the_native_workflow(fixture, models, native_image, tmp_path):
    flow = api.open(FIXTURES / fixture, device="cpu")
    assert np.array_equal(_run(flow, models, tmp_path, "converted"), native_image)


def test_comfyui_png_runs_to_the_same_image(models, native_image, tmp_path):
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()  # as ComfyUI writes them: the API graph in "prompt", the UI graph in "workflow"
    info.add_text("prompt", (FIXTURES / "txt2img_api.json").read_text())
    info.add_text("workflow", (FIXTURES / "txt2img_ui_v04.json").read_text())
    png = tmp_path / "ComfyUI_00001_.png"
    Image.new("RGB", (8, 8)).save(png, pnginfo=info)

    flow = api.open(png, device="cpu")
    assert flow.graph.nodes["4"].pos == (26.0, 474.0)  # the UI graph was preferred: positions kept
    assert np.array_equal(_run(flow, models, tmp_path, "png"), native_image)

    # A UI graph with an editor-only custom node fails; the API graph still loads, and says why.
    ui = json.loads((FIXTURES / "txt2img_ui_v04.json").read_text())
    ui["nodes"].append({"id": 99, "type": "Fast Groups Bypasser (rgthree)", "pos": [0, 0], "mode": 0})
    info = PngInfo()
    info.add_text("prompt", (FIXTURES / "txt2img_api.json").read_text())
    info.add_text("workflow", json.dumps(ui))
    Image.new("RGB", (8, 8)).save(png, pnginfo=info)
    fallback = load_workflow(png, default_registry())
    assert "Fast Groups Bypasser (rgthree) (node 99)" in fallback.meta["import_note"]
    assert fallback.graph.nodes["3"].type == "Sampler"

    only_prompt = PngInfo()
    only_prompt.add_text("prompt", (FIXTURES / "txt2img_api.json").read_text())
    Image.new("RGB", (8, 8)).save(png, pnginfo=only_prompt)
    assert load_workflow(png, default_registry()).graph.nodes["3"].type == "Sampler"


def test_ui_format_details_are_converted(registry):
    workflow = load_workflow(FIXTURES / "txt2img_ui_v04.json", registry)
    graph = workflow.graph
    # KSampler expands to Sampler + Noise + CFG; the seed comes from the primitive node
    # (not the stale widget value), and "randomize" after it is not taken for steps.
    assert graph.nodes["3"].values["steps"] == STEPS
    assert graph.nodes["3.noise"].values["seed"] == SEED
    assert graph.nodes["3.cfg"].values["scale"] == SCALE
    # The Reroute is gone: the prompt feeds the guider directly.
    assert graph.link_into("3.cfg", "positive").source == "6"
    assert graph.nodes["6"].title == "Positive"
    # Bypassed stays bypassed (and passes its latent on); muted nodes are dropped.
    assert graph.nodes["13"].mode == "bypass"
    assert "12" not in graph.nodes and "10" not in graph.nodes and "11" not in graph.nodes
    assert graph.nodes["4"].pos == (26.0, 474.0)
    assert workflow.ui["groups"][0]["title"] == "Model"
    notes = [n for n in graph.nodes.values() if n.type == "Note"]  # the note stays on the canvas
    assert [n.values["text"] for n in notes] == ["Written by hand for nodeflow's import tests."]
    assert notes[0].pos is not None
    assert "notes" not in workflow.meta


def test_unsupported_node_types_are_all_listed_in_one_error(registry):
    data = json.loads((FIXTURES / "txt2img_api.json").read_text())
    # Custom-node types (not ComfyUI built-ins), which nodeflow does not have.
    data["10"] = {"class_type": "UltimateSDUpscale", "inputs": {"upscale_by": 2}}
    data["11"] = {"class_type": "UltimateSDUpscale", "inputs": {"upscale_by": 3}}
    data["12"] = {"class_type": "IPAdapterApply", "inputs": {"model": ["4", 0], "clip": ["4", 1]}}
    data["3"]["inputs"]["sampler_name"] = "dpmpp_2s_ancestral"
    with pytest.raises(WorkflowError) as error:
        workflow_from_dict(data, registry)
    message = str(error.value)
    assert "IPAdapterApply (node 12)" in message
    assert "UltimateSDUpscale (nodes 10, 11)" in message
    assert "node 3 (KSampler): sampler_name 'dpmpp_2s_ancestral' has no nodeflow equivalent" in message


def _api_with(**entries):
    data = json.loads((FIXTURES / "txt2img_api.json").read_text())
    data.update(entries)
    return data


MALFORMED_API = {
    "no class_type": ({"20": {"inputs": {"text": "x"}}}, "node 20 has no class_type"),
    "not an object": ({"20": "KSampler"}, "node 20 must be an object with 'class_type' and 'inputs', not a string"),
    "class_type number": ({"20": {"class_type": 5, "inputs": {}}}, "node 20: 'class_type' must be a node type name, not 5"),
    "inputs list": ({"20": {"class_type": "CLIPTextEncode", "inputs": ["x"]}},
                    "node 20: 'inputs' must be an object, not a list"),
    "link without index": ({"20": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4"], "text": "x"}}},
                           "node 20 input 'clip': a link must be [node id, output index], not ['4']"),
    "link index text": ({"20": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", "1"], "text": "x"}}},
                        "node 20 input 'clip': the link's output index must be a whole number, not '1'"),
    "link to a missing node": ({"20": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["99", 1], "text": "x"}}},
                               "node 20 input 'clip' links to node 99, which is not in the workflow"),
}


@pytest.mark.parametrize("entries, expected", MALFORMED_API.values(), ids=MALFORMED_API.keys())
def test_a_malformed_api_entry_is_named_with_its_field(registry, entries, expected):
    with pytest.raises(WorkflowError) as error:
        workflow_from_dict(_api_with(**entries), registry)
    assert "cannot import this ComfyUI workflow, malformed nodes: " in str(error.value)
    assert expected in str(error.value)


def test_a_document_of_api_entries_none_with_a_class_type_is_still_read_as_comfyui(registry):
    with pytest.raises(WorkflowError, match="node 3 has no class_type") as error:
        workflow_from_dict({"3": {"inputs": {"seed": 1}}}, registry)
    assert "'format' key" not in str(error.value)


def test_every_malformed_api_entry_is_listed_in_one_error(registry):
    data = _api_with(**{"20": {"inputs": {}}, "21": [1, 2], "22": {"class_type": "VAEDecode",
                                                                   "inputs": {"samples": ["3"], "vae": ["40", 2]}}})
    with pytest.raises(WorkflowError) as error:
        workflow_from_dict(data, registry)
    message = str(error.value)
    for part in ("node 20 has no class_type", "node 21 must be an object", "node 22 input 'samples': a link must be",
                 "node 22 input 'vae' links to node 40"):
        assert part in message


def test_an_api_list_value_wrapped_in_value_is_unwrapped(registry):
    data = _api_with()
    data["6"]["inputs"]["text"] = {"__value__": "a wrapped prompt"}
    assert workflow_from_dict(data, registry).graph.nodes["6"].values["text"] == "a wrapped prompt"


def test_clip_set_last_layer_becomes_clip_skip(registry):
    data = json.loads((FIXTURES / "txt2img_api.json").read_text())
    data["10"] = {"class_type": "CLIPSetLastLayer", "inputs": {"stop_at_clip_layer": -2, "clip": ["4", 1]}}
    data["11"] = {"class_type": "Reroute", "inputs": {"input": ["10", 0]}}
    data["6"]["inputs"]["clip"] = ["11", 0]
    graph = workflow_from_dict(data, registry).graph
    assert graph.nodes["6"].values["clip_skip"] == 2 and graph.link_into("6", "clip").source == "4"
    assert graph.nodes["7"].values["clip_skip"] == 1  # its clip does not pass through the layer node


def test_denoise_keeps_comfyuis_step_count():
    # ComfyUI runs `steps` steps of a schedule made for steps/denoise steps.
    assert steps_and_denoise(10, 0.5) == (20, 0.5)
    total, denoise = steps_and_denoise(7, 0.3)
    assert total == 23 and int(total * denoise) == 7
    assert steps_and_denoise(20, 1.0) == (20, 1.0)


def test_sampler_and_scheduler_names_are_mapped(registry):
    data = json.loads((FIXTURES / "txt2img_api.json").read_text())
    data["3"]["inputs"].update(sampler_name="uni_pc_bh2", scheduler="sgm_uniform", denoise=0.5, steps=10)
    sampler = workflow_from_dict(data, registry).graph.nodes["3"].values
    assert (sampler["sampler"], sampler["schedule"], sampler["steps"], sampler["denoise"]) == ("unipc_bh2", "simple", 20, 0.5)
    data["3"]["inputs"]["sampler_name"] = "uni_pc"
    assert workflow_from_dict(data, registry).graph.nodes["3"].values["sampler"] == "unipc_bh1"


def test_comfyuis_two_unipc_samplers_are_two_diffusers_configurations():
    """ComfyUI's uni_pc is UniPC's bh1 variant, uni_pc_bh2 its bh2, both third order on the
    data prediction with lower orders at the end; each name gives that diffusers config."""
    from nodes.diffusion.comfyui import SAMPLER_NAMES
    from nodes.diffusion.impl.samplers import make_scheduler
    from tests.support.tiny_models import SCHEDULER_CONFIG

    configs = {name: make_scheduler(SAMPLER_NAMES[name], "normal", SCHEDULER_CONFIG).config
               for name in ("uni_pc", "uni_pc_bh2")}
    for name, variant, final in (("uni_pc", "bh1", "sigma_min"), ("uni_pc_bh2", "bh2", "zero")):
        config = configs[name]
        assert (config.solver_type, config.solver_order, config.predict_x0, config.lower_order_final,
                config.final_sigmas_type, list(config.disable_corrector)) == (variant, 3, True, True, final, []), name


def test_a_registry_without_the_diffusion_nodes_says_what_it_is(tmp_path):
    from tests.support.testpack import make_registry

    with pytest.raises(WorkflowError, match="looks like a ComfyUI workflow.*not installed"):
        load_workflow(FIXTURES / "txt2img_api.json", make_registry())


def test_import_command_writes_a_native_workflow(tmp_path):
    out = tmp_path / "converted.json"
    done = subprocess.run(
        [sys.executable, "-m", "nodeflow.cli", "import", str(FIXTURES / "custom_sampler_ui_v1.json"), "-o", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "ComfyUI workflow (schema 1)" in done.stdout
    saved = json.loads(out.read_text())
    assert saved["format"] == "nodeflow.workflow"
    assert {n["type"] for n in saved["nodes"]} >= {"Sampler", "CFG", "Noise", "Checkpoint"}

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"1": {"class_type": "UltimateSDUpscale", "inputs": {}}}))  # a custom node
    failed = subprocess.run(
        [sys.executable, "-m", "nodeflow.cli", "import", str(bad), "-o", str(tmp_path / "x.json")],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert failed.returncode == 2 and "UltimateSDUpscale (node 1)" in failed.stderr
    assert not (tmp_path / "x.json").exists()  # nothing half-imported


def test_disable_noise_imports_as_our_disable_noise(registry):
    doc = json.loads((FIXTURES / "custom_sampler_ui_v1.json").read_text())
    (noise,) = [n for n in doc["nodes"] if n["type"] == "RandomNoise"]
    noise["type"], noise["widgets_values"] = "DisableNoise", []
    noise.pop("inputs", None)
    graph = workflow_from_dict(doc, registry).graph
    (imported,) = [n for n in graph.nodes.values() if n.type in ("Noise", "DisableNoise")]
    assert imported.type == "DisableNoise"
    sampler = next(nid for nid, n in graph.nodes.items() if n.type == "Sampler")
    assert graph.link_into(sampler, "noise").source == imported.id


# ------------------------------------------------------------ older and newer file forms
@pytest.mark.parametrize("fixture", ["boolean_seed_ui_v04.json", "subgraph_ui_v1.json", "txt2img_animated.webp"])
def test_older_and_newer_comfyui_forms_run_to_the_same_image(fixture, models, native_image, tmp_path):
    # boolean_seed: KSampler's widgets are [seed, true, steps, ...] (older ComfyUI) and
    # "EmptyLatentImage " has a trailing space; subgraph: the prompts sit in a subgraph
    # that holds another; the WebP is animated and carries both graphs in EXIF.
    flow = api.open(FIXTURES / fixture, device="cpu")
    assert np.array_equal(_run(flow, models, tmp_path, "converted"), native_image)


def test_a_boolean_seed_control_does_not_shift_the_values(registry):
    graph = load_workflow(FIXTURES / "boolean_seed_ui_v04.json", registry).graph
    assert graph.nodes["3.noise"].values["seed"] == SEED
    assert (graph.nodes["3"].values["steps"], graph.nodes["3"].values["sampler"]) == (STEPS, "euler")
    assert graph.nodes["3.cfg"].values["scale"] == SCALE
    assert graph.nodes["5"].type == "EmptyLatent"


def test_subgraphs_are_inlined_with_titles_and_positions(registry):
    graph = load_workflow(FIXTURES / "subgraph_ui_v1.json", registry).graph
    positive, negative = graph.nodes["30:6"], graph.nodes["30:7:1"]  # ComfyUI's own ids for inner nodes
    assert positive.title == "Positive" and positive.values["text"] == PROMPT
    assert negative.values["text"] == NEGATIVE
    # the subgraph's top-left inner node lands where the instance was, the rest keep their offsets
    assert positive.pos == (400.0, 100.0) and negative.pos == (400.0, 340.0)
    assert graph.link_into("30:6", "clip").source == "4" and graph.link_into("30:7:1", "clip").source == "4"
    assert graph.link_into("21", "positive").source == "30:6"
    assert graph.link_into("21", "negative").source == "30:7:1"


def test_a_subgraph_with_an_unsupported_node_names_it(registry):
    data = json.loads((FIXTURES / "subgraph_ui_v1.json").read_text())
    inner = data["definitions"]["subgraphs"][1]["nodes"][0]
    inner["type"] = "StyleModelApply"
    with pytest.raises(WorkflowError, match=r"StyleModelApply \(node 30:7:1\)"):
        workflow_from_dict(data, registry)


def test_a_webp_without_a_workflow_says_so(tmp_path):
    from PIL import Image

    plain = tmp_path / "plain.webp"
    Image.new("RGB", (8, 8)).save(plain)
    with pytest.raises(WorkflowError, match="carries no workflow"):
        load_workflow(plain, default_registry())
    broken = tmp_path / "broken.webp"
    broken.write_bytes((FIXTURES / "txt2img_animated.webp").read_bytes()[:200])
    with pytest.raises(WorkflowError, match="truncated"):
        load_workflow(broken, default_registry())


def test_a_prompt_request_body_says_what_it_was_imported_from(registry):
    from nodeflow.files.importers import convert_foreign

    data = json.loads((FIXTURES / "prompt_request_body_api.json").read_text())
    assert convert_foreign(data, registry)["meta"]["imported_from"] == "ComfyUI API format (a /prompt request body)"
    # an object with keys a /prompt body does not have is not taken for one
    with pytest.raises(WorkflowError, match="not a nodeflow workflow"):
        convert_foreign({**data, "workflow": {}}, registry)


@pytest.mark.parametrize("picked", ["photo.png [input]", "photo.png [output]", "photo.png"])
def test_an_image_name_annotated_with_comfyuis_folder_loads_the_file_itself(picked, registry, tmp_path):
    """ComfyUI saves a picked image as "photo.png [input]" (or [output], [temp]); the file is photo.png."""
    from PIL import Image

    from nodeflow import RunContext

    Image.new("RGB", (16, 8), (200, 10, 10)).save(tmp_path / "photo.png")
    data = {"1": {"class_type": "LoadImage", "inputs": {"image": picked, "upload": "image"}},
            "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    workflow = workflow_from_dict(data, registry)
    assert workflow.graph.nodes["1"].values["image"] == "photo.png"
    image = registry.get("LoadImage")().run(RunContext(node_id="1", input_dir=str(tmp_path)),
                                            image=workflow.graph.nodes["1"].values["image"])[0]
    assert tuple(image.shape) == (1, 8, 16, 3)
