"""Upscale models: tiny real networks of the architectures spandrel knows, built here with
random weights and saved as files, load through UpscaleModelLoader and enlarge images
exactly as spandrel's own model does; big images run in tiles without seams; hostile
files are refused naming the field; a ComfyUI workflow with an upscaler imports and runs."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import nodeflow.api as api  # noqa: E402
from nodeflow import Interrupted, NodeError, RunContext, RunSettings, check_memory  # noqa: E402
from nodes.diffusion.upscale import ImageUpscaleWithModel, UpscaleModelLoader  # noqa: E402
from tests.support import FIXTURES  # noqa: E402
from tests.support.standins import network_state, tiny_esrgan  # noqa: E402
from tests.support.tiny_models import shared_tiny_sd  # noqa: E402


def _compact(scale: int):
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(1)
    return Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=scale)


@pytest.fixture(scope="module")
def upscalers(tmp_path_factory):
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("upscale_models")
    save_file(network_state(_compact(2)), folder / "2x_compact.safetensors")
    esrgan = network_state(tiny_esrgan())
    save_file(esrgan, folder / "4x_esrgan.safetensors")
    torch.save({"params_ema": esrgan}, folder / "4x_tiny_esrgan.pth")  # as BasicSR saves them
    return folder


def _ctx(folder, **settings) -> RunContext:
    return RunContext(device="cpu", settings=RunSettings(model_folders={"upscale_models": [folder]}, **settings))


def _load(folder, name):
    return UpscaleModelLoader().run(_ctx(folder), model_name=name, dtype="fp32")


def _upscale(model, image, ctx=None, tiling="auto", tile_size=512, overlap=32):
    return ImageUpscaleWithModel().run(ctx or RunContext(), upscale_model=model, image=image, tiling=tiling,
                                       tile_size=tile_size, overlap=overlap)


def _images(batch=2, height=24, width=40, seed=0):
    return torch.rand(batch, height, width, 3, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name,architecture,scale", [
    ("2x_compact.safetensors", "RealESRGAN Compact", 2),
    ("4x_esrgan.safetensors", "ESRGAN", 4),
    ("4x_tiny_esrgan.pth", "ESRGAN", 4),
])
def test_each_model_enlarges_by_its_scale_exactly_as_spandrels_own_model(upscalers, name, architecture, scale):
    import spandrel

    model = _load(upscalers, name)
    assert (model.architecture, model.scale) == (architecture, scale)
    images = _images()
    out = _upscale(model, images)
    assert out.shape == (2, 24 * scale, 40 * scale, 3) and out.dtype == torch.float32
    assert float(out.std()) > 0.01  # a real picture, not a constant
    # spandrel's own loader on the same weights (a .pth through its own restricted unpickler)
    reference = spandrel.ModelLoader().load_from_file(str(upscalers / name)).eval()
    with torch.inference_mode():
        for index in range(2):
            expected = reference(images[index:index + 1].movedim(-1, 1)).movedim(1, -1)[0]
            assert torch.allclose(out[index], expected, atol=1e-6)


def test_different_weights_give_different_images(upscalers):
    images = _images(batch=1)
    a = _upscale(_load(upscalers, "4x_esrgan.safetensors"), images)
    b = _upscale(_load(upscalers, "2x_compact.safetensors"), images)
    assert (a[:, ::2, ::2] - b).abs().mean() > 0.05


def test_tiles_give_the_whole_image_and_report_progress_per_tile(upscalers):
    model = _load(upscalers, "2x_compact.safetensors")  # receptive field 4 pixels: within a quarter of 16
    images = _images(batch=2, height=40, width=72)
    whole = _upscale(model, images, tiling="off")
    steps = []
    ctx = RunContext(on_progress=lambda step, total, preview: steps.append((step, total)))
    tiled = _upscale(model, images, ctx, tiling="on", tile_size=32, overlap=16)
    # rows start at 0, 8 (the last moved back to the edge); columns at 0, 16, 32, 40
    assert steps == [(i, 16) for i in range(1, 17)]
    assert torch.allclose(tiled, whole, atol=1e-5)


def test_tiles_of_a_wide_network_blend_without_seams(upscalers):
    model = _load(upscalers, "4x_esrgan.safetensors")  # sees far beyond the tile edges
    images = _images(batch=1, height=48, width=48)
    whole = _upscale(model, images, tiling="off")
    tiled = _upscale(model, images, tiling="on", tile_size=32, overlap=16)
    difference = (tiled - whole).abs()
    assert float(difference.mean()) < 0.02
    assert float(difference.max()) < 0.25  # no hard seam of wrong pixels


def test_an_interruption_stops_between_tiles(upscalers):
    model = _load(upscalers, "2x_compact.safetensors")
    steps = []
    ctx = RunContext(on_progress=lambda step, total, preview: steps.append(step), is_interrupted=lambda: len(steps) >= 2)
    with pytest.raises(Interrupted):
        _upscale(model, _images(batch=1, height=64, width=64), ctx, tiling="on", tile_size=32, overlap=8)
    assert steps == [1, 2]


def test_auto_tiles_only_when_the_whole_image_would_not_fit_the_memory_budget(upscalers):
    model = _load(upscalers, "2x_compact.safetensors")
    images = _images(batch=1, height=96, width=96)
    inputs = {"upscale_model": model, "image": images, "tiling": "auto", "tile_size": 32, "overlap": 8}
    roomy = RunSettings(memory_budget=2**30)
    whole_need = ImageUpscaleWithModel.working_memory(inputs, roomy)
    assert whole_need.field == "tiling" and "without tiles" in whole_need.what
    tight = RunSettings(memory_budget=whole_need.bytes - 1)
    tiled_need = ImageUpscaleWithModel.working_memory(inputs, tight)
    assert tiled_need.field == "tile_size" and tiled_need.bytes < whole_need.bytes
    check_memory(tiled_need, tight)  # fits: runs in tiles
    steps = []
    _upscale(model, images, RunContext(settings=tight, on_progress=lambda s, t, p: steps.append(t)), tile_size=32, overlap=8)
    assert steps and steps[0] == 16  # 4 x 4 tiles
    with pytest.raises(NodeError, match="without tiles needs about") as refused:
        check_memory(ImageUpscaleWithModel.working_memory({**inputs, "tiling": "off"}, tight), tight)
    assert refused.value.field == "tiling"


def test_an_output_over_the_pixel_limit_is_refused_before_running(upscalers):
    model = _load(upscalers, "4x_esrgan.safetensors")
    ctx = _ctx(upscalers, max_batch_pixels=100_000)
    with pytest.raises(NodeError, match="more than the limit") as refused:
        _upscale(model, _images(batch=2, height=64, width=64), ctx)
    assert refused.value.field == "image"


def test_overlap_over_half_a_tile_is_a_validation_problem():
    assert "overlap" in ImageUpscaleWithModel.check_values({"tile_size": 64, "overlap": 40})
    assert ImageUpscaleWithModel.check_values({"tile_size": 64, "overlap": 32}) == {}


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-upscale-model",))


def _hostile(folder):
    from safetensors.torch import save_file

    (folder / "evil.pth").write_bytes(pickle.dumps({"params_ema": {"conv.weight": _Payload()}}))
    (folder / "garbage.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    save_file({"lora_unet_x.lora_up.weight": torch.zeros(2, 2)}, folder / "lora.safetensors")
    broken = network_state(_compact(2))
    broken["body.0.weight"] = torch.zeros(8, 3, 5, 5)  # the keys of a Compact, a tensor that does not fit
    save_file(broken, folder / "broken.safetensors")
    from spandrel.architectures.Compact import Compact

    save_file(network_state(Compact(num_in_ch=1, num_out_ch=1, num_feat=4, num_conv=1, upscale=2)), folder / "grey.safetensors")
    (folder / "nested").mkdir()
    (folder / "nested" / "model_index.json").write_text("{}")


@pytest.mark.parametrize("name,message", [
    ("evil.pth", r"evil\.pth is not a plain weights file.*never done"),
    ("garbage.safetensors", r"garbage\.safetensors is not a readable \.safetensors file"),
    ("lora.safetensors", r"lora\.safetensors no architecture spandrel supports"),
    ("broken.safetensors", r"broken\.safetensors its weights do not form a complete network"),
    ("grey.safetensors", r"grey\.safetensors is a RealESRGAN Compact model for 1-channel images"),
    ("nested", r"nested is a folder"),
    ("missing.safetensors", r"upscale model 'missing\.safetensors' not found"),
    ("../outside.safetensors", r"outside"),
])
def test_hostile_or_foreign_files_are_refused_naming_the_field(tmp_path, monkeypatch, name, message):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "upscale_models"
    folder.mkdir()
    _hostile(folder)
    from safetensors.torch import save_file

    save_file(network_state(_compact(2)), tmp_path / "outside.safetensors")
    with pytest.raises(NodeError, match=message) as refused:
        UpscaleModelLoader().run(_ctx(folder), model_name=name, dtype="fp32")
    assert refused.value.field == "model_name"
    assert not (tmp_path / "pwned-by-upscale-model").exists()


def test_validate_names_a_missing_upscale_model_with_the_nearest_name(upscalers):
    from nodeflow.model.problems import ProblemCode
    from nodeflow.model.validation import validate

    flow = api.open(FIXTURES / "comfyui" / "upscale_ui_v04.json", device="cpu")
    flow.set("10.model_name", "4x_tiny_esrgan.pt")
    problems = validate(flow.graph, context=_ctx(upscalers))
    missing = [p for p in problems if p.code == ProblemCode.MISSING_FILE and p.node_id != "4"]  # 4: no checkpoints here
    assert [(p.node_id, p.node_type, p.field) for p in missing] == [("10", "UpscaleModelLoader", "model_name")]
    assert "'4x_tiny_esrgan.pth'" in missing[0].message


def test_a_comfyui_workflow_with_an_upscale_model_imports_and_runs(upscalers, tmp_path_factory, tmp_path):
    tiny = shared_tiny_sd(tmp_path_factory)
    flow = api.open(FIXTURES / "comfyui" / "upscale_ui_v04.json", device="cpu")
    graph = flow.graph
    assert graph.nodes["10"].type == "UpscaleModelLoader" and graph.nodes["10"].values["model_name"] == "4x_tiny_esrgan.pth"
    assert graph.nodes["9"].type == "ImageUpscaleWithModel" and graph.link_into("9", "upscale_model").source == "10"
    assert graph.nodes["11"].values["method"] == "bislerp"
    flow.set("4.checkpoint", tiny.name)
    settings = RunSettings(model_folders={"checkpoints": [tiny.parent], "upscale_models": [upscalers]})
    result = flow.run(output_dir=tmp_path, settings=settings, outputs=["9", "12"])
    upscaled = result.outputs["9"]["image"]
    saved = result.outputs["12"]["images"]
    assert upscaled.shape == (1, 128, 128, 3)  # 32 x 32 decoded, x4
    assert saved.shape == (1, 64, 64, 3)  # then halved by ImageScaleBy (bislerp)
    assert np.isfinite(saved.numpy()).all() and float(saved.std()) > 0.01



# -- bislerp (ImageScale / LatentUpscale "bislerp", e.g. after an upscale model) --------------

def test_bislerp_equals_bilinear_for_vectors_of_one_direction_and_keeps_length_between_others():
    import torch.nn.functional as F

    from nodes.diffusion.impl.resample import bislerp

    grey = torch.rand(1, 1, 6, 9, generator=torch.Generator().manual_seed(4)) + 0.1
    colour = torch.tensor([0.2, 0.5, 0.9]).view(1, 3, 1, 1)
    samples = grey * colour  # every pixel points the same way
    expected = F.interpolate(samples, size=(11, 17), mode="bilinear", align_corners=False)
    assert torch.allclose(bislerp(samples, 11, 17), expected, atol=1e-5)

    two = torch.zeros(1, 2, 1, 2)
    two[0, 0, 0, 0] = 1.0  # (1, 0) beside (0, 1)
    two[0, 1, 0, 1] = 1.0
    between = bislerp(two, 1, 4)
    assert torch.allclose(between.norm(dim=1), torch.ones(1, 1, 4), atol=1e-5)  # bilinear: 0.79 in between
    assert float(F.interpolate(two, size=(1, 4), mode="bilinear").norm(dim=1).min()) < 0.8


def test_imagescale_and_latentupscale_take_bislerp():
    from nodes.diffusion.image_ops import ImageScaleBy
    from nodes.diffusion.latent import LatentUpscale
    from nodes.diffusion.types import Latent

    image = _images(batch=1, height=16, width=16)
    scaled = ImageScaleBy().run(RunContext(), image=image, method="bislerp", scale_by=0.5)
    assert scaled.shape == (1, 8, 8, 3) and 0.0 <= float(scaled.min()) and float(scaled.max()) <= 1.0
    latent = Latent(torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5)))
    bigger = LatentUpscale().run(RunContext(), latent=latent, method="bislerp", width=0, height=0, scale_by=2.0)
    plain = LatentUpscale().run(RunContext(), latent=latent, method="bilinear", width=0, height=0, scale_by=2.0)
    assert bigger.samples.shape == (1, 4, 16, 16)
    # slerp keeps the vectors' length where bilinear shrinks it
    assert float(bigger.samples.norm(dim=1).mean()) > float(plain.samples.norm(dim=1).mean())


def test_validate_reports_missing_vae_lora_and_controlnet_files_too(tmp_path):
    from nodeflow.model.problems import ProblemCode
    from nodeflow.model.validation import validate
    from nodeflow.model.registry import default_registry
    from nodeflow.files.open import workflow_from_dict

    data = {
        "1": {"class_type": "VAELoader", "inputs": {"vae_name": "vae-ft-mse.safetensors"}},
        "2": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "canny.safetensors"}},
        "3": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
        "4": {"class_type": "LoraLoader", "inputs": {"model": ["3", 0], "clip": ["3", 1], "lora_name": "style.safetensors",
                                                     "strength_model": 1.0, "strength_clip": 1.0}},
    }
    graph = workflow_from_dict(data, default_registry()).graph
    settings = RunSettings(model_folders={kind: [tmp_path] for kind in ("vae", "controlnet", "checkpoints", "loras")})
    missing = {(p.node_type, p.field) for p in validate(graph, context=RunContext(settings=settings))
               if p.code == ProblemCode.MISSING_FILE}
    assert {("VAELoader", "vae_name"), ("ControlNetLoader", "control_net_name"), ("LoRA", "lora_name")} <= missing
