"""ControlNet Union on the tiny SDXL model: a union file as published (one file, diffusers'
key names) and a diffusers folder load to the same network; the graph's image with a
control type equals StableDiffusionXLControlNetUnionPipeline's with that control mode;
another type gives another image; "auto" is a plain ControlNet's use of the hint (as in
ComfyUI); a type on a plain ControlNet, or one the model was not trained on, is refused
naming the node and field; a ComfyUI workflow with SetUnionControlNetType imports and runs."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import nodeflow.api as api  # noqa: E402
from nodeflow import RunSettings  # noqa: E402
from tests.packs.diffusion.test_controlnet import hint_dir  # noqa: E402,F401  (fixture: a 32x32 hint image)
from tests.support import FIXTURES, WORKFLOWS  # noqa: E402
from tests.support.standins import tiny_union_controlnet  # noqa: E402
from tests.support.tiny_models import shared_tiny_sdxl  # noqa: E402

PROMPT, NEGATIVE, SEED, STEPS, SCALE = "a red circle", "a green background", 11, 4, 7.5
TOLERANCE = 1e-4
UNION_FILE = "diffusion_pytorch_model_promax.safetensors"  # the published ProMax file's name


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory):
    return shared_tiny_sdxl(tmp_path_factory)


@pytest.fixture(scope="module")
def unions(sdxl, tmp_path_factory):
    """A controlnet folder: the ProMax-like union (8 types) as a diffusers folder and as a
    published single file, a 6-type union file, and a plain SDXL ControlNet."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("union")
    promax = tiny_union_controlnet(sdxl, 8)
    promax.save_pretrained(folder / "union_folder")
    save_file({k: v.contiguous() for k, v in promax.state_dict().items()}, folder / UNION_FILE)
    save_file({k: v.contiguous() for k, v in tiny_union_controlnet(sdxl, 6, seed=8).state_dict().items()},
              folder / "union_six.safetensors")
    torch.manual_seed(9)
    plain = ControlNetModel.from_unet(UNet2DConditionModel.from_pretrained(sdxl / "unet"),
                                      conditioning_embedding_out_channels=(16, 32))
    plain.save_pretrained(folder / "plain_cn")
    # xinsir's repository layout for ProMax, alone in a folder: config_promax.json and the
    # _promax weights, with diffusers' class name and with ControlNetModel (as xinsir's own
    # configs name their union class's model)
    for name, class_name in (("promax_folder", "ControlNetUnionModel"), ("promax_xinsir", "ControlNetModel")):
        (folder / name).mkdir()
        config = json.loads((folder / "union_folder" / "config.json").read_text())
        (folder / name / "config_promax.json").write_text(json.dumps({**config, "_class_name": class_name}))
        shutil.copy(folder / UNION_FILE, folder / name / UNION_FILE)
    return folder


def _settings(sdxl, unions):
    return RunSettings(model_folders={"checkpoints": [sdxl.parent], "controlnet": [unions]})


def _flow(sdxl, net=UNION_FILE, control_type="depth", strength=0.8):
    flow = api.open(WORKFLOWS / "txt2img.json", device="cpu")
    flow.set("1.checkpoint", sdxl.name).set("Prompt.text", PROMPT).set("Negative prompt.text", NEGATIVE)
    flow.set("5.seed", SEED).set("6.scale", SCALE).set("7.steps", STEPS).set("7.sampler", "euler")
    flow.add("LoadImage", node_id="hint", image="hint.png")
    flow.add("ControlNetLoader", node_id="cn", control_net_name=net)
    flow.add("SetUnionControlNetType", node_id="kind", control_type=control_type)
    flow.add("ControlNetApplyAdvanced", node_id="apply", strength=strength)
    flow.connect("cn.control_net", "kind.control_net").connect("kind.control_net", "apply.control_net")
    flow.connect("2.conditioning", "apply.positive").connect("3.conditioning", "apply.negative")
    flow.connect("hint.image", "apply.image")
    flow.connect("apply.positive", "6.positive").connect("apply.negative", "6.negative")
    return flow


def _run(flow, sdxl, unions, hint_dir, tmp_path):
    result = flow.run(output_dir=tmp_path, input_dir=hint_dir, settings=_settings(sdxl, unions))
    return result.outputs["9"]["images"].numpy()


def _load(sdxl, unions, name):
    from nodeflow.model.node import RunContext
    from nodes.diffusion.controlnet import ControlNetLoader

    return ControlNetLoader().run(RunContext(device="cpu", settings=_settings(sdxl, unions)), control_net_name=name,
                                  dtype="fp32")


def _inputs():
    import torch

    generator = torch.Generator().manual_seed(0)
    x, hint = torch.randn(1, 4, 8, 8, generator=generator), torch.rand(1, 3, 16, 16, generator=generator)
    text = torch.randn(1, 77, 96, generator=generator)
    added = {"text_embeds": torch.randn(1, 64, generator=generator), "time_ids": torch.tensor([[16.0, 16, 0, 0, 16, 16]])}
    return x, hint, text, added


@pytest.mark.parametrize("name", [UNION_FILE, "union_folder", "promax_folder", "promax_xinsir"])
def test_a_union_file_as_published_and_its_folder_load_to_the_same_network(sdxl, unions, name):
    import torch
    from diffusers import ControlNetUnionModel

    loaded = _load(sdxl, unions, name)
    assert loaded.kind == "controlnet_union" and loaded.model.config.num_control_type == 8
    reference = ControlNetUnionModel.from_pretrained(unions / "union_folder").eval()
    x, hint, text, added = _inputs()
    control_type = torch.zeros(1, 8)
    control_type[0, 3] = 1
    with torch.no_grad():
        ours = loaded.model(x, 500, text, [hint], control_type, [3], added_cond_kwargs=added, return_dict=False)
        theirs = reference(x, 500, text, [hint], control_type, [3], added_cond_kwargs=added, return_dict=False)
    for a, b in zip([*ours[0], ours[1]], [*theirs[0], theirs[1]]):
        assert torch.allclose(a, b, atol=1e-5)
    assert ours[1].abs().max() > 1e-3


def test_a_folder_of_only_the_promax_pair_is_offered_and_told_a_union(sdxl, unions):
    """The folder is a choice of its own (not its weights file), known as an 8-type union
    before it loads, and estimated at the weights it holds, as the published file is."""
    from nodeflow.model.node import RunContext
    from nodes.diffusion.controlnet import ControlNetLoader
    from nodes.diffusion.impl.paths import list_models

    settings = _settings(sdxl, unions)
    names = list_models("controlnet", settings)
    assert {"promax_folder", "promax_xinsir"} <= set(names)
    assert not any(name.startswith("promax_") and "/" in name for name in names)
    ctx = RunContext(device="cpu", settings=settings)
    published = ControlNetLoader.estimate_memory({"control_net_name": UNION_FILE, "dtype": "fp32"}, {}, ctx)
    for name in ("promax_folder", "promax_xinsir"):
        assert ControlNetLoader.output_facts({"control_net_name": name}, settings) == {"union_types": 8}
        assert ControlNetLoader.check_host({"control_net_name": name}, ctx) == {}
        estimate = ControlNetLoader.estimate_memory({"control_net_name": name, "dtype": "fp32"}, {}, ctx)
        assert estimate.holds == published.holds > 0


@pytest.mark.slow
def test_the_image_with_a_control_type_equals_the_union_pipeline_and_another_type_changes_it(
    sdxl, unions, hint_dir, tmp_path
):
    import torch
    from diffusers import ControlNetUnionModel, EulerDiscreteScheduler, StableDiffusionXLControlNetUnionPipeline
    from PIL import Image

    depth = _run(_flow(sdxl, control_type="depth"), sdxl, unions, hint_dir, tmp_path)
    pipe = StableDiffusionXLControlNetUnionPipeline.from_pretrained(
        sdxl, controlnet=ControlNetUnionModel.from_pretrained(unions / "union_folder"), local_files_only=True,
    )
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    reference = pipe(
        PROMPT, negative_prompt=NEGATIVE, control_image=[Image.open(hint_dir / "hint.png")], control_mode=[1],
        controlnet_conditioning_scale=0.8, num_inference_steps=STEPS, guidance_scale=SCALE, height=32, width=32,
        generator=torch.Generator("cpu").manual_seed(SEED), output_type="np",
    ).images
    assert np.abs(depth - reference).max() <= TOLERANCE

    canny = _run(_flow(sdxl, control_type="canny/lineart/anime_lineart/mlsd"), sdxl, unions, hint_dir, tmp_path)
    assert np.abs(canny - depth).max() > 1e-3
    folder = _run(_flow(sdxl, net="union_folder", control_type="depth"), sdxl, unions, hint_dir, tmp_path)
    assert np.abs(folder - depth).max() <= 1e-6


def test_auto_uses_the_hint_as_a_plain_controlnet_does(sdxl, unions):
    """ComfyUI's "auto" gives the union no type: an all-zero type vector and the hint encoded
    and added to the latent's first features, as a plain ControlNet does. A ControlNetModel
    with the union's shared weights, and the type embedding's output zeroed, is that."""
    import torch
    from diffusers import ControlNetModel

    from nodes.diffusion.controlnet import SetUnionControlNetType
    from nodes.diffusion.impl.controlnet import ControlHint, residual_function

    loaded = _load(sdxl, unions, UNION_FILE)
    with torch.no_grad():
        for param in loaded.model.control_add_embedding.linear_2.parameters():
            param.zero_()
    config = {k: v for k, v in loaded.model.config.items() if not k.startswith(("num_control", "num_trans", "num_proj"))}
    plain = ControlNetModel.from_config(config).eval()
    missing, _ = plain.load_state_dict(loaded.model.state_dict(), strict=False)
    assert missing == []

    x, hint, text, added = _inputs()
    image = hint.permute(0, 2, 3, 1)  # IMAGE layout
    auto = SetUnionControlNetType().run(None, loaded, "auto")
    typed = SetUnionControlNetType().run(None, loaded, "depth")
    t = torch.tensor(500)
    with torch.no_grad():
        ours = residual_function((ControlHint(auto, image, 0.7),), text, added, tuple(x.shape), 1000)(x, t)
        other = residual_function((ControlHint(typed, image, 0.7),), text, added, tuple(x.shape), 1000)(x, t)
        down, mid = plain(x, t, text, hint, conditioning_scale=0.7, added_cond_kwargs=added, return_dict=False)
    for a, b in zip([*ours["down_block_additional_residuals"], ours["mid_block_additional_residual"]], [*down, mid]):
        assert torch.allclose(a, b, atol=1e-5)
    assert (other["mid_block_additional_residual"] - mid).abs().max() > 1e-3


def test_a_control_type_on_a_plain_controlnet_is_refused_naming_the_node_and_field(sdxl, unions, hint_dir, tmp_path):
    result = _flow(sdxl, net="plain_cn", control_type="depth").run(
        output_dir=tmp_path, input_dir=hint_dir, settings=_settings(sdxl, unions), check=False)
    assert not result.ok
    assert (result.failed_node, result.failed_field) == ("kind", "control_type")
    assert "plain_cn is not a ControlNet Union" in result.error


def test_a_type_the_union_was_not_trained_on_is_refused(sdxl, unions):
    from nodeflow import NodeError
    from nodes.diffusion.controlnet import SetUnionControlNetType

    six = _load(sdxl, unions, "union_six.safetensors")
    assert SetUnionControlNetType().run(None, six, "segment").union_type == 5
    with pytest.raises(NodeError, match="knows 6 control types, not 'tile'.*ProMax") as error:
        SetUnionControlNetType().run(None, six, "tile")
    assert error.value.field == "control_type"


@pytest.mark.slow
def test_a_comfyui_workflow_with_set_union_controlnet_type_imports_and_runs(sdxl, unions, hint_dir, tmp_path):
    flow = api.open(FIXTURES / "comfyui" / "union_ui_v04.json", device="cpu")
    kind = next(node for node in flow.graph.nodes.values() if node.type == "SetUnionControlNetType")
    assert kind.values["control_type"] == "depth"
    assert flow.graph.link_into(kind.id, "control_net").source == "6"
    flow.set("1.checkpoint", sdxl.name)
    result = flow.run(output_dir=tmp_path, input_dir=hint_dir, settings=_settings(sdxl, unions))
    ours = result.outputs["12"]["images"].numpy()
    native = _run(_flow(sdxl, control_type="depth", strength=0.8), sdxl, unions, hint_dir, tmp_path)
    assert np.abs(ours - native).max() <= 1e-6


def test_the_editor_warns_before_a_run_when_the_type_does_not_fit_the_loaded_file(sdxl, unions, tmp_path):
    """The loader tells from the file's header (or a folder's config) how many control types
    its model knows; the union-type node warns on a type the run would refuse."""
    from nodeflow.editor.controller import EditorController
    from nodeflow.model.registry import default_registry

    ctl = EditorController(default_registry(), config_folder=tmp_path / "config",
                           run_options={"settings": _settings(sdxl, unions)})
    loader = ctl.add_node("ControlNetLoader", (0, 0), {"control_net_name": "plain_cn"})
    kind = ctl.add_node("SetUnionControlNetType", (300, 0), {"control_type": "depth"})
    assert ctl.connect(loader, "control_net", kind, "control_net") is None
    assert "not a union model" in ctl.advice(kind)[1]["control_type"]
    ctl.set_value(kind, "control_type", "auto")
    assert ctl.advice(kind) == ({}, {})

    ctl.set_value(kind, "control_type", "tile")
    for name, warned in ((UNION_FILE, False), ("union_folder", False), ("union_six.safetensors", True)):
        ctl.set_value(loader, "control_net_name", name)
        warnings = ctl.advice(kind)[1]
        assert ("needs ProMax" in warnings.get("control_type", "")) is warned, name
