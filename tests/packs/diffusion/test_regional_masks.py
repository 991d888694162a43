"""Conditioning limited by a mask or by fractions of the image, and ControlNets on regions.

Each model call is checked against the UNet itself: a masked part weighs its prediction
by the mask (so a prompt masked to the left half changes only the left half), mask
bounds predicts only the box around the mask, fractions give the same crop as the
equivalent pixel area, and a ControlNet attached to one area's conditioning steers that
area's crop with its hint resized to it. A ComfyUI file using the nodes imports with
its widget values in place and runs.
"""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from nodeflow import RunContext, RunSettings  # noqa: E402
from nodes.diffusion.conditioning import ConditioningSetArea, ConditioningStack  # noqa: E402
from nodes.diffusion.conditioning_regions import ConditioningSetAreaPercentage, ConditioningSetMask  # noqa: E402
from nodes.diffusion.controlnet import ControlNetApply  # noqa: E402
from nodes.diffusion.impl.guidance import GuidanceError, Guider  # noqa: E402
from nodes.diffusion.loaders import Checkpoint  # noqa: E402
from nodes.diffusion.text import encode_text  # noqa: E402
from nodes.diffusion.types import ControlModel  # noqa: E402
from tests.support.standins import tiny_controlnet  # noqa: E402
from tests.support import FIXTURES  # noqa: E402
from tests.support.tiny_models import shared_tiny_sd  # noqa: E402

CTX = RunContext()


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return shared_tiny_sd(tmp_path_factory)


@pytest.fixture(scope="module")
def loaded(tiny_sd):
    ctx = RunContext(settings=RunSettings(model_folders={"checkpoints": [tiny_sd.parent]}))
    model = Checkpoint().run(ctx, tiny_sd.name, "fp32", "auto")
    a, b = encode_text(model["clip"], "a red circle"), encode_text(model["clip"], "a blue square")
    return model["model"], a, b


def _latent(seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(seed))


def _unet(model, x, t, cond, **extra):
    return model.unet(x, t, encoder_hidden_states=cond.embeds, return_dict=False, **extra)[0]


def _predict(model, cond, x, t):
    with torch.inference_mode():
        return Guider(model, cond).bind(x)(x, t)


def test_a_mask_changes_only_its_region_weighted_by_its_value(loaded):
    model, a, b = loaded
    x, t = _latent(), torch.tensor(500)
    left = torch.zeros(1, 32, 32)
    left[:, :, :16] = 1.0  # the left half of the 32-pixel image
    masked = ConditioningSetMask().run(CTX, a, left, 0.5, "default")
    predicted = _predict(model, ConditioningStack().run(CTX, b, masked), x, t)
    with torch.inference_mode():
        whole_a, whole_b = _unet(model, x, t, a), _unet(model, x, t, b)
    assert torch.equal(predicted[..., 8:], whole_b[..., 8:])  # the mask is 0 there: b alone
    assert torch.allclose(predicted[..., :8], (whole_b[..., :8] + 0.5 * whole_a[..., :8]) / 1.5, atol=1e-6)
    assert not torch.allclose(predicted[..., :8], whole_b[..., :8], atol=1e-4)


def test_mask_bounds_predicts_only_the_box_around_the_mask(loaded):
    model, a, b = loaded
    x, t = _latent(1), torch.tensor(300)
    mask = torch.zeros(1, 16, 16)
    mask[:, 6:8, 4:7] = 1.0  # 2 x 3 cells: the box grows to 8 x 8 from its corner
    bounded = ConditioningSetMask().run(CTX, a, mask, 1.0, "mask bounds")
    predicted = _predict(model, ConditioningStack().run(CTX, b, bounded), x, t)
    with torch.inference_mode():
        whole_b = _unet(model, x, t, b)
        crop_a = _unet(model, x[:, :, 6:14, 4:12], t, a)
    inside = (whole_b[:, :, 6:14, 4:12] + mask[:, None, 6:14, 4:12] * crop_a) / (1 + mask[:, None, 6:14, 4:12])
    assert torch.allclose(predicted[:, :, 6:14, 4:12], inside, atol=1e-6)
    outside = torch.ones(16, 16, dtype=torch.bool)
    outside[6:8, 4:7] = False
    assert torch.equal(predicted[..., outside], whole_b[..., outside])
    # an empty mask weighs nothing anywhere
    empty = ConditioningSetMask().run(CTX, a, torch.zeros(1, 16, 16), 1.0, "mask bounds")
    assert torch.equal(_predict(model, ConditioningStack().run(CTX, b, empty), x, t), whole_b)


def test_fractions_of_the_image_are_the_same_crop_as_the_pixel_area(loaded):
    model, a, b = loaded
    x, t = _latent(2), torch.tensor(700)
    factor = model.family.vae_scale_factor
    # 0.3 of 16 cells rounds to 5, 0.25 to 4; at least one cell for a width of 0.01
    for fractions, cells in (((0.3, 0.5, 0.25, 0.5), (5, 8, 4, 8)), ((0.01, 1.0, 0.0, 0.0), (1, 16, 0, 0))):
        by_fraction = ConditioningSetAreaPercentage().run(CTX, a, *fractions, 1.0)
        by_pixels = ConditioningSetArea().run(CTX, a, *(c * factor for c in cells), 1.0)
        got = _predict(model, ConditioningStack().run(CTX, b, by_fraction), x, t)
        assert torch.equal(got, _predict(model, ConditioningStack().run(CTX, b, by_pixels), x, t))
    # the last of area / fractions set wins, as in ComfyUI
    again = ConditioningSetArea().run(CTX, ConditioningSetAreaPercentage().run(CTX, a, 0.5, 0.5, 0.0, 0.0, 1.0),
                                      32, 32, 0, 0, 1.0)
    assert again.area_fraction is None and again.area == (32, 32, 0, 0)


def test_a_mask_batch_that_does_not_fit_the_latent_is_refused(loaded):
    model, a, b = loaded
    masked = ConditioningSetMask().run(CTX, a, torch.ones(2, 16, 16), 1.0, "default")
    with pytest.raises(GuidanceError, match="mask has a batch of 2"):
        Guider(model, masked).bind(torch.zeros(3, 4, 16, 16))


def test_a_controlnet_on_an_area_steers_that_crop_with_its_hint_resized(loaded, tiny_sd):
    import torch.nn.functional as F

    model, a, b = loaded
    net = tiny_controlnet(tiny_sd, (16, 32))  # hint at twice the latent's size, the tiny VAE's factor
    hint = torch.rand(1, 32, 32, 3, generator=torch.Generator().manual_seed(5))
    area = ConditioningSetArea().run(CTX, a, 16, 32, 0, 0, 1.0)  # the left half
    controlled = ControlNetApply().run(CTX, area, ControlModel(net, "controlnet"), hint, 0.8)
    x, t = _latent(3), torch.tensor(400)
    predicted = _predict(model, ConditioningStack().run(CTX, b, controlled), x, t)
    plain = _predict(model, ConditioningStack().run(CTX, b, area), x, t)
    crop = x[..., :8]
    hint_crop = F.interpolate(hint.permute(0, 3, 1, 2), size=(32, 16), mode="bilinear", align_corners=False).clamp(0, 1)
    with torch.inference_mode():
        down, mid = net(crop, t, encoder_hidden_states=a.embeds, controlnet_cond=hint_crop, conditioning_scale=0.8,
                        return_dict=False)
        steered = _unet(model, crop, t, a, down_block_additional_residuals=down, mid_block_additional_residual=mid)
        whole_b = _unet(model, x, t, b)
    assert torch.allclose(predicted[..., :8], (whole_b[..., :8] + steered) / 2, atol=1e-5)
    assert torch.equal(predicted[..., 8:], whole_b[..., 8:])  # b has no ControlNet
    assert not torch.allclose(predicted[..., :8], plain[..., :8], atol=1e-4)


def test_a_comfyui_file_with_masks_and_fractions_imports_and_runs(tiny_sd, tmp_path):
    import nodeflow.api as api

    flow = api.open(FIXTURES / "comfyui" / "regions_ui_v04.json", device="cpu")
    nodes = flow.graph.nodes
    assert nodes["24"].type == "ConditioningSetMask"
    assert (nodes["24"].values["strength"], nodes["24"].values["area"]) == (0.8, "mask bounds")
    assert nodes["26"].type == "ConditioningSetAreaPercentage"
    assert [nodes["26"].values[k] for k in ("width", "height", "x", "y", "strength")] == [0.5, 0.5, 0.5, 0.25, 1.5]
    result = flow.run(output_dir=tmp_path / "out", device="cpu",
                      settings=RunSettings(model_folders={"checkpoints": [tiny_sd.parent]}))
    assert result.ok, result.error
