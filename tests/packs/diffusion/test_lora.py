"""LoRA on the tiny SD model: a LoRA made with peft, saved in the kohya/A1111 and the
diffusers layout, gives the image diffusers' pipeline gives with ``load_lora_weights``;
strengths stack; the cached base model is left exactly as it was."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import nodeflow.api as api  # noqa: E402
from nodeflow import RunSettings  # noqa: E402
from tests.support import WORKFLOWS  # noqa: E402
from tests.support.standins import kohya_state, lora_layers  # noqa: E402
from tests.support.tiny_models import shared_tiny_sd  # noqa: E402

PROMPT, NEGATIVE, SEED, STEPS, SCALE = "a red circle", "a green background", 7, 4, 7.5
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return shared_tiny_sd(tmp_path_factory)


@pytest.fixture(scope="module")
def loras(tiny_sd, tmp_path_factory):
    """One random LoRA (UNet attention by peft, text-encoder attention), written in the
    diffusers and the kohya layout; also returns its text-encoder matrices, for a reference
    built without any LoRA loader."""
    import torch
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("loras")
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd, local_files_only=True, safety_checker=None)
    unet_layers, text_layers, text_deltas = lora_layers(pipe)
    StableDiffusionPipeline.save_lora_weights(
        folder, unet_lora_layers=unet_layers, text_encoder_lora_layers=text_layers["text_encoder"],
        weight_name="diffusers_lora.safetensors",
    )
    kohya = kohya_state(unet_layers, text_layers)
    assert any(k.startswith("lora_unet_down_blocks_0_attentions_0") for k in kohya)
    assert any(k.startswith("lora_te_text_model_encoder_layers_0") for k in kohya)
    save_file(kohya, folder / "kohya_lora.safetensors")
    save_file({"something.else": torch.zeros(3)}, folder / "not_a_lora.safetensors")
    return SimpleNamespace(folder=folder, text_deltas=text_deltas)


def _settings(tiny_sd, loras) -> RunSettings:
    return RunSettings(model_folders={"checkpoints": [tiny_sd.parent], "loras": [loras.folder]})


@pytest.fixture()
def flow(tiny_sd):
    flow = api.open(WORKFLOWS / "txt2img.json", device="cpu")
    flow.set("1.checkpoint", tiny_sd.name).set("Prompt.text", PROMPT).set("Negative prompt.text", NEGATIVE)
    flow.set("5.seed", SEED).set("6.scale", SCALE).set("7.steps", STEPS).set("7.sampler", "euler")
    return flow


def _with_lora(flow, name, strength_model=1.0, strength_clip=1.0, source="1", node_id=None):
    node = flow.add("LoRA", node_id=node_id, lora_name=name, strength_model=strength_model, strength_clip=strength_clip)
    flow.connect(f"{source}.model", f"{node}.model").connect(f"{source}.clip", f"{node}.clip")
    flow.connect(f"{node}.model", "6.model").connect(f"{node}.clip", "2.clip").connect(f"{node}.clip", "3.clip")
    return node


def _image(flow, tmp_path, tiny_sd, loras):
    result = flow.run(output_dir=tmp_path, settings=_settings(tiny_sd, loras))
    return result, result.outputs["9"]["images"].numpy()


def _pipeline_image(tiny_sd, loras, files_and_weights):
    """StableDiffusionPipeline with the UNet LoRA(s) through diffusers' own loader
    (``lora_state_dict`` + ``load_lora_into_unet``, what ``load_lora_weights`` does) and
    the text-encoder part merged into the weights by hand, W + strength * up @ down.
    (transformers' own text-encoder adapter path needs a newer peft than is available.)"""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd, local_files_only=True, safety_checker=None)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    names = []
    for index, (weight_name, weight) in enumerate(files_and_weights):
        state, alphas = pipe.lora_state_dict(loras.folder / weight_name)
        pipe.load_lora_into_unet(state, alphas, pipe.unet, adapter_name=f"a{index}")
        names.append(f"a{index}")
        modules = dict(pipe.text_encoder.named_modules())
        with torch.no_grad():
            for name, delta in loras.text_deltas.items():
                modules[name].weight += weight * delta
    pipe.unet.set_adapters(names, [w for _, w in files_and_weights])
    return pipe(
        PROMPT, negative_prompt=NEGATIVE, num_inference_steps=STEPS, guidance_scale=SCALE,
        generator=torch.Generator("cpu").manual_seed(SEED), height=32, width=32, output_type="np",
    ).images


@pytest.mark.slow
@pytest.mark.parametrize("name", ["diffusers_lora.safetensors", "kohya_lora.safetensors"])
def test_lora_image_equals_the_pipeline_with_load_lora_weights(flow, tiny_sd, loras, tmp_path, name):
    _with_lora(flow, name, 0.7, 0.7)
    _, ours = _image(flow, tmp_path, tiny_sd, loras)
    reference = _pipeline_image(tiny_sd, loras, [(name, 0.7)])
    assert np.abs(ours - reference).max() <= TOLERANCE


def test_the_cached_base_model_gives_the_same_image_after_a_lora_run(flow, tiny_sd, loras, tmp_path):
    _, base = _image(flow, tmp_path, tiny_sd, loras)
    _with_lora(flow, "kohya_lora.safetensors", node_id="L")
    _, with_lora = _image(flow, tmp_path, tiny_sd, loras)
    assert np.abs(with_lora - base).max() > 1e-2  # the LoRA has an effect

    flow.set("L.strength_model", 0.5)
    result, weaker = _image(flow, tmp_path, tiny_sd, loras)
    assert "1" in result.cached and "L" in result.executed  # no checkpoint re-read for a new strength
    assert np.abs(weaker - with_lora).max() > 1e-3

    # Back to the base model, with a new seed so that the sampler really runs again on the
    # shared (adapter-carrying) UNet; the reference is the same seed in a fresh flow, whose
    # checkpoint never saw a LoRA.
    flow.connect("1.model", "6.model").connect("1.clip", "2.clip").connect("1.clip", "3.clip")
    flow.set("5.seed", SEED + 1).set("Prompt.text", PROMPT + " again")
    result, again = _image(flow, tmp_path, tiny_sd, loras)
    assert "1" in result.cached and {"2", "7"} <= set(result.executed)  # text encoder and sampler run
    fresh = api.open(WORKFLOWS / "txt2img.json", device="cpu")
    fresh.set("1.checkpoint", tiny_sd.name).set("Prompt.text", PROMPT + " again").set("Negative prompt.text", NEGATIVE)
    fresh.set("5.seed", SEED + 1).set("6.scale", SCALE).set("7.steps", STEPS).set("7.sampler", "euler")
    _, reference = _image(fresh, tmp_path, tiny_sd, loras)
    assert np.array_equal(again, reference)  # the shared UNet and text encoder run exactly as before


def test_strength_zero_is_the_base_image_and_stacked_strengths_add_up(flow, tiny_sd, loras, tmp_path):
    _, base = _image(flow, tmp_path, tiny_sd, loras)
    first = _with_lora(flow, "diffusers_lora.safetensors", 0.0, 0.0, node_id="A")
    _, zero = _image(flow, tmp_path, tiny_sd, loras)
    assert np.abs(zero - base).max() <= 1e-6
    flow.set("A.strength_model", 0.3).set("A.strength_clip", 0.3)
    _with_lora(flow, "kohya_lora.safetensors", 0.4, 0.4, source=first, node_id="B")  # the same LoRA, stacked
    _, stacked = _image(flow, tmp_path, tiny_sd, loras)
    flow.connect("1.model", "A.model").connect("1.clip", "A.clip")
    reference = _pipeline_image(tiny_sd, loras, [("diffusers_lora.safetensors", 0.3), ("kohya_lora.safetensors", 0.4)])
    assert np.abs(stacked - reference).max() <= TOLERANCE


def test_model_only_lora_leaves_the_text_encoder_alone(flow, tiny_sd, loras, tmp_path):
    _, base = _image(flow, tmp_path, tiny_sd, loras)
    _with_lora(flow, "kohya_lora.safetensors", 1.0, 0.0, node_id="L")
    _, unet_only = _image(flow, tmp_path, tiny_sd, loras)
    flow.connect("1.clip", "2.clip").connect("1.clip", "3.clip")
    node = flow.add("LoRAModelOnly", lora_name="kohya_lora.safetensors", strength_model=1.0)
    flow.connect("1.model", f"{node}.model").connect(f"{node}.model", "6.model")
    _, model_only = _image(flow, tmp_path, tiny_sd, loras)
    assert np.abs(model_only - base).max() > 1e-2
    assert np.abs(model_only - unet_only).max() <= 1e-6


def test_a_file_that_is_not_a_lora_is_refused_naming_the_field(flow, tiny_sd, loras, tmp_path):
    _with_lora(flow, "not_a_lora.safetensors", node_id="L")
    result = flow.run(output_dir=tmp_path, settings=_settings(tiny_sd, loras), check=False)
    assert not result.ok
    text = str(result.errors if hasattr(result, "errors") else result)
    assert "not_a_lora.safetensors" in text and "lora_name" in text


@pytest.mark.slow
def test_sdxl_kohya_lora_with_both_text_encoders_equals_the_sdxl_pipeline(tmp_path_factory, tmp_path):
    """SDXL kohya files name the encoders lora_te1_ and lora_te2_; the UNet's blocks as diffusers does."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from diffusers.utils import convert_state_dict_to_kohya
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    from nodeflow.model.node import RunContext
    from nodes.diffusion.latent import EmptyLatent
    from nodes.diffusion.loaders import Checkpoint
    from nodes.diffusion.lora import LoRA
    from nodes.diffusion.sampling import CFG, Noise, Sampler
    from nodes.diffusion.text import TextEncoder
    from nodes.diffusion.vae import VAEDecode
    from tests.support.tiny_models import shared_tiny_sdxl

    sdxl = shared_tiny_sdxl(tmp_path_factory)
    pipe = StableDiffusionXLPipeline.from_pretrained(sdxl, local_files_only=True)
    torch.manual_seed(9)
    pipe.unet.add_adapter(LoraConfig(r=2, lora_alpha=2, init_lora_weights=False, target_modules=["to_q", "to_v"]))
    named = {f"unet.{k}": v * 0.3 for k, v in get_peft_model_state_dict(pipe.unet).items()}
    deltas = {}
    for prefix, encoder in (("text_encoder", pipe.text_encoder), ("text_encoder_2", pipe.text_encoder_2)):
        for name, module in encoder.named_modules():
            if name.endswith(("q_proj", "v_proj")):
                down, up = torch.randn(2, module.in_features) * 0.3, torch.randn(module.out_features, 2) * 0.3
                key = name if name.startswith("text_model.") else "text_model." + name
                named[f"{prefix}.{key}.lora_A.weight"], named[f"{prefix}.{key}.lora_B.weight"] = down, up
                deltas[(prefix, name)] = up @ down
    kohya = {k: v.contiguous() for k, v in convert_state_dict_to_kohya(named).items()}
    assert any(k.startswith("lora_te1_") for k in kohya) and any(k.startswith("lora_te2_") for k in kohya)
    save_file(kohya, tmp_path / "xl_lora.safetensors")

    ctx = RunContext(device="cpu", settings=RunSettings(model_folders={"checkpoints": [sdxl.parent], "loras": [tmp_path]}))
    loaded = Checkpoint().run(ctx, sdxl.name, "fp32", "auto")
    patched = LoRA().run(ctx, loaded["model"], loaded["clip"], "xl_lora.safetensors", 0.6, 0.6)
    positive = TextEncoder().run(ctx, patched["clip"], PROMPT, 1)
    negative = TextEncoder().run(ctx, patched["clip"], NEGATIVE, 1)
    latent = EmptyLatent().run(ctx, width=32, height=32, batch=1, vae=loaded["vae"])
    guider = CFG().run(ctx, patched["model"], positive, negative, SCALE, 0.0)
    out = Sampler().run(ctx, Noise().run(ctx, SEED), guider, latent, "euler", "normal", STEPS, 1.0, 0.0)
    ours = VAEDecode().run(ctx, loaded["vae"], out, "off", 512).numpy()

    reference_pipe = StableDiffusionXLPipeline.from_pretrained(sdxl, local_files_only=True)
    reference_pipe.scheduler = EulerDiscreteScheduler.from_config(reference_pipe.scheduler.config)
    reference_pipe.set_progress_bar_config(disable=True)
    state, alphas = reference_pipe.lora_state_dict(tmp_path / "xl_lora.safetensors", unet_config=reference_pipe.unet.config)
    reference_pipe.load_lora_into_unet(state, alphas, reference_pipe.unet, adapter_name="x")
    reference_pipe.unet.set_adapters(["x"], [0.6])
    with torch.no_grad():
        for (prefix, name), delta in deltas.items():
            dict(getattr(reference_pipe, prefix).named_modules())[name].weight += 0.6 * delta
    reference = reference_pipe(
        PROMPT, negative_prompt=NEGATIVE, num_inference_steps=STEPS, guidance_scale=SCALE, height=32, width=32,
        generator=torch.Generator("cpu").manual_seed(SEED), output_type="np",
    ).images
    assert np.abs(ours - reference).max() <= TOLERANCE
