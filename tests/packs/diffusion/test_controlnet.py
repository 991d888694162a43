"""ControlNet on the tiny SD model: the graph's image equals StableDiffusionControlNetPipeline's
(one ControlNet, and several at once); single files in the original layout load to the
same network as diffusers folders; strength and schedule range act."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import nodeflow.api as api  # noqa: E402
from nodeflow import RunSettings  # noqa: E402
from tests.support import WORKFLOWS  # noqa: E402
from tests.support.standins import controlnet_original_layout, tiny_controlnet  # noqa: E402
from tests.support.tiny_models import shared_tiny_sd  # noqa: E402

PROMPT, NEGATIVE, SEED, STEPS, SCALE = "a red circle", "a green background", 11, 4, 7.5
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return shared_tiny_sd(tmp_path_factory)


@pytest.fixture(scope="module")
def controlnets(tiny_sd, tmp_path_factory):
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("controlnet")
    # Hint encoder (16, 32): one 2x downscale, the tiny VAE's factor.
    tiny_controlnet(tiny_sd, (16, 32)).save_pretrained(folder / "tiny_cn")
    # The standard hint encoder (8x), as every released SD ControlNet has, for the single-file layout.
    standard = tiny_controlnet(tiny_sd, (16, 32, 96, 256))
    standard.save_pretrained(folder / "standard_cn")
    save_file(controlnet_original_layout(standard), folder / "standard_cn.safetensors")
    save_file({k[len("control_model."):]: v for k, v in controlnet_original_layout(standard).items()}, folder / "bare_cn.safetensors")
    # As lllyasviel's diffusers_xl_*_full files are published: one file under diffusers' own names.
    save_file({k: v.contiguous() for k, v in standard.state_dict().items()}, folder / "diffusers_cn.safetensors")
    return folder


@pytest.fixture(scope="module")
def hint_dir(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("input")
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / "hint.png")
    return folder


def _settings(tiny_sd, controlnets):
    return RunSettings(model_folders={"checkpoints": [tiny_sd.parent], "controlnet": [controlnets]})


def _flow(tiny_sd, strengths=(1.0,), start=0.0, end=1.0, net="tiny_cn"):
    flow = api.open(WORKFLOWS / "txt2img.json", device="cpu")
    flow.set("1.checkpoint", tiny_sd.name).set("Prompt.text", PROMPT).set("Negative prompt.text", NEGATIVE)
    flow.set("5.seed", SEED).set("6.scale", SCALE).set("7.steps", STEPS).set("7.sampler", "euler")
    flow.add("LoadImage", node_id="hint", image="hint.png")
    flow.add("ControlNetLoader", node_id="cn", control_net_name=net)
    positive, negative = "2.conditioning", "3.conditioning"
    for index, strength in enumerate(strengths):
        node = flow.add("ControlNetApplyAdvanced", node_id=f"apply{index}", strength=strength,
                        start_percent=start, end_percent=end)
        flow.connect(positive, f"{node}.positive").connect(negative, f"{node}.negative")
        flow.connect("cn.control_net", f"{node}.control_net").connect("hint.image", f"{node}.image")
        positive, negative = f"{node}.positive", f"{node}.negative"
    flow.connect(positive, "6.positive").connect(negative, "6.negative")
    return flow


def _run(flow, tiny_sd, controlnets, hint_dir, tmp_path):
    result = flow.run(output_dir=tmp_path, input_dir=hint_dir, settings=_settings(tiny_sd, controlnets))
    return result.outputs["9"]["images"].numpy()


def _pipeline(tiny_sd, controlnets, hint_dir, scales):
    import torch
    from diffusers import ControlNetModel, EulerDiscreteScheduler, StableDiffusionControlNetPipeline
    from PIL import Image

    net = ControlNetModel.from_pretrained(controlnets / "tiny_cn")
    pipe = StableDiffusionControlNetPipeline.from_pretrained(
        tiny_sd, controlnet=[net] * len(scales) if len(scales) > 1 else net, local_files_only=True, safety_checker=None,
    )
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    image = Image.open(hint_dir / "hint.png")
    return pipe(
        PROMPT, image=[image] * len(scales) if len(scales) > 1 else image, negative_prompt=NEGATIVE,
        num_inference_steps=STEPS, guidance_scale=SCALE, controlnet_conditioning_scale=list(scales) if len(scales) > 1 else scales[0],
        generator=torch.Generator("cpu").manual_seed(SEED), height=32, width=32, output_type="np",
    ).images


@pytest.mark.slow
@pytest.mark.parametrize("strengths", [(0.8,), (0.5, 0.3)])
def test_controlnet_image_equals_the_controlnet_pipeline(tiny_sd, controlnets, hint_dir, tmp_path, strengths):
    ours = _run(_flow(tiny_sd, strengths), tiny_sd, controlnets, hint_dir, tmp_path)
    reference = _pipeline(tiny_sd, controlnets, hint_dir, strengths)
    assert np.abs(ours - reference).max() <= TOLERANCE


def test_strength_and_schedule_range_change_the_image(tiny_sd, controlnets, hint_dir, tmp_path):
    plain = api.open(WORKFLOWS / "txt2img.json", device="cpu")
    plain.set("1.checkpoint", tiny_sd.name).set("Prompt.text", PROMPT).set("Negative prompt.text", NEGATIVE)
    plain.set("5.seed", SEED).set("6.scale", SCALE).set("7.steps", STEPS).set("7.sampler", "euler")
    base = _run(plain, tiny_sd, controlnets, hint_dir, tmp_path)
    zero = _run(_flow(tiny_sd, (0.0,)), tiny_sd, controlnets, hint_dir, tmp_path)
    full = _run(_flow(tiny_sd, (1.0,)), tiny_sd, controlnets, hint_dir, tmp_path)
    late = _run(_flow(tiny_sd, (1.0,), start=0.5), tiny_sd, controlnets, hint_dir, tmp_path)
    assert np.abs(zero - base).max() <= 1e-6
    assert np.abs(full - base).max() > 1e-2
    assert np.abs(late - full).max() > 1e-3 and np.abs(late - base).max() > 1e-3


def test_apply_to_the_prompt_only_differs_from_both(tiny_sd, controlnets, hint_dir, tmp_path):
    both = _run(_flow(tiny_sd, (1.0,)), tiny_sd, controlnets, hint_dir, tmp_path)
    flow = _flow(tiny_sd, (1.0,))
    flow.add("ControlNetApply", node_id="only", strength=1.0)
    flow.connect("2.conditioning", "only.conditioning").connect("cn.control_net", "only.control_net")
    flow.connect("hint.image", "only.image").connect("only.conditioning", "6.positive").connect("3.conditioning", "6.negative")
    positive_only = _run(flow, tiny_sd, controlnets, hint_dir, tmp_path)
    assert np.abs(positive_only - both).max() > 1e-3


@pytest.mark.parametrize("name", ["standard_cn.safetensors", "bare_cn.safetensors", "diffusers_cn.safetensors"])
def test_a_single_file_controlnet_is_the_same_network_as_its_folder(tiny_sd, controlnets, name):
    import torch
    from diffusers import ControlNetModel

    from nodeflow.model.node import RunContext
    from nodes.diffusion.controlnet import ControlNetLoader

    ctx = RunContext(device="cpu", settings=_settings(tiny_sd, controlnets))
    loaded = ControlNetLoader().run(ctx, control_net_name=name, dtype="fp32")
    reference = ControlNetModel.from_pretrained(controlnets / "standard_cn").eval()
    generator = torch.Generator().manual_seed(0)
    x, hint = torch.randn(1, 4, 8, 8, generator=generator), torch.rand(1, 3, 64, 64, generator=generator)
    text = torch.randn(1, 77, 32, generator=generator)
    with torch.no_grad():
        ours = loaded.model(x, 500, encoder_hidden_states=text, controlnet_cond=hint, return_dict=False)
        theirs = reference(x, 500, encoder_hidden_states=text, controlnet_cond=hint, return_dict=False)
    for a, b in zip([*ours[0], ours[1]], [*theirs[0], theirs[1]]):
        assert torch.allclose(a, b, atol=1e-5)
    assert ours[1].abs().max() > 1e-3


def test_a_file_that_is_not_a_controlnet_is_refused_naming_the_field(tiny_sd, controlnets, tmp_path):
    import torch
    from safetensors.torch import save_file

    from nodeflow.model.node import NodeError, RunContext
    from nodes.diffusion.controlnet import ControlNetLoader

    save_file({"encoder.conv_in.weight": torch.zeros(2, 2)}, tmp_path / "vae.safetensors")
    ctx = RunContext(device="cpu", settings=RunSettings(model_folders={"controlnet": [tmp_path]}))
    with pytest.raises(NodeError, match="not a ControlNet") as error:
        ControlNetLoader().run(ctx, control_net_name="vae.safetensors", dtype="fp32")
    assert error.value.field == "control_net_name"


@pytest.mark.slow
def test_t2i_adapter_image_equals_the_adapter_pipeline(tiny_sd, controlnets, hint_dir, tmp_path):
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionAdapterPipeline, StableDiffusionPipeline, T2IAdapter
    from PIL import Image

    torch.manual_seed(6)
    adapter = T2IAdapter(in_channels=3, channels=[32, 64], num_res_blocks=1, downscale_factor=2, adapter_type="full_adapter")
    adapter.save_pretrained(controlnets / "tiny_t2i")
    ours = _run(_flow(tiny_sd, (0.7,), net="tiny_t2i"), tiny_sd, controlnets, hint_dir, tmp_path)
    plain = _run(_flow(tiny_sd, (0.0,), net="tiny_t2i"), tiny_sd, controlnets, hint_dir, tmp_path)
    assert np.abs(ours - plain).max() > 1e-2

    base = StableDiffusionPipeline.from_pretrained(tiny_sd, local_files_only=True, safety_checker=None)
    parts = {k: v for k, v in base.components.items() if k != "image_encoder"}
    pipe = StableDiffusionAdapterPipeline(**parts, adapter=T2IAdapter.from_pretrained(controlnets / "tiny_t2i"))
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    reference = pipe(
        PROMPT, image=Image.open(hint_dir / "hint.png"), negative_prompt=NEGATIVE, num_inference_steps=STEPS,
        guidance_scale=SCALE, adapter_conditioning_scale=0.7, generator=torch.Generator("cpu").manual_seed(SEED),
        height=32, width=32, output_type="np",
    ).images
    assert np.abs(ours - reference).max() <= TOLERANCE


@pytest.mark.slow
def test_sdxl_controlnet_image_equals_the_sdxl_controlnet_pipeline(tmp_path_factory, hint_dir, tmp_path):
    """SDXL ControlNets also take the pooled text embedding and the size time ids."""
    import torch
    from diffusers import ControlNetModel, EulerDiscreteScheduler, StableDiffusionXLControlNetPipeline, UNet2DConditionModel
    from PIL import Image

    from nodeflow.model.node import RunContext
    from nodes.diffusion.controlnet import ControlNetApplyAdvanced, ControlNetLoader
    from nodes.diffusion.images import LoadImage
    from nodes.diffusion.latent import EmptyLatent
    from nodes.diffusion.loaders import Checkpoint
    from nodes.diffusion.sampling import CFG, Noise, Sampler
    from nodes.diffusion.text import TextEncoder
    from nodes.diffusion.vae import VAEDecode
    from tests.support.tiny_models import shared_tiny_sdxl

    sdxl = shared_tiny_sdxl(tmp_path_factory)
    folder = tmp_path / "cn"
    net = ControlNetModel.from_unet(UNet2DConditionModel.from_pretrained(sdxl / "unet"), conditioning_embedding_out_channels=(16, 32))
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for name, param in net.named_parameters():
            if name.startswith(("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding.conv_out")):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    net.save_pretrained(folder / "xl_cn")

    ctx = RunContext(device="cpu", input_dir=str(hint_dir),
                     settings=RunSettings(model_folders={"checkpoints": [sdxl.parent], "controlnet": [folder]}))
    loaded = Checkpoint().run(ctx, sdxl.name, "fp32", "auto")
    positive = TextEncoder().run(ctx, loaded["clip"], PROMPT, 1)
    negative = TextEncoder().run(ctx, loaded["clip"], NEGATIVE, 1)
    control = ControlNetLoader().run(ctx, "xl_cn", "fp32")
    hint = torch.from_numpy(np.asarray(Image.open(hint_dir / "hint.png"), dtype=np.float32) / 255.0)[None]
    applied = ControlNetApplyAdvanced().run(ctx, positive, negative, control, hint, None, 0.8, 0.0, 1.0)
    latent = EmptyLatent().run(ctx, width=32, height=32, batch=1, vae=loaded["vae"])
    guider = CFG().run(ctx, loaded["model"], applied["positive"], applied["negative"], SCALE, 0.0)
    out = Sampler().run(ctx, Noise().run(ctx, SEED), guider, latent, "euler", "normal", STEPS, 1.0, 0.0)
    ours = VAEDecode().run(ctx, loaded["vae"], out, "off", 512).numpy()

    pipe = StableDiffusionXLControlNetPipeline.from_pretrained(
        sdxl, controlnet=ControlNetModel.from_pretrained(folder / "xl_cn"), local_files_only=True,
    )
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    reference = pipe(
        PROMPT, negative_prompt=NEGATIVE, image=Image.open(hint_dir / "hint.png"), controlnet_conditioning_scale=0.8,
        num_inference_steps=STEPS, guidance_scale=SCALE, height=32, width=32,
        generator=torch.Generator("cpu").manual_seed(SEED), output_type="np",
    ).images
    assert np.abs(ours - reference).max() <= TOLERANCE
