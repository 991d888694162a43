"""Conditioning with areas, step ranges and stacked parts, as the guider applies them.

One model call is checked directly against the UNet: a part with an area is predicted
on that crop of the latent, parts are averaged where they overlap, and a part outside
its step range is left out. A ComfyUI workflow using the nodes imports and runs.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from nodeflow import RunContext, RunSettings  # noqa: E402
from nodes.diffusion.conditioning import ConditioningSetArea, ConditioningSetTimestepRange, ConditioningStack  # noqa: E402
from nodes.diffusion.impl.guidance import Guider  # noqa: E402
from nodes.diffusion.loaders import Checkpoint  # noqa: E402
from nodes.diffusion.text import encode_text  # noqa: E402
from tests.support import FIXTURES  # noqa: E402
from tests.support.tiny_models import shared_tiny_sd  # noqa: E402


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    model = shared_tiny_sd(tmp_path_factory)
    ctx = RunContext(settings=RunSettings(model_folders={"checkpoints": [model.parent]}))
    return Checkpoint().run(ctx, model.name, "fp32", "auto")


def _unet(model, x, t, cond):
    return model.unet(x, t, encoder_hidden_states=cond.embeds, return_dict=False)[0]


def test_an_area_is_predicted_on_its_crop_and_averaged_where_parts_overlap(loaded):
    model, clip = loaded["model"], loaded["clip"]
    a, b = encode_text(clip, "a red circle"), encode_text(clip, "a blue square")
    factor = model.family.vae_scale_factor
    left = ConditioningSetArea().run(RunContext(), a, 8 * factor, 16 * factor, 0, 0, 1.0)  # left half of 16x16
    stacked = ConditioningStack().run(RunContext(), b, left)
    x, t = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor(500)
    with torch.inference_mode():
        predicted = Guider(model, stacked).bind(x)(x, t)
        whole_b = _unet(model, x, t, b)
        crop_a = _unet(model, x[..., :8], t, a)
    assert torch.equal(predicted[..., 8:], whole_b[..., 8:])  # only b covers the right half
    assert torch.allclose(predicted[..., :8], (whole_b[..., :8] + crop_a) / 2, atol=1e-6)


def test_a_step_range_leaves_its_part_out_elsewhere(loaded):
    model, clip = loaded["model"], loaded["clip"]
    a, b = encode_text(clip, "a red circle"), encode_text(clip, "a blue square")
    early = ConditioningSetTimestepRange().run(RunContext(), a, 0.0, 0.5)
    late = ConditioningSetTimestepRange().run(RunContext(), b, 0.5, 1.0)
    guided = Guider(model, ConditioningStack().run(RunContext(), early, late))
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        denoise = guided.bind(x)
        for t, expected in ((torch.tensor(900), a), (torch.tensor(100), b)):
            assert torch.equal(denoise(x, t), _unet(model, x, t, expected))
        # a full range is the plain conditioning, exactly
        full = ConditioningSetTimestepRange().run(RunContext(), a, 0.0, 1.0)
        assert torch.equal(Guider(model, full).bind(x)(x, torch.tensor(300)), _unet(model, x, torch.tensor(300), a))


def test_a_comfyui_regional_workflow_imports_and_runs(tmp_path, tmp_path_factory):
    import nodeflow.api as api

    model = shared_tiny_sd(tmp_path_factory)
    data = json.loads((FIXTURES / "comfyui" / "txt2img_api.json").read_text())
    data["20"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "a green square", "clip": ["4", 1]}}
    data["21"] = {"class_type": "ConditioningSetArea", "inputs": {"conditioning": ["20", 0], "width": 16, "height": 32,
                                                                  "x": 16, "y": 0, "strength": 1.0}}
    data["22"] = {"class_type": "ConditioningSetTimestepRange", "inputs": {"conditioning": ["21", 0], "start": 0.0, "end": 0.6}}
    data["23"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["6", 0], "conditioning_2": ["22", 0]}}
    data["3"]["inputs"]["positive"] = ["23", 0]
    path = tmp_path / "regional.json"
    path.write_text(json.dumps(data))
    flow = api.open(path, device="cpu")
    assert flow.graph.nodes["23"].type == "ConditioningStack"
    result = flow.run(output_dir=tmp_path / "out", device="cpu",
                      settings=RunSettings(model_folders={"checkpoints": [model.parent]}))
    assert result.ok, result.error
