"""Forms found in ComfyUI workflows that people published, written small by hand.

Measured on a collection of published workflows (benchmarks/comfyui_acceptance.py), these
broke imports that ComfyUI itself opens: model names saved on Windows, and link ids given
twice in hand-edited files. Each fixture reproduces one pattern on the import tests'
text-to-image graph; none is a copy of someone else's file.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import nodes.diffusion.impl  # noqa: F401  (torchvision shim before diffusers)
import nodeflow.api as api  # noqa: E402
from nodeflow import RunSettings  # noqa: E402
from nodeflow.files.open import load_workflow, workflow_from_dict  # noqa: E402
from nodeflow.model.registry import default_registry  # noqa: E402
from nodeflow.model.validation import validate  # noqa: E402
from tests.support import FIXTURES  # noqa: E402
from tests.support.tiny_models import shared_tiny_sd  # noqa: E402

FIXTURES = FIXTURES / "comfyui"


def _saved_image(flow: api.Flow, settings: RunSettings, out) -> np.ndarray:
    result = flow.run(output_dir=out, device="cpu", settings=settings)
    saved = [o["images"] for nid, o in result.outputs.items() if flow.graph.nodes[nid].type == "SaveImage"]
    assert len(saved) == 1
    return saved[0].numpy()


def test_a_model_name_saved_on_windows_finds_the_model_in_its_subfolder(tmp_path_factory, tmp_path):
    model = shared_tiny_sd(tmp_path_factory)
    checkpoints = tmp_path / "checkpoints"
    shutil.copytree(model, checkpoints / "sd15" / model.name)
    windows = api.open(FIXTURES / "windows_model_names_ui_v04.json", device="cpu")
    ckpt = next(n for n in windows.graph.nodes.values() if n.type == "Checkpoint")
    assert ckpt.values["checkpoint"] == "sd15/tiny-sd"
    note = next(n for n in windows.graph.nodes.values() if n.type == "Note")
    assert "C:\\ComfyUI\\models" in next(v for v in note.values.values() if isinstance(v, str))  # not a model name
    image = _saved_image(windows, RunSettings(model_folders={"checkpoints": [checkpoints]}), tmp_path / "windows")
    plain = api.open(FIXTURES / "txt2img_ui_v04.json", device="cpu")
    expected = _saved_image(plain, RunSettings(model_folders={"checkpoints": [model.parent]}), tmp_path / "plain")
    assert np.array_equal(image, expected)


def test_a_link_id_given_twice_links_each_input_to_its_own_source():
    workflow = load_workflow(FIXTURES / "repeated_link_id_ui_v04.json", default_registry())
    graph = workflow.graph
    assert graph.link_into("9", "images").source == "8"  # VAEDecode -> SaveImage
    assert graph.link_into("3.cfg", "model").source == "4"  # checkpoint -> the KSampler's guider
    assert [p for p in [*workflow.problems, *validate(graph)]] == []


def test_a_step_count_fed_by_another_node_is_refused_naming_the_widget_and_the_node():
    """Published API files feed KSamplerAdvanced's steps from custom integer nodes; the
    refusal names the custom type and says which widget needs a value (not a Ref repr)."""
    from nodeflow.files.workflow import WorkflowError

    with pytest.raises(WorkflowError) as raised:
        load_workflow(FIXTURES / "steps_from_another_node_api.json", default_registry())
    message = str(raised.value)
    assert "ttN int (node 5)" in message
    assert "node 6 (KSamplerAdvanced): widget 'steps' is fed by node 5 (ttN int); nodeflow needs its value here" in message
    assert "Ref(" not in message


def test_latent_blend_weighs_the_first_latent_and_fits_the_second_to_its_size(tmp_path_factory, tmp_path):
    """ComfyUI's built-in Latent Blend, found in published workflows (the API file of
    Yahweasel/stable-restyle, workflow_api.json at 8bb0e4bcee72, blends VAE-encoded frames;
    KanishqGandharv219/my_comfyui_workflows img2img.json at 002a22913627 blends an empty
    latent with an encoded image), was refused as an unknown type. The fixture keeps that
    use on the tiny model: `blend_factor` of samples1 plus the rest of samples2, and a
    samples2 of another shape cut from the middle to samples1's aspect ratio first."""
    from PIL import Image

    inputs = tmp_path / "input"
    inputs.mkdir()
    pixels = np.zeros((32, 32, 4), dtype=np.uint8)
    pixels[:, :16] = (255, 0, 0, 255)
    pixels[:, 16:] = (0, 0, 255, 255)
    Image.fromarray(pixels, "RGBA").save(inputs / "rgba.png")
    settings = RunSettings(model_folders={"checkpoints": [shared_tiny_sd(tmp_path_factory).parent]})
    flow = api.open(FIXTURES / "latent_blend_api.json", device="cpu")
    assert flow.graph.nodes["10"].type == "LatentBlend" and flow.graph.nodes["10"].values["blend_factor"] == 0.3
    result = flow.run(outputs=["5", "6", "10", "11", "9"], output_dir=tmp_path / "out", input_dir=inputs,
                      device="cpu", settings=settings)
    assert result.ok, result.error or result.problems
    out = result.outputs
    encoded, wide = out["5"]["latent"].samples, out["6"]["latent"].samples
    (h, w), width = encoded.shape[-2:], wide.shape[-1]
    assert wide.shape[-2] == h == w and width == w * 3 // 2  # the 48x32 image's latent is 1.5 times as wide
    # with an empty (zero) second latent, the blend is 0.3 of the first
    assert np.allclose(out["10"]["latent"].samples.numpy(), 0.3 * encoded.numpy(), atol=1e-6)
    # the wide second latent loses half its extra width on each side, then needs no resizing
    cut = (width - w) // 2
    expected = 0.5 * encoded + 0.5 * wide[..., cut:cut + w]
    assert np.allclose(out["11"]["latent"].samples.numpy(), expected.numpy(), atol=1e-5)


def test_the_acceptance_benchmark_counts_a_prompt_request_body_by_the_types_inside_it():
    from benchmarks.comfyui_acceptance import used_types

    assert used_types(FIXTURES / "prompt_request_body_api.json") == {
        "KSampler", "CheckpointLoaderSimple", "EmptyLatentImage", "CLIPTextEncode", "VAEDecode", "SaveImage"}


def test_image_sharpen_imports_with_its_values_and_steepens_an_edge():
    import torch

    from nodes.diffusion.image_ops import ImageSharpen

    graph = load_workflow(FIXTURES / "sharpen_api.json", default_registry()).graph
    (sharpen,) = [n for n in graph.nodes.values() if n.type == "ImageSharpen"]
    assert (sharpen.values["sharpen_radius"], sharpen.values["sigma"], sharpen.values["alpha"]) == (2, 0.8, 0.5)
    edge = torch.full((1, 8, 8, 3), 0.3)
    edge[:, :, 4:] = 0.6  # a vertical step from dark to light
    out = ImageSharpen().run(None, edge, sharpen_radius=2, sigma=0.8, alpha=0.5)
    assert out.shape == edge.shape
    assert out[0, 0, 3, 0] < 0.3 and out[0, 0, 4, 0] > 0.6  # darker before the step, lighter after it
    assert torch.allclose(out[:, :, 0], edge[:, :, 0], atol=1e-3)  # far from it, nothing changes
    flat = torch.full((1, 5, 5, 3), 0.5)
    assert torch.allclose(ImageSharpen().run(None, flat, sharpen_radius=1, sigma=1.0, alpha=2.0), flat, atol=1e-6)


def test_image_blur_imports_with_its_values_and_spreads_a_point_by_the_gaussian_weights():
    import math

    import torch

    from nodes.diffusion.image_ops import ImageBlur

    graph = load_workflow(FIXTURES / "sharpen_api.json", default_registry()).graph
    (blur,) = [n for n in graph.nodes.values() if n.type == "ImageBlur"]
    assert (blur.values["blur_radius"], blur.values["sigma"]) == (3, 0.5)
    point = torch.zeros(1, 7, 7, 3)
    point[0, 3, 3] = 1.0
    out = ImageBlur().run(None, point, blur_radius=1, sigma=1.0)
    # a 3x3 grid over [-1, 1]: the centre weighs 1, its 4 sides exp(-1/2), its 4 corners exp(-1)
    total = 1 + 4 * math.exp(-0.5) + 4 * math.exp(-1)
    assert out.shape == point.shape
    assert math.isclose(out[0, 3, 3, 0].item(), 1 / total, rel_tol=1e-5)
    assert math.isclose(out[0, 2, 3, 1].item(), math.exp(-0.5) / total, rel_tol=1e-5)
    assert math.isclose(out[0, 2, 2, 2].item(), math.exp(-1) / total, rel_tol=1e-5)
    assert out[0, 0, 0].abs().max().item() == 0.0 and math.isclose(out.sum().item(), 3.0, rel_tol=1e-5)
    # a radius wider than a tiny image is cut to fit instead of failing the mirror padding
    assert ImageBlur().run(None, torch.rand(1, 2, 2, 3), blur_radius=31, sigma=1.0).shape == (1, 2, 2, 3)


@pytest.mark.parametrize("dither", ["none", "floyd-steinberg", "bayer-4"])
def test_image_quantize_keeps_to_its_palette_and_dithering_keeps_the_mean_tone(dither):
    import torch

    from nodes.diffusion.image_ops import ImageQuantize

    graph = load_workflow(FIXTURES / "sharpen_api.json", default_registry()).graph
    (quantize,) = [n for n in graph.nodes.values() if n.type == "ImageQuantize"]
    assert (quantize.values["colors"], quantize.values["dither"]) == (8, "bayer-4")
    ramp = torch.linspace(0, 1, 64).expand(1, 32, 64)[..., None].expand(1, 32, 64, 3).contiguous()
    out = ImageQuantize().run(None, ramp, colors=2, dither=dither)
    assert out.shape == ramp.shape
    assert len(torch.unique(out.reshape(-1, 3), dim=0)) <= 2
    middle = out[0, :, 24:40, 0]  # between the two palette tones
    if dither == "none":
        assert all(len(torch.unique(middle[:, x])) == 1 for x in range(middle.shape[1]))  # every column one tone
        assert abs(out.mean().item() - ramp.mean().item()) < 0.2
    else:
        assert len(torch.unique(middle)) == 2  # both tones drawn side by side
        assert abs(middle.mean().item() - ramp[0, :, 24:40, 0].mean().item()) < 0.1


def test_grow_mask_reaches_a_diamond_or_a_square_and_shrinks_when_negative_and_threshold_hardens():
    import torch

    from nodes.diffusion.masks import GrowMask, ThresholdMask

    graph = load_workflow(FIXTURES / "grow_threshold_mask_api.json", default_registry()).graph
    values = {n.type: n.values for n in graph.nodes.values()}
    assert (values["GrowMask"]["expand"], values["GrowMask"]["tapered_corners"]) == (6, False)
    assert values["ThresholdMask"]["value"] == 0.25
    point = torch.zeros(1, 9, 9)
    point[0, 4, 4] = 1.0
    diamond = GrowMask().run(None, point, expand=2, tapered_corners=True)
    square = GrowMask().run(None, point, expand=2, tapered_corners=False)
    assert diamond.sum().item() == 13 and diamond[0, 4, 6] == 1 and diamond[0, 5, 5] == 1 and diamond[0, 6, 6] == 0
    assert square.sum().item() == 25 and square[0, 6, 6] == 1
    block = torch.zeros(1, 9, 9)
    block[0, 2:7, 2:7] = 1.0
    assert torch.equal(GrowMask().run(None, block, expand=-1, tapered_corners=True)[0, 3:6, 3:6], torch.ones(3, 3))
    assert GrowMask().run(None, block, expand=-1, tapered_corners=True).sum().item() == 9
    assert torch.equal(GrowMask().run(None, point, expand=10**4, tapered_corners=True), torch.ones(1, 9, 9))  # bounded loop
    soft = torch.tensor([[[0.1, 0.3, 0.9]]])
    assert ThresholdMask().run(None, soft, value=0.25).tolist() == [[[0.0, 1.0, 1.0]]]


def test_latent_composite_masked_pastes_through_the_mask_at_latent_scale_and_cuts_at_the_edge():
    import torch

    from nodes.diffusion.latent_ops import LatentCompositeMasked
    from nodes.diffusion.types import Latent

    graph = load_workflow(FIXTURES / "latent_composite_masked_api.json", default_registry()).graph
    (node,) = [n for n in graph.nodes.values() if n.type == "LatentCompositeMasked"]
    assert (node.values["x"], node.values["y"], node.values["resize_source"]) == (16, 8, False)
    destination = Latent(torch.zeros(1, 4, 8, 8))
    source = Latent(torch.full((1, 4, 4, 4), -2.0))  # latents are not clamped like images
    half = torch.zeros(1, 4, 4)
    half[:, :, 2:] = 1.0  # the source's right half shows
    out = LatentCompositeMasked().run(None, destination, source, x=48, y=8, resize_source=False, mask=half).samples
    assert out.shape == (1, 4, 8, 8)
    region = out[0, 0, 1:5, 6:8]  # columns 6..7 of the 8: the source's columns 0..1 (mask 0) and cut after
    assert torch.equal(region, torch.zeros(4, 2))
    out = LatentCompositeMasked().run(None, destination, source, x=16, y=8, resize_source=False, mask=half).samples
    assert torch.equal(out[0, :, 1:5, 4:6], torch.full((4, 4, 2), -2.0)) and out.abs().sum() == 2.0 * 4 * 4 * 2
    whole = LatentCompositeMasked().run(None, destination, source, x=0, y=0, resize_source=True).samples
    assert torch.equal(whole, torch.full((1, 4, 8, 8), -2.0))


def test_empty_repeat_from_batch_and_flip_images_run_as_a_comfyui_graph(tmp_path):
    import torch

    from nodeflow import NodeError, RunContext

    from nodes.diffusion.image_ops import EmptyImage, ImageFlip, RepeatImageBatch

    flow = api.open(FIXTURES / "image_batch_ops_api.json", device="cpu")
    result = flow.run(output_dir=tmp_path, device="cpu", outputs=["1", "2", "3", "4", "5"])
    assert result.ok, result.error or result.problems
    red = result.outputs["1"]["image"]
    assert red.shape == (2, 16, 24, 3) and red[0, 0, 0].tolist() == [1.0, 0.0, 0.0]  # 0xFF0000
    assert result.outputs["2"]["image"].shape[0] == 6
    assert result.outputs["3"]["image"].shape[0] == 2  # from index 4, five asked, two left
    ramp = torch.linspace(0, 1, 5).expand(1, 3, 5)[..., None].expand(1, 3, 5, 3)
    assert torch.equal(ImageFlip().run(None, ramp, flip_method="y-axis: horizontally")[0, 0, :, 0], ramp[0, 0, :, 0].flip(0))
    assert torch.equal(ImageFlip().run(None, ramp, flip_method="x-axis: vertically"), ramp)  # rows alike
    ctx = RunContext(node_id="1")
    with pytest.raises(NodeError, match="limit") as error:
        EmptyImage().run(ctx, width=16384, height=16384, batch_size=4096, color=0)
    assert error.value.field == "batch_size"
    with pytest.raises(NodeError, match="limit"):
        RepeatImageBatch().run(ctx, torch.zeros(1, 1024, 1024, 3), amount=4096)


def test_latent_add_subtract_and_multiply_import_and_shape_the_second_latent_like_the_first():
    import torch

    from nodeflow import NodeError

    from nodes.diffusion.latent_ops import LatentAdd, LatentMultiply, LatentSubtract
    from nodes.diffusion.types import Latent

    data = {"1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 2}},
            "2": {"class_type": "LatentMultiply", "inputs": {"multiplier": -0.5, "samples": ["1", 0]}},
            "3": {"class_type": "LatentAdd", "inputs": {"samples1": ["1", 0], "samples2": ["2", 0]}},
            "4": {"class_type": "LatentSubtract", "inputs": {"samples1": ["3", 0], "samples2": ["1", 0]}},
            "5": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["6", 2]}},
            "6": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd"}},
            "7": {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}}}
    graph = workflow_from_dict(data, default_registry()).graph
    assert {n.type for n in graph.nodes.values()} >= {"LatentAdd", "LatentSubtract", "LatentMultiply"}
    assert graph.nodes["2"].values["multiplier"] == -0.5
    a = Latent(torch.ones(2, 4, 4, 6))
    wide = torch.zeros(1, 4, 4, 12)
    wide[..., 3:9] = 2.0  # its centre, cropped to a's 4x6, is all 2
    assert torch.equal(LatentAdd().run(None, a, Latent(wide)).samples, torch.full((2, 4, 4, 6), 3.0))
    assert torch.equal(LatentSubtract().run(None, a, a).samples, torch.zeros(2, 4, 4, 6))
    assert torch.equal(LatentMultiply().run(None, a, multiplier=-0.5).samples, torch.full((2, 4, 4, 6), -0.5))
    with pytest.raises(NodeError, match="channels") as error:
        LatentAdd().run(None, a, Latent(torch.ones(1, 16, 4, 6)))
    assert error.value.field == "samples2"


# A subgraph whose inputs feed inner widgets (steps, cfg, sampler_name of a KSampler), saved by
# frontend 1.27 as in the published depth_t2i_adapter template (hanzoui/workflow-templates,
# archived/depth_t2i_adapter.json at 8e9beab33dcd): the instance lists only its linkable inputs,
# and the promoted widgets' values sit in its widgets_values in the definition's input order.
# They were lost: the inner KSampler ran with nodeflow's defaults (20 steps, cfg 7, dpmpp_2m).
PROMOTED = "subgraph_promoted_widgets_ui_v1.json"


def _promoted(widgets_values=None) -> dict:
    import json

    data = json.loads((FIXTURES / PROMOTED).read_text())
    if widgets_values is not None:
        (instance,) = [n for n in data["nodes"] if n["id"] == 30]
        instance["widgets_values"] = widgets_values
    return data


def _sampler_settings(graph) -> tuple:
    sampler, cfg = graph.nodes["30:3"].values, graph.nodes["30:3.cfg"].values
    return sampler["steps"], sampler["sampler"], cfg["scale"], graph.nodes["30:3.noise"].values["seed"]


def test_a_subgraph_instance_gives_its_promoted_widget_values_to_the_inner_node():
    workflow = load_workflow(FIXTURES / PROMOTED, default_registry())
    assert _sampler_settings(workflow.graph) == (4, "euler_ancestral", 6.5, 1234)  # the seed is not promoted
    assert [*workflow.problems, *validate(workflow.graph)] == []


def test_a_promoted_widget_the_instance_gives_no_value_keeps_the_inner_nodes_own():
    graph = workflow_from_dict(_promoted([]), default_registry()).graph
    assert _sampler_settings(graph) == (3, "euler", 7.5, 1234)
    graph = workflow_from_dict(_promoted([5]), default_registry()).graph  # a shorter list: the first only
    assert _sampler_settings(graph) == (5, "euler", 7.5, 1234)


def test_a_subgraph_with_promoted_widgets_runs_as_the_same_sampler_outside_it(tmp_path_factory, tmp_path):
    """The instance's values drive the run: same image as a plain KSampler set to them."""
    data = _promoted()
    (definition,) = data["definitions"]["subgraphs"]
    (sampler,) = definition["nodes"]
    flat = {k: v for k, v in data.items() if k != "definitions"}
    flat["nodes"] = [n for n in data["nodes"] if n["id"] != 30] + [{
        "id": 30, "type": "KSampler", "mode": 0, "inputs": [
            {"name": n, "type": t, "link": link} for n, t, link in
            [("model", "MODEL", 1), ("positive", "CONDITIONING", 4), ("negative", "CONDITIONING", 6), ("latent_image", "LATENT", 2)]],
        "outputs": [{"name": "LATENT", "type": "LATENT", "links": [7]}],
        "widgets_values": [1234, "fixed", 4, 6.5, "euler_ancestral", "normal", 1]}]
    assert sampler["widgets_values"][2:5] != [4, 6.5, "euler_ancestral"]  # the inner defaults differ
    settings = RunSettings(model_folders={"checkpoints": [shared_tiny_sd(tmp_path_factory).parent]})
    image = _saved_image(api.from_dict(data, device="cpu"), settings, tmp_path / "sub")
    expected = _saved_image(api.from_dict(flat, device="cpu"), settings, tmp_path / "flat")
    assert np.array_equal(image, expected)


def test_values_ordered_by_proxy_widgets_are_not_read_in_the_definitions_order():
    data = _promoted([7.0, "heun", 9])  # as if ordered cfg, sampler_name, steps
    (instance,) = [n for n in data["nodes"] if n["id"] == 30]
    instance["properties"]["proxyWidgets"] = [["3", "cfg"], ["3", "sampler_name"], ["3", "steps"]]
    graph = workflow_from_dict(data, default_registry()).graph
    assert _sampler_settings(graph) == (3, "euler", 7.5, 1234)  # the inner node's own, not shuffled ones


def test_a_subgraph_instance_listing_its_inputs_in_another_order_is_matched_by_name():
    data = _promoted()
    (instance,) = [n for n in data["nodes"] if n["id"] == 30]
    instance["inputs"] = [instance["inputs"][i] for i in (3, 0, 2, 1)]  # latent, model, negative, positive
    for link in data["links"]:  # the outer links end at the listed slots
        if link[3] == 30:
            link[4] = [s["link"] for s in instance["inputs"]].index(link[0])
    graph = workflow_from_dict(data, default_registry()).graph
    assert graph.link_into("30:3.cfg", "model").source == "4"
    assert graph.link_into("30:3.cfg", "positive").source == "6"
    assert graph.link_into("30:3.cfg", "negative").source == "7"
    assert graph.link_into("30:3", "latent").source == "5"
    assert _sampler_settings(graph) == (4, "euler_ancestral", 6.5, 1234)


@pytest.mark.parametrize("prefix, flat", [
    ("gligen/testing", "gligen_testing"),  # the published gligen_textbox_example template
    ("NESUPixel/Inpaint/Inpaint", "NESUPixel_Inpaint_Inpaint"),  # Krashl/NESUPixel workflows/inpaint.json
    ("%date:yyyy-MM-dd%/img", "%date_yyyy-MM-dd%_img"),  # the editor's date pattern, a folder per day
    ("../../etc/x", "etc_x"),
])
def test_a_save_prefix_with_subfolders_is_saved_flat_into_the_output_folder(prefix, flat, tmp_path_factory, tmp_path):
    """ComfyUI writes "a/b" under output/a/; nodeflow writes into the output folder itself and
    refused the prefix at run time, after the file had validated."""
    import json

    data = json.loads((FIXTURES / "txt2img_api.json").read_text())
    data["9"]["inputs"]["filename_prefix"] = prefix
    flow = api.from_dict(data, device="cpu")
    assert flow.graph.nodes["9"].values["filename_prefix"] == flat
    settings = RunSettings(model_folders={"checkpoints": [shared_tiny_sd(tmp_path_factory).parent]})
    result = flow.run(output_dir=tmp_path / "out", device="cpu", settings=settings)
    assert result.ok, result.error or result.problems
    assert [p.name.startswith(flat) for p in (tmp_path / "out").iterdir() if p.suffix == ".png"] == [True]
