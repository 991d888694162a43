"""GLIGEN on the tiny SD model: a GLIGEN file in the published layout (fusers named after
the original UNet's blocks + position net) loads onto the model, and the graph's image
equals StableDiffusionGLIGENPipeline's for the same phrases, boxes and seed; without a box
the image is the base model's; a malformed file is refused naming node and field; a
ComfyUI workflow with GLIGEN nodes imports and runs."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import nodeflow.api as api  # noqa: E402
from nodeflow import RunSettings  # noqa: E402
from tests.packs.diffusion.test_lora import loras  # noqa: E402,F401  (fixture)
from tests.support import WORKFLOWS  # noqa: E402
from tests.support.standins import gated_unet, gligen_published_layout  # noqa: E402
from tests.support.tiny_models import shared_tiny_sd  # noqa: E402

PROMPT, NEGATIVE, SEED, STEPS, SCALE = "a red circle", "a green background", 11, 4, 7.5
# (phrase, (width, height, x, y) in pixels of the 32 x 32 image)
BOXES = [("a blue square", (16, 8, 0, 8)), ("a yellow star", (8, 16, 16, 16))]
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return shared_tiny_sd(tmp_path_factory)


@pytest.fixture(scope="module")
def gligen(tiny_sd, tmp_path_factory):
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("gligen")
    gated = gated_unet(tiny_sd)
    state = gligen_published_layout(gated)
    assert "input_blocks.1.1.transformer_blocks.0.fuser.attn.to_q.weight" in state  # the published naming
    assert "middle_block.1.transformer_blocks.0.fuser.linear.weight" in state
    save_file(state, folder / "tiny_gligen.safetensors")
    broken = {k: v for k, v in state.items() if not k.startswith("position_net.linears.4.")}
    save_file(broken, folder / "broken.safetensors")
    save_file({"encoder.conv_in.weight": state["position_net.null_positive_feature"]}, folder / "vae.safetensors")
    return folder, gated


def _settings(tiny_sd, gligen):
    return RunSettings(model_folders={"checkpoints": [tiny_sd.parent], "gligen": [gligen[0]]})


def _flow(tiny_sd, boxes=BOXES, fraction=0.5, negative="null boxes", file="tiny_gligen.safetensors"):
    flow = api.open(WORKFLOWS / "txt2img.json", device="cpu")
    flow.set("1.checkpoint", tiny_sd.name).set("Prompt.text", PROMPT).set("Negative prompt.text", NEGATIVE)
    flow.set("5.seed", SEED).set("6.scale", SCALE).set("7.steps", STEPS).set("7.sampler", "euler")
    if not boxes:
        return flow
    flow.add("GLIGENLoader", node_id="gligen", gligen_name=file)
    positive = "2.conditioning"
    for index, (phrase, (w, h, x, y)) in enumerate(boxes):
        node = flow.add("GLIGENTextBoxApply", node_id=f"box{index}", text=phrase, width=w, height=h, x=x, y=y,
                        grounded_steps=fraction, negative=negative)
        flow.connect(positive, f"{node}.conditioning_to").connect("1.clip", f"{node}.clip")
        flow.connect("gligen.gligen", f"{node}.gligen_textbox_model")
        positive = f"{node}.conditioning"
    flow.connect(positive, "6.positive")
    return flow


def _run(flow, tiny_sd, gligen, tmp_path):
    result = flow.run(output_dir=tmp_path, settings=_settings(tiny_sd, gligen))
    return result.outputs["9"]["images"].numpy()


def _pipeline(tiny_sd, gated, boxes, fraction):
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionGLIGENPipeline
    from transformers import CLIPTextModel, CLIPTokenizer

    pipe = StableDiffusionGLIGENPipeline(
        vae=AutoencoderKL.from_pretrained(tiny_sd / "vae"), text_encoder=CLIPTextModel.from_pretrained(tiny_sd / "text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(tiny_sd / "tokenizer"), unet=gated,
        scheduler=EulerDiscreteScheduler.from_pretrained(tiny_sd / "scheduler"), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    side = 32
    normalised = [[x / side, y / side, (x + w) / side, (y + h) / side] for _, (w, h, x, y) in boxes]
    return pipe(
        PROMPT, negative_prompt=NEGATIVE, gligen_phrases=[p for p, _ in boxes], gligen_boxes=normalised,
        gligen_scheduled_sampling_beta=fraction, num_inference_steps=STEPS, guidance_scale=SCALE,
        generator=torch.Generator("cpu").manual_seed(SEED), height=side, width=side, output_type="np",
    ).images


@pytest.mark.parametrize("boxes, fraction", [(BOXES, 0.5), (BOXES[:1], 1.0)])
def test_the_image_equals_the_gligen_pipeline(tiny_sd, gligen, tmp_path, boxes, fraction):
    ours = _run(_flow(tiny_sd, boxes, fraction), tiny_sd, gligen, tmp_path)
    reference = _pipeline(tiny_sd, gligen[1], boxes, fraction)
    assert np.abs(ours - reference).max() <= TOLERANCE
    base = _run(_flow(tiny_sd, ()), tiny_sd, gligen, tmp_path)
    assert np.abs(ours - base).max() > 1e-2  # the boxes act


def test_without_grounded_steps_the_image_is_the_base_models_and_the_base_is_unchanged(tiny_sd, gligen, tmp_path):
    base = _run(_flow(tiny_sd, ()), tiny_sd, gligen, tmp_path)
    none = _run(_flow(tiny_sd, BOXES, fraction=0.0), tiny_sd, gligen, tmp_path)
    assert np.abs(none - base).max() <= 1e-6
    flow = _flow(tiny_sd, BOXES, fraction=1.0)
    grounded = _run(flow, tiny_sd, gligen, tmp_path)
    assert np.abs(grounded - base).max() > 1e-2
    # The same session, the same cached model: the base image has not changed.
    again = _run(_flow(tiny_sd, ()), tiny_sd, gligen, tmp_path)
    assert np.abs(again - base).max() == 0


def test_the_negative_with_the_same_boxes_differs_from_null_boxes(tiny_sd, gligen, tmp_path):
    null = _run(_flow(tiny_sd, BOXES, 1.0, "null boxes"), tiny_sd, gligen, tmp_path)
    same = _run(_flow(tiny_sd, BOXES, 1.0, "same boxes"), tiny_sd, gligen, tmp_path)
    assert np.abs(null - same).max() > 1e-3


def test_the_gligen_unet_shares_the_base_weights_and_predicts_as_it_without_boxes(tiny_sd, gligen):
    import torch
    from diffusers import UNet2DConditionModel

    from nodes.diffusion.impl.gligen import gated_unet, read_grounding
    from nodes.diffusion.impl.loading import read_state_dict

    base = UNet2DConditionModel.from_pretrained(tiny_sd / "unet").eval()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    model = read_grounding(read_state_dict(gligen[0] / "tiny_gligen.safetensors"))
    ours = gated_unet(base, model)
    assert ours is not base and not hasattr(base, "position_net")
    assert ours.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q.weight is \
        base.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q.weight
    reference = gligen[1]
    generator = torch.Generator().manual_seed(0)
    x, text = torch.randn(1, 4, 16, 16, generator=generator), torch.randn(1, 77, 32, generator=generator)
    grounding = {"boxes": torch.rand(1, 30, 4, generator=generator), "positive_embeddings": torch.randn(1, 30, 32, generator=generator),
                 "masks": torch.tensor([[1.0, 1.0] + [0.0] * 28])}
    with torch.no_grad():
        plain = ours(x, 500, encoder_hidden_states=text).sample
        assert torch.allclose(plain, base(x, 500, encoder_hidden_states=text).sample, atol=1e-6)
        mine = ours(x, 500, encoder_hidden_states=text, cross_attention_kwargs={"gligen": dict(grounding)}).sample
        theirs = reference(x, 500, encoder_hidden_states=text, cross_attention_kwargs={"gligen": dict(grounding)}).sample
    assert torch.allclose(mine, theirs, atol=1e-5) and (mine - plain).abs().max() > 1e-3
    assert all(torch.equal(v, before[k]) for k, v in base.state_dict().items())


@pytest.mark.parametrize("name, message", [("broken.safetensors", "position_net.linears.4"),
                                           ("vae.safetensors", "not a GLIGEN")])
def test_a_malformed_gligen_file_is_refused_naming_node_and_field(tiny_sd, gligen, tmp_path, name, message):
    result = _flow(tiny_sd, BOXES, file=name).run(output_dir=tmp_path, settings=_settings(tiny_sd, gligen),
                                                   check=False)
    assert not result.ok
    assert result.failed_node == "gligen" and result.failed_field == "gligen_name"
    assert message in result.error and name in result.error


def test_a_gligen_file_for_another_unet_is_refused_when_sampling(tiny_sd, gligen, tmp_path):
    from safetensors.torch import save_file

    from nodes.diffusion.impl.loading import read_state_dict

    state = read_state_dict(gligen[0] / "tiny_gligen.safetensors")
    first = "input_blocks.1.1.transformer_blocks.0.fuser."
    state.update({k.replace(first, "input_blocks.7.1.transformer_blocks.0.fuser."): v.clone()
                  for k, v in state.items() if k.startswith(first)})  # a block the tiny UNet lacks
    save_file(state, gligen[0] / "other.safetensors")
    result = _flow(tiny_sd, BOXES, file="other.safetensors").run(output_dir=tmp_path, settings=_settings(tiny_sd, gligen),
                                                                 check=False)
    assert not result.ok and "input_blocks.7.1" in result.error and "another UNet" in result.error


def test_a_comfyui_workflow_with_gligen_imports_and_runs(tiny_sd, gligen, tmp_path):
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": tiny_sd.name}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": PROMPT}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": NEGATIVE}},
        "4": {"class_type": "GLIGENLoader", "inputs": {"gligen_name": "tiny_gligen.safetensors"}},
        "5": {"class_type": "GLIGENTextBoxApply", "inputs": {
            "conditioning_to": ["2", 0], "clip": ["1", 1], "gligen_textbox_model": ["4", 0], "text": BOXES[0][0],
            "width": 16, "height": 8, "x": 0, "y": 8}},
        "6": {"class_type": "GLIGENTextBoxApply", "inputs": {
            "conditioning_to": ["5", 0], "clip": ["1", 1], "gligen_textbox_model": ["4", 0], "text": BOXES[1][0],
            "width": 8, "height": 16, "x": 16, "y": 16}},
        "7": {"class_type": "EmptyLatentImage", "inputs": {"width": 32, "height": 32, "batch_size": 1}},
        "8": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["6", 0], "negative": ["3", 0], "latent_image": ["7", 0], "seed": SEED,
            "steps": STEPS, "cfg": SCALE, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "9": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["1", 2]}},
        "10": {"class_type": "SaveImage", "inputs": {"images": ["9", 0], "filename_prefix": "gligen"}},
    }
    path = tmp_path / "gligen_api.json"
    path.write_text(json.dumps(prompt))
    flow = api.open(path, device="cpu")
    box = flow.graph.nodes["6"]
    assert box.type == "GLIGENTextBoxApply" and box.values["text"] == BOXES[1][0]
    assert (box.values["width"], box.values["height"], box.values["x"], box.values["y"]) == (8, 16, 16, 16)
    # ComfyUI's behaviour: every step grounded, the negative given the positive's boxes.
    assert (box.values["grounded_steps"], box.values["negative"]) == (1.0, "same boxes")
    assert flow.graph.link_into("6", "conditioning_to").source == "5"
    result = flow.run(output_dir=tmp_path, settings=_settings(tiny_sd, gligen))
    images = next(o["images"] for o in result.outputs.values() if "images" in o).numpy()
    native = _run(_flow(tiny_sd, BOXES, 1.0, "same boxes"), tiny_sd, gligen, tmp_path)
    assert images.shape == (1, 32, 32, 3) and np.abs(images - native).max() <= 1e-6


def test_a_lora_on_the_model_acts_with_gligen_at_its_strength(tiny_sd, gligen, loras, tmp_path):  # noqa: F811
    settings = RunSettings(model_folders={"checkpoints": [tiny_sd.parent], "gligen": [gligen[0]], "loras": [loras.folder]})
    flow = _flow(tiny_sd, BOXES, 1.0)
    plain = flow.run(output_dir=tmp_path, settings=settings).outputs["9"]["images"].numpy()
    # The same flow (its cached model, whose GLIGEN UNet was built before the LoRA was loaded into it).
    flow.add("LoRAModelOnly", node_id="lora", lora_name="diffusers_lora.safetensors", strength_model=1.0)
    flow.connect("1.model", "lora.model").connect("lora.model", "6.model")
    with_lora = flow.run(output_dir=tmp_path, settings=settings).outputs["9"]["images"].numpy()
    flow.set("lora.strength_model", 0.0)
    off = flow.run(output_dir=tmp_path, settings=settings).outputs["9"]["images"].numpy()
    assert np.abs(with_lora - plain).max() > 1e-3
    assert np.abs(off - plain).max() <= 1e-5


def test_boxes_with_an_area_are_refused_when_sampling(tiny_sd, gligen, tmp_path):
    flow = _flow(tiny_sd, BOXES[:1])
    flow.add("ConditioningSetArea", node_id="area", width=16, height=16, x=0, y=0, strength=1.0)
    flow.connect("box0.conditioning", "area.conditioning").connect("area.conditioning", "6.positive")
    result = flow.run(output_dir=tmp_path, settings=_settings(tiny_sd, gligen), check=False)
    assert not result.ok and "GLIGEN boxes and areas" in result.error
