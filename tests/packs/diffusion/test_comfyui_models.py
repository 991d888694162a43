"""ComfyUI workflows with models of other kinds (VAE file, LoRA, ControlNet, inpainting, SDXL
text) import onto nodeflow's nodes and run; the built-in types nodeflow refuses are named
with the reason, and the table in docs/comfyui.md matches the mapping code."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import nodeflow.api as api  # noqa: E402
from nodeflow import RunSettings  # noqa: E402
from nodeflow.files.open import workflow_from_dict  # noqa: E402
from nodeflow.files.workflow import WorkflowError  # noqa: E402
from nodeflow.model.registry import default_registry  # noqa: E402
from tests.packs.diffusion.test_controlnet import controlnets, hint_dir  # noqa: E402,F401  (fixtures)
from tests.packs.diffusion.test_lora import loras  # noqa: E402,F401
from tests.packs.diffusion.test_vae_loader import folders as vae_folders  # noqa: E402,F401
from tests.support import FIXTURES  # noqa: E402
from tests.support.tiny_models import shared_tiny_sd  # noqa: E402


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return shared_tiny_sd(tmp_path_factory)


def test_a_ui_workflow_with_a_lora_a_controlnet_and_a_vae_file_imports_and_runs(
    tiny_sd, loras, controlnets, hint_dir, vae_folders, tmp_path  # noqa: F811
):
    flow = api.open(FIXTURES / "comfyui" / "models_ui_v04.json", device="cpu")
    graph = flow.graph
    assert graph.nodes["2"].type == "LoRA"
    assert (graph.nodes["2"].values["strength_model"], graph.nodes["2"].values["strength_clip"]) == (0.8, 0.6)
    assert graph.nodes["7"].type == "ControlNetApplyAdvanced"
    assert (graph.nodes["7"].values["strength"], graph.nodes["7"].values["end_percent"]) == (0.9, 0.75)
    assert graph.nodes["6"].values["control_net_name"] == "tiny_cn"
    assert graph.nodes["8"].type == "VAELoader" and graph.nodes["8"].values["vae_name"] == "bare.safetensors"
    assert graph.link_into("11", "vae").source == "8" and graph.link_into("10.cfg", "positive").source == "7"

    flow.set("1.checkpoint", tiny_sd.name)
    settings = RunSettings(model_folders={
        "checkpoints": [tiny_sd.parent], "loras": [loras.folder], "controlnet": [controlnets], "vae": [vae_folders[1]],
    })
    first = flow.run(output_dir=tmp_path, input_dir=hint_dir, settings=settings).outputs["12"]["images"].numpy()
    assert first.shape == (1, 32, 32, 3)
    flow.set("2.strength_model", 0.0)
    second = flow.run(output_dir=tmp_path, input_dir=hint_dir, settings=settings).outputs["12"]["images"].numpy()
    assert np.abs(first - second).max() > 1e-3  # the LoRA is wired in


def test_api_format_inpainting_and_sdxl_text_nodes_map_their_values():
    data = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sdxl.safetensors"}},
        "2": {"class_type": "CLIPTextEncodeSDXL", "inputs": {
            "clip": ["1", 1], "width": 2048, "height": 1536, "crop_w": 8, "crop_h": 16, "target_width": 1024,
            "target_height": 768, "text_g": "a castle", "text_l": "a castle, detailed"}},
        "3": {"class_type": "CLIPTextEncodeSDXLRefiner", "inputs": {
            "clip": ["1", 1], "ascore": 2.5, "width": 1024, "height": 1024, "text": "blurry"}},
        "4": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
        "5": {"class_type": "VAEEncodeForInpaint", "inputs": {
            "pixels": ["4", 0], "vae": ["1", 2], "mask": ["6", 0], "grow_mask_by": 12}},
        "6": {"class_type": "LoadImage", "inputs": {"image": "mask.png"}},
        "7": {"class_type": "InpaintModelConditioning", "inputs": {
            "positive": ["2", 0], "negative": ["3", 0], "vae": ["1", 2], "pixels": ["4", 0], "mask": ["6", 0],
            "noise_mask": False}},
        "8": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["1", 0], "lora_name": "x.safetensors",
                                                             "strength_model": -1.5}},
    }
    # (LoadImage's MASK output is the other half of issue 11; feed the masks from an image here.)
    graph = workflow_from_dict(data, default_registry()).graph
    sdxl = graph.nodes["2"].values
    assert graph.nodes["2"].type == "TextEncoderSDXL"
    assert (sdxl["width"], sdxl["crop_h"], sdxl["target_height"], sdxl["text_l"]) == (2048, 16, 768, "a castle, detailed")
    assert graph.nodes["3"].type == "TextEncoderSDXLRefiner" and graph.nodes["3"].values["ascore"] == 2.5
    assert graph.nodes["5"].type == "VAEEncodeForInpaint" and graph.nodes["5"].values["grow_mask_by"] == 12
    assert graph.link_into("5", "image").source == "4"
    assert graph.nodes["7"].values["noise_mask"] is False and graph.link_into("7", "negative").source == "3"
    assert graph.nodes["8"].type == "LoRAModelOnly" and graph.nodes["8"].values["strength_model"] == -1.5


def test_refused_built_in_types_are_named_with_the_reason():
    data = {
        "1": {"class_type": "StyleModelLoader", "inputs": {"style_model_name": "s.safetensors"}},
        "2": {"class_type": "StyleModelApply", "inputs": {"conditioning": ["9", 0], "style_model": ["1", 0],
                                                          "clip_vision_output": ["8", 0]}},
        "3": {"class_type": "HypernetworkLoader", "inputs": {"hypernetwork_name": "h.pt", "strength": 1.0}},
    }
    with pytest.raises(WorkflowError) as error:
        workflow_from_dict(data, default_registry())
    message = str(error.value)
    assert "StyleModelLoader (node 1): T2I style models are not supported" in message
    assert "StyleModelApply (node 2): T2I style models are not supported" in message
    assert "HypernetworkLoader (node 3): hypernetworks are not supported" in message
