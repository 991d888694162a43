"""ComfyUI's weight-free built-in nodes, imported from hand-written fixtures and run.

Each fixture in tests/fixtures/comfyui/ (API format, written from ComfyUI's public node
definitions) uses a family of nodes; the test imports it, runs it on the tiny SD model
where one is needed, and checks each node's effect on the pixels, masks or latents.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import nodeflow.api as api  # noqa: E402
from nodeflow import RunSettings  # noqa: E402
from nodeflow.files.open import workflow_from_dict  # noqa: E402
from nodeflow.files.workflow import WorkflowError  # noqa: E402
from nodeflow.model.registry import default_registry  # noqa: E402
from tests.support import FIXTURES  # noqa: E402
from tests.support.tiny_models import shared_tiny_sd  # noqa: E402

FIXTURES = FIXTURES / "comfyui"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return RunSettings(model_folders={"checkpoints": [shared_tiny_sd(tmp_path_factory).parent]})


@pytest.fixture
def input_dir(tmp_path):
    """rgba.png, 32x32: the left half opaque red, the right half transparent blue."""
    from PIL import Image

    pixels = np.zeros((32, 32, 4), dtype=np.uint8)
    pixels[:, :16] = (255, 0, 0, 255)
    pixels[:, 16:] = (0, 0, 255, 0)
    folder = tmp_path / "input"
    folder.mkdir()
    Image.fromarray(pixels, "RGBA").save(folder / "rgba.png")
    return folder


def _run(fixture: str, input_dir, tmp_path, outputs, settings=None) -> dict:
    flow = api.open(FIXTURES / fixture, device="cpu")
    result = flow.run(outputs=outputs, output_dir=tmp_path / "out", input_dir=input_dir, device="cpu",
                      settings=settings or RunSettings())
    assert result.ok, result.error or result.problems
    return result.outputs


def test_image_and_mask_nodes(input_dir, tmp_path):
    ids = [str(i) for i in range(1, 20)] + ["90", "91"]
    out = _run("masks_and_images_api.json", input_dir, tmp_path, ids)
    image, mask = out["1"]["image"], out["1"]["mask"]
    assert image.shape == (1, 32, 32, 3) and mask.shape == (1, 32, 32)
    assert mask[0, :, :16].max() == 0 and mask[0, :, 16:].min() == 1  # transparent = masked
    scaled = out["2"]["image"]
    assert scaled.shape == (1, 16, 16, 3)  # height 0 keeps the aspect ratio
    assert np.allclose(scaled[0, :, :7].numpy(), [1, 0, 0], atol=1e-3)
    inverted = out["3"]["image"]
    assert np.allclose(inverted.numpy(), 1 - scaled.numpy())
    assert np.array_equal(out["4"]["image"].numpy(), inverted[:, 4:12, 4:12].numpy())
    assert np.allclose(out["5"]["image"].numpy(), 0.5)  # half of a plus half of 1 - a
    assert out["6"]["image"].shape == (2, 16, 16, 3)
    padded, pad_mask = out["7"]["image"], out["7"]["mask"]
    assert padded.shape == (1, 16, 24, 3) and np.allclose(padded[0, :, :8].numpy(), 0.5)
    assert pad_mask[0, :, :8].min() == 1 and pad_mask[0, :, 8:].max() == 0
    assert np.array_equal(out["8"]["image"][..., 0].numpy(), pad_mask.numpy())
    assert np.array_equal(out["10"]["mask"].numpy(), mask.numpy())  # 1 x (1 - alpha)
    feathered = out["11"]["mask"][0, 0].numpy()
    assert np.allclose(feathered[:5], [0.25, 0.5, 0.75, 1.0, 1.0])
    assert out["12"]["mask"][0, :, :7].max() < 1e-3 and out["12"]["mask"][0, :, 9:].min() > 0.999
    assert np.array_equal(out["13"]["mask"].numpy(), mask.numpy())
    assert np.array_equal(out["16"]["mask"].numpy(), 1 - mask.numpy())
    assert out["14"]["image"].shape == (1, 16, 16, 3)
    assert out["15"]["image"].shape == (1, 102, 102, 3)  # 0.01 megapixels, square
    # ImageCompositeMasked: the source where the mask is 1, the destination where it is 0; at (x, y); resized
    weight = out["12"]["mask"][..., None].numpy()
    assert np.allclose(out["17"]["image"].numpy(), inverted.numpy() * weight + scaled.numpy() * (1 - weight))
    pasted = out["18"]["image"].numpy()
    assert np.array_equal(pasted[:, 2:10, 4:12], out["4"]["image"].numpy())
    assert np.array_equal(pasted[:, :2], scaled[:, :2].numpy()) and np.array_equal(pasted[:, 10:], scaled[:, 10:].numpy())
    assert np.array_equal(out["19"]["image"].numpy(), scaled.numpy())  # the 32x32 source resized as ImageScale does
    assert out["90"]["images"].shape == (1, 16, 24, 3)
    assert np.array_equal(out["91"]["images"][..., 1].numpy(), mask.numpy())  # the mask preview is grey


def test_noise_mask_keeps_the_outside_and_latent_operations(models, input_dir, tmp_path):
    out = _run("inpaint_latent_api.json", input_dir, tmp_path, ["2", "3", "30", "31", "33", "9"], models)
    encoded, sampled = out["2"]["latent"].samples, out["3"]["latent"].samples
    assert encoded.shape == (1, 4, 16, 16)
    # outside the mask (the opaque left half) the latent is the encoded image, exactly
    assert np.array_equal(sampled[..., :8].numpy(), encoded[..., :8].numpy())
    assert (sampled[..., 8:] - encoded[..., 8:]).abs().mean() > 0.05  # inside it was repainted
    cropped = out["31"]["latent"].samples
    assert cropped.shape == (1, 4, 16, 8) and np.array_equal(cropped.numpy(), sampled[..., 8:].numpy())
    composite = out["30"]["latent"].samples
    assert np.array_equal(composite[..., 4:12].numpy(), cropped.numpy())
    assert np.array_equal(composite[..., :4].numpy(), encoded[..., :4].numpy())
    picked = out["33"]["latent"].samples
    assert picked.shape == (2, 4, 16, 16) and np.array_equal(picked[1].numpy(), composite[0].numpy())


def test_custom_sampling_nodes(models, input_dir, tmp_path):
    graph = api.open(FIXTURES / "custom_sampling_api.json", device="cpu").graph
    high, low, turbo = graph.nodes["20"].values, graph.nodes["21"].values, graph.nodes["23"].values
    assert (high["schedule"], high["steps"], high["end_step"], high["leftover_noise"]) == ("karras", 4, 2, True)
    assert (low["start_step"], graph.nodes["21.noise"].type) == (2, "DisableNoise")
    assert (turbo["sampler"], turbo["schedule"], turbo["steps"]) == ("euler_ancestral", "simple", 2)
    assert graph.nodes["4"].type == "Checkpoint" and graph.nodes["10"].type == "ConditioningCombine"  # Concat
    out = _run("custom_sampling_api.json", input_dir, tmp_path, ["9", "19", "29", "11"], models)
    # SplitSigmas: the two halves are the whole schedule
    assert np.array_equal(out["9"]["images"].numpy(), out["19"]["images"].numpy())
    zero = out["11"]["conditioning"]
    assert float(zero.embeds.abs().max()) == 0.0
    assert out["29"]["images"].shape == (1, 32, 32, 3)


def test_refusals_name_node_field_and_reason():
    data = json.loads((FIXTURES / "custom_sampling_api.json").read_text())
    data["15"]["inputs"]["eta"] = 0.5
    data["12"]["inputs"]["rho"] = 3.0  # not refused: a KarrasScheduler node (test_sigma_lists.py)
    with pytest.raises(WorkflowError) as error:
        workflow_from_dict(data, default_registry())
    message = str(error.value)
    assert "node 15 (SamplerEulerAncestral): eta 0.5 has no nodeflow equivalent" in message
    assert "KarrasScheduler" not in message


def test_model_operations_and_canny(models, input_dir, tmp_path):
    flow = api.open(FIXTURES / "model_ops_api.json", device="cpu")
    result = flow.run(output_dir=tmp_path / "out", input_dir=input_dir, device="cpu", settings=models,
                      outputs=["60", "61", "62", "63", "71", "50", "30", "32"])
    assert result.ok, result.error or result.problems
    out = result.outputs
    plain = out["61"]["images"].numpy()
    # (m - 1.0 x m) + m is m again, weight for weight: UNet and text encoder merges are exact
    assert np.array_equal(out["60"]["images"].numpy(), plain)
    zeroed = out["30"]["model"].unet
    assert all(float(p.detach().abs().max()) == 0.0 for p in zeroed.parameters())
    # blending with the zeroed model halves the weights, which changes the image
    halved = out["32"]["model"].unet
    original = next(iter(out["50"]["model"].unet.parameters()))
    assert np.allclose(next(iter(halved.parameters())).detach().numpy(), 0.5 * original.detach().numpy())
    assert not np.array_equal(out["63"]["images"].numpy(), plain)
    # the same model read as v-prediction gives another image; the cached model is unchanged
    assert out["50"]["model"].scheduler_config["prediction_type"] == "v_prediction"
    assert not np.array_equal(out["62"]["images"].numpy(), plain)
    again = flow.run(output_dir=tmp_path / "again", input_dir=input_dir, device="cpu", settings=models, outputs=["61"])
    assert np.array_equal(again.outputs["61"]["images"].numpy(), plain)
    # Canny: one line of edges where red meets blue, nothing elsewhere
    edges = out["71"]["images"][0, ..., 0].numpy()
    columns = np.flatnonzero(edges[8:24].max(axis=0) > 0.5)
    assert set(columns) <= {14, 15, 16, 17} and len(columns) >= 1
    assert edges[:, :12].max() == 0 and edges[:, 20:].max() == 0


@pytest.mark.parametrize("node, widgets, sampler", [
    ("SamplerLMS", {"order": 4}, "lms"),
    # solver_type heun is dpmpp_2m_sde_heun (test_sigma_schedules.py): eta is the setting changed here
    ("SamplerDPMPP_2M_SDE", {"eta": 1.0, "solver_type": "midpoint", "s_noise": 1.0, "noise_device": "cpu"}, "dpmpp_2m_sde"),
    ("SamplerDPMPP_3M_SDE", {"eta": 1.0, "s_noise": 1.0, "noise_device": "gpu"}, "dpmpp_3m_sde"),
    ("SamplerDPMPP_SDE", {"eta": 1.0, "s_noise": 1.0, "r": 0.5, "noise_device": "gpu"}, "dpmpp_sde"),
])
def test_comfyuis_sampler_nodes_at_their_defaults_are_our_samplers_and_other_settings_are_named(node, widgets, sampler):
    data = json.loads((FIXTURES / "custom_sampling_api.json").read_text())
    data["15"] = {"class_type": node, "inputs": dict(widgets)}
    graph = workflow_from_dict(data, default_registry()).graph
    users = [n for n in graph.nodes.values() if n.type == "Sampler" and n.values.get("sampler") == sampler]
    assert users, f"no Sampler took {sampler} from {node}"
    first = next(iter(k for k in widgets if k != "noise_device"))
    changed = {**widgets, first: "heun" if first == "solver_type" else 3}
    data["15"] = {"class_type": node, "inputs": changed}
    with pytest.raises(WorkflowError, match=rf"node 15 \({node}\): {first} .* has no nodeflow equivalent \({sampler} uses"):
        workflow_from_dict(data, default_registry())


@pytest.mark.parametrize("node, widgets", [
    ("PolyexponentialScheduler", {"steps": 4, "sigma_max": 14.614642, "sigma_min": 0.0291675, "rho": 1.0}),
    ("VPScheduler", {"steps": 4, "beta_d": 19.9, "beta_min": 0.1, "eps_s": 0.001}),
])
def test_polyexponential_and_vp_schedules_feed_the_sampler_as_lists_of_sigmas(node, widgets, models, input_dir, tmp_path):
    import math

    data = json.loads((FIXTURES / "custom_sampling_api.json").read_text())
    data["12"] = {"class_type": node, "inputs": dict(widgets)}
    fixture = tmp_path / "schedule_api.json"
    fixture.write_text(json.dumps(data))
    flow = api.open(fixture, device="cpu")
    assert flow.graph.nodes["12"].type == node
    result = flow.run(outputs=["12", "19", "9"], output_dir=tmp_path / "out", input_dir=input_dir, device="cpu",
                      settings=models)
    assert result.ok, result.error or result.problems  # samplers ran the whole list (19) and its two halves (9)
    values = result.outputs["12"]["sigmas"].values
    assert len(values) == 5 and values[-1] == 0.0 and list(values) == sorted(values, reverse=True)
    if node == "PolyexponentialScheduler":  # rho 1 is the exponential schedule
        from nodes.diffusion.impl.sigmas import exponential

        assert all(math.isclose(a, b, rel_tol=1e-9) for a, b in zip(values, exponential(4, 14.614642, 0.0291675).values))
    else:  # sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1) at t = 1 and t = eps_s
        assert math.isclose(values[0], math.sqrt(math.expm1(19.9 / 2 + 0.1)), rel_tol=1e-9)
        assert math.isclose(values[3], math.sqrt(math.expm1(19.9 * 1e-6 / 2 + 1e-4)), rel_tol=1e-9)
