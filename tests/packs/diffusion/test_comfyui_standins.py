"""Issue 11's criterion, kept checked: every ComfyUI fixture of ours that imports and
validates also runs, headless, with tiny stand-in models of the right kind put under the
names it references (benchmarks/comfyui_standins.py, the reviewer's procedure)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks import comfyui_standins  # noqa: E402
from tests.support import FIXTURES  # noqa: E402


@pytest.mark.slow
def test_every_fixture_that_validates_runs_with_stand_in_models(tmp_path):
    rows = comfyui_standins.measure(FIXTURES / "comfyui", cache=tmp_path / "cache", max_side=64, max_steps=2)
    valid = [r for r in rows if r.valid]
    assert len(valid) >= 20  # the fixtures that validate today; a drop is a regression of its own
    failed = [f"{r.path.name}: {r.reason}" for r in valid if not r.ran]
    assert not failed, "\n".join(failed)


def _graph(name: str):
    from nodeflow.files.open import load_workflow
    from nodeflow.model.registry import default_registry

    return load_workflow(FIXTURES / "comfyui" / name, default_registry()).graph


def test_an_inpainting_checkpoint_gets_a_nine_channel_stand_in_by_its_name_or_its_graph(tmp_path):
    from nodes.diffusion.estimates import safetensors_header

    graph = _graph("inpaint_model_api.json")
    assert comfyui_standins.checkpoint_family(graph, "1", graph.nodes["1"], "sd-v1-5-inpainting.ckpt", "sd1") == "sd1_inpaint"
    # no name to go by: the model samples InpaintModelConditioning's conditioning
    assert comfyui_standins.checkpoint_family(graph, "1", graph.nodes["1"], "realistic.safetensors", "sd1") == "sd1_inpaint"
    plain = _graph("txt2img_api.json")
    loader = next(i for i, n in plain.nodes.items() if n.type == "Checkpoint")
    assert comfyui_standins.checkpoint_family(plain, loader, plain.nodes[loader], "realistic.safetensors", "sd1") == "sd1"

    graph.set_value("1", "checkpoint", "realistic.safetensors")
    placed = comfyui_standins.place_standins(graph, comfyui_standins.StandIns(tmp_path / "cache"), tmp_path / "run", "sd1", 64)
    header = safetensors_header(placed.models / "checkpoints" / "realistic.safetensors")
    assert header["model.diffusion_model.input_blocks.0.0.weight"]["shape"][1] == 9  # latent + mask + masked image


def test_a_refiner_is_told_by_its_name_or_by_the_prompt_node_its_clip_feeds():
    graph = _graph("sdxl_refiner_api.json")
    family = comfyui_standins.family_of(graph)
    assert family == "sdxl"
    assert comfyui_standins.checkpoint_family(graph, "4", graph.nodes["4"], "sd_xl_base_1.0.safetensors", family) == "sdxl"
    assert comfyui_standins.checkpoint_family(graph, "12", graph.nodes["12"], "sd_xl_refiner_1.0.safetensors", family) == "sdxl_refiner"
    assert comfyui_standins.checkpoint_family(graph, "12", graph.nodes["12"], "second_stage.safetensors", family) == "sdxl_refiner"


def test_split_text_encoder_files_are_stood_in_by_their_role():
    graph = _graph("split_files_sdxl_ui_v04.json")
    assert comfyui_standins.family_of(graph) == "sdxl"
    loader = next(n for n in graph.nodes.values() if n.type == "DualTextEncoderLoader")
    assert (loader.values["clip_name1"], loader.values["clip_name2"]) == ("clip_g.safetensors", "clip_l.safetensors")
    assert comfyui_standins.clip_family(loader, "clip_name1", "clip_g.safetensors", "sdxl") == "sdxl_g"
    assert comfyui_standins.clip_family(loader, "clip_name2", "clip_l.safetensors", "sdxl") == "sdxl"
    assert comfyui_standins.clip_family(loader, "clip_name2", "te_b.safetensors", "sdxl") == "sdxl_g"  # by position
    single = _graph("split_files_api.json")
    clip = next(n for n in single.nodes.values() if n.type == "TextEncoderLoader")
    assert comfyui_standins.clip_family(clip, "clip_name", "clip_l.safetensors", "sd1") == "sd1"


def test_an_sd15_model_name_beats_sdxl_sized_latents_when_choosing_the_stand_in_family():
    """The published 2_pass_pose_worship template runs SD 1.5 checkpoints and an SD1.5 pose
    ControlNet at 1024 pixels; an SDXL stand-in for it failed in the ControlNet."""
    from nodeflow.files.open import workflow_from_dict
    from nodeflow.model.registry import default_registry

    def graph(controlnet: str):
        return workflow_from_dict({
            "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "majicmixRealistic_v7.safetensors"}},
            "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 1}},
            "11": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": controlnet}},
        }, default_registry()).graph

    assert comfyui_standins.family_of(graph("control_v11p_sd15_openpose_fp16.safetensors")) == "sd1"
    assert comfyui_standins.family_of(graph("openpose.safetensors")) == "sdxl"  # sizes alone still say SDXL


def test_a_megapixels_target_is_capped_as_sizes_are():
    """The published image2image template scales its input to 1 megapixel
    (ImageScaleToTotalPixels): the run with tiny models timed out at 1024 x 1024."""
    from nodeflow.files.open import workflow_from_dict
    from nodeflow.model.registry import default_registry

    graph = workflow_from_dict({
        "1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
        "2": {"class_type": "ImageScaleToTotalPixels", "inputs": {"image": ["1", 0], "upscale_method": "nearest-exact", "megapixels": 1.0}},
        "3": {"class_type": "ImageScaleToTotalPixels", "inputs": {"image": ["1", 0], "upscale_method": "nearest-exact", "megapixels": 0.01}},
    }, default_registry()).graph
    comfyui_standins.cap_costs(graph, 128, 4)
    assert graph.nodes["2"].values["megapixels"] == 0.02
    assert graph.nodes["3"].values["megapixels"] == 0.01
