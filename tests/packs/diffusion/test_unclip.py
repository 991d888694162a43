"""unCLIP and CLIP vision: image variations with SD 2.1 unCLIP models, on tiny real models.

The tiny unCLIP model is built in code as a diffusers folder (what
StableUnCLIPImg2ImgPipeline runs) and saved as one file in the published checkpoints'
layout (what the graph loads); the ComfyUI workflow in tests/fixtures is written from
ComfyUI's UI format. The anchor: graph and pipeline make the same image.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import nodeflow.api as api  # noqa: E402
from nodeflow import NodeError, RunContext, RunSettings  # noqa: E402
from tests.support import FIXTURES  # noqa: E402
from tests.support.tiny_unclip import (  # noqa: E402
    EMBED_DIM, VISION_IMAGE, build_tiny_vision, save_unclip_single_file, shared_tiny_unclip, tiny_vision_model,
)

PROMPT = "a red circle on a blue background"
NEGATIVE = "a green background"
SEED = 1234
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def unclip_dir(tmp_path_factory):
    return shared_tiny_unclip(tmp_path_factory)


@pytest.fixture(scope="module")
def unclip_file(unclip_dir, tmp_path_factory):
    return save_unclip_single_file(unclip_dir, tmp_path_factory.mktemp("unclip-ckpt") / "tiny-unclip.safetensors")


@pytest.fixture(scope="module")
def pipe(unclip_dir):
    from diffusers import StableUnCLIPImg2ImgPipeline

    pipeline = StableUnCLIPImg2ImgPipeline.from_pretrained(unclip_dir, local_files_only=True)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("unclip-input")
    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 256, (VISION_IMAGE, VISION_IMAGE, 3), dtype=np.uint8)).save(folder / "photo.png")
    Image.fromarray(rng.integers(0, 256, (VISION_IMAGE, VISION_IMAGE, 3), dtype=np.uint8)).save(folder / "other.png")
    return folder


def _ctx(**folders) -> RunContext:
    return RunContext(settings=RunSettings(model_folders={k: [v] for k, v in folders.items()}))


def _image_tensor(folder, name):
    import torch
    from PIL import Image

    return torch.from_numpy(np.asarray(Image.open(folder / name).convert("RGB"), dtype=np.float32) / 255.0)[None]


# -- CLIP vision -----------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["transformers", "clip", "open_clip"])
def test_clip_vision_files_of_each_published_layout_give_transformers_embeddings(tmp_path, layout):
    import torch

    from nodes.diffusion.clip_vision import CLIPVisionEncode, CLIPVisionLoader

    build_tiny_vision(tmp_path / "clip_vision" / "tiny.safetensors", layout)
    loaded = CLIPVisionLoader().run(_ctx(clip_vision=tmp_path / "clip_vision"), "tiny.safetensors", "auto")
    assert loaded.image_size == VISION_IMAGE  # read from the position embedding and patch size
    reference = tiny_vision_model()
    image = torch.rand(2, VISION_IMAGE, VISION_IMAGE, 3)
    out = CLIPVisionEncode().run(RunContext(), loaded, image, "center")

    pixels = ((image * 255).round() / 255).permute(0, 3, 1, 2)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = reference(pixel_values=(pixels - mean) / std, output_hidden_states=True)
    assert out.image_embeds.shape == (2, EMBED_DIM)
    assert torch.allclose(out.image_embeds, expected.image_embeds, atol=1e-5)
    assert torch.allclose(out.penultimate_hidden_states, expected.hidden_states[-2], atol=1e-5)
    assert torch.allclose(out.last_hidden_state, expected.last_hidden_state, atol=1e-5)


def test_crop_center_keeps_the_middle_and_none_squeezes_the_whole_image(tmp_path):
    import torch

    from nodes.diffusion.clip_vision import CLIPVisionEncode, CLIPVisionLoader

    build_tiny_vision(tmp_path / "cv" / "tiny.safetensors")
    loaded = CLIPVisionLoader().run(_ctx(clip_vision=tmp_path / "cv"), "tiny.safetensors", "auto")
    middle = torch.rand(1, VISION_IMAGE, VISION_IMAGE, 3)
    wide = torch.cat([torch.zeros(1, VISION_IMAGE, VISION_IMAGE, 3), middle, torch.ones(1, VISION_IMAGE, VISION_IMAGE, 3)], 2)
    encode = CLIPVisionEncode()
    centred = encode.run(RunContext(), loaded, wide, "center").image_embeds
    squeezed = encode.run(RunContext(), loaded, wide, "none").image_embeds
    alone = encode.run(RunContext(), loaded, middle, "center").image_embeds
    assert torch.allclose(centred, alone, atol=1e-5)  # the middle square of a 3:1 image, whole
    assert (squeezed - alone).abs().max() > 1e-3


def test_a_file_without_a_vision_model_is_refused_naming_the_field(tmp_path):
    import torch
    from safetensors.torch import save_file

    from nodes.diffusion.clip_vision import CLIPVisionLoader

    (tmp_path / "cv").mkdir()
    save_file({"weight": torch.zeros(3)}, tmp_path / "cv" / "junk.safetensors")
    with pytest.raises(NodeError) as caught:
        CLIPVisionLoader().run(_ctx(clip_vision=tmp_path / "cv"), "junk.safetensors", "auto")
    assert caught.value.field == "clip_name" and "no CLIP vision model" in caught.value.message


# -- unCLIP -------------------------------------------------------------------------------------


def test_the_unclip_checkpoint_loads_its_unet_text_encoder_vae_and_image_encoder(unclip_file, pipe):
    import torch

    from nodes.diffusion.unclip import UnCLIPCheckpoint

    out = UnCLIPCheckpoint().run(_ctx(checkpoints=unclip_file.parent), unclip_file.name, "auto", "auto")
    model = out["model"]
    assert model.unet.config.class_embed_type == "projection"
    assert model.unet.config.projection_class_embeddings_input_dim == 2 * EMBED_DIM
    assert model.scheduler_config["prediction_type"] == "v_prediction"
    for name, ours in [("unet", model.unet), ("vae", out["vae"].vae), ("image_encoder", out["clip_vision"].model)]:
        theirs = getattr(pipe, name).state_dict()
        mine = ours.state_dict()
        assert set(theirs) - {"vision_model.embeddings.position_ids"} <= set(mine), name
        assert all(torch.equal(mine[k], v) for k, v in theirs.items() if k in mine), name


def test_a_plain_checkpoint_is_refused_by_the_unclip_loader(tmp_path_factory):
    from tests.support.tiny_models import save_single_file, shared_tiny_sd2

    from nodes.diffusion.unclip import UnCLIPCheckpoint

    single = save_single_file(shared_tiny_sd2(tmp_path_factory), tmp_path_factory.mktemp("sd2") / "plain.safetensors")
    with pytest.raises(NodeError) as caught:
        UnCLIPCheckpoint().run(_ctx(checkpoints=single.parent), single.name, "auto", "auto")
    assert caught.value.field == "checkpoint" and "not an unCLIP checkpoint" in caught.value.message


def _reference(pipe, photo_dir, noise_level: int, image_name: str = "photo.png"):
    """The pipeline's image with the graph's starting noise; its generator (seeded as the
    graph's augmentation noise) then only draws the image embedding's noise."""
    import torch
    from PIL import Image

    latents = torch.randn((1, 4, 16, 16), generator=torch.Generator("cpu").manual_seed(SEED))
    return pipe(
        Image.open(photo_dir / image_name).convert("RGB"), prompt=PROMPT, negative_prompt=NEGATIVE, height=32, width=32,
        num_inference_steps=4, guidance_scale=7.5, noise_level=noise_level, latents=latents,
        generator=torch.Generator("cpu").manual_seed(SEED - 10), output_type="np",
    ).images


def test_the_comfyui_unclip_workflow_imports_runs_and_equals_the_stable_unclip_pipeline(
    unclip_file, pipe, photo_dir, tmp_path
):
    flow = api.open(FIXTURES / "comfyui" / "unclip_ui_v04.json", device="cpu")
    graph = flow.graph
    assert [graph.nodes[i].type for i in ("1", "3", "6")] == ["UnCLIPCheckpoint", "CLIPVisionEncode", "UnCLIPConditioning"]
    assert graph.nodes["6"].values == {"strength": 1.0, "noise_augmentation": 0.25}
    assert graph.link_into("3", "clip_vision").source == "1" and graph.link_into("8.cfg", "positive").source == "6"
    settings = RunSettings(model_folders={"checkpoints": [unclip_file.parent]})

    def run(**changes):
        for key, value in changes.items():
            flow.set(key, value)
        return flow.run(output_dir=tmp_path, input_dir=photo_dir, settings=settings).outputs["10"]["images"].numpy()

    ours = run()
    assert ours.shape == (1, 32, 32, 3)
    assert np.abs(ours - _reference(pipe, photo_dir, noise_level=250)).max() <= TOLERANCE
    # The image steers: another photo, or none (strength 0: the model gets zeros), changes the result.
    other = run(**{"2.image": "other.png"})
    assert np.abs(other - _reference(pipe, photo_dir, 250, "other.png")).max() <= TOLERANCE
    assert np.abs(other - ours).max() > 1e-2
    exact = run(**{"2.image": "photo.png", "6.noise_augmentation": 0.0})
    assert np.abs(exact - _reference(pipe, photo_dir, noise_level=0)).max() <= TOLERANCE
    without = run(**{"6.strength": 0.0})
    assert np.abs(without - exact).max() > 1e-2


def test_chained_unclip_conditionings_are_weighted_summed_and_augmented_again(unclip_file, photo_dir):
    """ComfyUI's rule for several images: each augmented at its level and weighted by its
    strength, the sum's embedding part augmented again at level 50 (0.05)."""
    import torch

    from nodes.diffusion.clip_vision import CLIPVisionEncode
    from nodes.diffusion.impl.guidance import Guider
    from nodes.diffusion.impl.unclip import augment
    from nodes.diffusion.text import TextEncoder
    from nodes.diffusion.unclip import UnCLIPCheckpoint, UnCLIPConditioning

    parts = UnCLIPCheckpoint().run(_ctx(checkpoints=unclip_file.parent), unclip_file.name, "auto", "auto")
    embeds = [CLIPVisionEncode().run(RunContext(), parts["clip_vision"], _image_tensor(photo_dir, name), "center")
              for name in ("photo.png", "other.png")]
    text = TextEncoder().run(RunContext(), parts["clip"], PROMPT, 1)
    chained = UnCLIPConditioning().run(RunContext(), text, embeds[0], 0.7, 0.1)
    chained = UnCLIPConditioning().run(RunContext(), chained, embeds[1], 0.5, 0.3)
    assert UnCLIPConditioning().run(RunContext(), text, embeds[0], 0.0, 0.1) is text  # strength 0 adds nothing

    seen = []
    unet = parts["model"].unet
    original = unet.forward

    def spy(*args, **kwargs):
        seen.append(kwargs.get("class_labels"))
        return original(*args, **kwargs)

    unet.forward = spy
    try:
        x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
        Guider(parts["model"], chained, text, 3.0).bind(x, seed=SEED)(x, torch.tensor(500))
    finally:
        del unet.forward
    first = augment(embeds[0].image_embeds, 100, SEED - 10) * 0.7
    second = augment(embeds[1].image_embeds, 300, SEED - 10) * 0.5
    expected = augment((first + second)[:, :EMBED_DIM], 50, SEED - 10)
    labels = seen[0]
    assert labels.shape == (2, 2 * EMBED_DIM)  # [uncond, cond] in one batch
    assert torch.equal(labels[0], torch.zeros(2 * EMBED_DIM))  # the negative has no image: zeros
    assert torch.allclose(labels[1], expected[0], atol=1e-6)


def test_an_embedding_of_the_wrong_width_is_refused_when_sampling(unclip_file, tmp_path):
    import torch

    from nodes.diffusion.impl.guidance import GuidanceError, Guider
    from nodes.diffusion.text import TextEncoder
    from nodes.diffusion.types import VisionOutput
    from nodes.diffusion.unclip import UnCLIPCheckpoint, UnCLIPConditioning

    parts = UnCLIPCheckpoint().run(_ctx(checkpoints=unclip_file.parent), unclip_file.name, "auto", "auto")
    text = TextEncoder().run(RunContext(), parts["clip"], PROMPT, 1)
    wide = VisionOutput(torch.zeros(1, EMBED_DIM + 8), torch.zeros(1, 5, 8), torch.zeros(1, 5, 8))
    cond = UnCLIPConditioning().run(RunContext(), text, wide, 1.0, 0.0)
    with pytest.raises(GuidanceError, match="40 wide; this unCLIP model takes 32"):
        Guider(parts["model"], cond).bind(torch.zeros(1, 4, 16, 16))


def test_a_diffusers_unclip_folder_uses_its_image_normaliser_as_the_pipeline_does(unclip_dir, photo_dir, tmp_path):
    """diffusers folders keep the embedder's statistics (image_normalizer); with them the
    graph still equals the pipeline, and they change the image."""
    import shutil

    import torch
    from diffusers import StableUnCLIPImg2ImgPipeline
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer

    folder = tmp_path / "models" / "unclip-stats"
    shutil.copytree(unclip_dir, folder)
    normaliser = StableUnCLIPImageNormalizer(embedding_dim=EMBED_DIM)
    generator = torch.Generator().manual_seed(9)
    with torch.no_grad():
        normaliser.mean.copy_(torch.randn(1, EMBED_DIM, generator=generator) * 0.5)
        normaliser.std.copy_(torch.rand(1, EMBED_DIM, generator=generator) + 0.5)
    normaliser.save_pretrained(folder / "image_normalizer")
    pipe = StableUnCLIPImg2ImgPipeline.from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)

    flow = api.open(FIXTURES / "comfyui" / "unclip_ui_v04.json", device="cpu")
    flow.set("1.checkpoint", "unclip-stats").set("6.noise_augmentation", 0.5)
    settings = RunSettings(model_folders={"checkpoints": [folder.parent]})
    ours = flow.run(output_dir=tmp_path, input_dir=photo_dir, settings=settings).outputs["10"]["images"].numpy()
    assert np.abs(ours - _reference(pipe, photo_dir, noise_level=500)).max() <= TOLERANCE
    shutil.rmtree(folder / "image_normalizer")  # without statistics: the identity
    plain = flow.run(output_dir=tmp_path, input_dir=photo_dir, settings=settings).outputs["10"]["images"].numpy()
    assert np.abs(plain - ours).max() > 1e-3


def test_an_api_workflow_with_the_plain_checkpoint_loader_and_a_clip_vision_file_runs_the_same(
    unclip_file, pipe, photo_dir, tmp_path
):
    """Many workflows load the unCLIP model with CheckpointLoaderSimple and the image encoder
    from clip_vision; with the same encoder weights that is the same image."""
    build_tiny_vision(tmp_path / "clip_vision" / "vit-tiny.safetensors")  # the weights inside the checkpoint
    data = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": unclip_file.name}},
        "2": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "vit-tiny.safetensors"}},
        "3": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
        "4": {"class_type": "CLIPVisionEncode", "inputs": {"clip_vision": ["2", 0], "image": ["3", 0], "crop": "none"}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": PROMPT}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": NEGATIVE}},
        "7": {"class_type": "unCLIPConditioning", "inputs": {
            "conditioning": ["5", 0], "clip_vision_output": ["4", 0], "strength": 1.0, "noise_augmentation": 0.25}},
        "8": {"class_type": "EmptyLatentImage", "inputs": {"width": 32, "height": 32, "batch_size": 1}},
        "9": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["7", 0], "negative": ["6", 0], "latent_image": ["8", 0], "seed": SEED,
            "steps": 4, "cfg": 7.5, "sampler_name": "ddim", "scheduler": "normal", "denoise": 1.0}},
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["1", 2]}},
        "11": {"class_type": "PreviewImage", "inputs": {"images": ["10", 0]}},
    }
    flow = api.from_dict(data, device="cpu")
    assert flow.graph.nodes["4"].values["crop"] == "none" and flow.graph.nodes["2"].type == "CLIPVisionLoader"
    settings = RunSettings(model_folders={"checkpoints": [unclip_file.parent], "clip_vision": [tmp_path / "clip_vision"]})
    ours = flow.run(output_dir=tmp_path, input_dir=photo_dir, settings=settings).outputs["11"]["images"].numpy()
    assert np.abs(ours - _reference(pipe, photo_dir, noise_level=250)).max() <= TOLERANCE


def test_sdxl_takes_the_image_embedding_in_place_of_the_pooled_prompt_embedding(tmp_path_factory):
    """ComfyUI's "Revision": with SDXL, unCLIPConditioning's augmented embedding (merge level
    0) is the pooled embedding the UNet gets; the negative keeps its text one."""
    import torch

    from nodes.diffusion.impl.guidance import Guider
    from nodes.diffusion.impl.unclip import augment
    from nodes.diffusion.loaders import Checkpoint
    from nodes.diffusion.text import TextEncoder
    from nodes.diffusion.types import VisionOutput
    from nodes.diffusion.unclip import UnCLIPConditioning
    from tests.support.tiny_models import TEXT2_HIDDEN, shared_tiny_sdxl

    sdxl = shared_tiny_sdxl(tmp_path_factory)
    parts = Checkpoint().run(_ctx(checkpoints=sdxl.parent), sdxl.name, "auto", "auto")
    text = TextEncoder().run(RunContext(), parts["clip"], PROMPT, 1)
    negative = TextEncoder().run(RunContext(), parts["clip"], NEGATIVE, 1)
    vision = tiny_vision_model(projection_dim=TEXT2_HIDDEN)
    with torch.no_grad():
        embeds = [vision(pixel_values=torch.rand(1, 3, VISION_IMAGE, VISION_IMAGE, generator=torch.Generator().manual_seed(i))).image_embeds
                  for i in (1, 2)]
    outputs = [VisionOutput(e, torch.zeros(1, 5, 8), torch.zeros(1, 5, 8)) for e in embeds]
    cond = UnCLIPConditioning().run(RunContext(), text, outputs[0], 0.8, 0.2)
    cond = UnCLIPConditioning().run(RunContext(), cond, outputs[1], 0.6, 0.0)

    seen = []
    unet = parts["model"].unet
    original = unet.forward
    unet.forward = lambda *a, **k: seen.append(k["added_cond_kwargs"]["text_embeds"]) or original(*a, **k)
    try:
        x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
        Guider(parts["model"], cond, negative, 4.0).bind(x, seed=SEED)(x, torch.tensor(500))
    finally:
        del unet.forward
    first = augment(embeds[0], 200, SEED - 10) * 0.8
    second = augment(embeds[1], 0, SEED - 10) * 0.6
    expected = augment((first + second)[:, :TEXT2_HIDDEN], 0, SEED - 10)[:, :TEXT2_HIDDEN]
    pooled = seen[0]
    assert torch.allclose(pooled[1], expected[0], atol=1e-6)
    assert torch.allclose(pooled[0], negative.pooled[0], atol=1e-6)


def test_a_model_without_image_inputs_ignores_unclip_conditioning_as_comfyui_does(tmp_path_factory):
    """e.g. a second pass with a plain SD model reusing the unCLIP pass's conditioning."""
    import torch

    from nodes.diffusion.impl.guidance import Guider
    from nodes.diffusion.loaders import Checkpoint
    from nodes.diffusion.text import TextEncoder
    from nodes.diffusion.types import VisionOutput
    from nodes.diffusion.unclip import UnCLIPConditioning
    from tests.support.tiny_models import shared_tiny_sd

    sd = shared_tiny_sd(tmp_path_factory)
    parts = Checkpoint().run(_ctx(checkpoints=sd.parent), sd.name, "auto", "auto")
    text = TextEncoder().run(RunContext(), parts["clip"], PROMPT, 1)
    image = VisionOutput(torch.ones(1, 7), torch.zeros(1, 5, 8), torch.zeros(1, 5, 8))
    with_image = UnCLIPConditioning().run(RunContext(), text, image, 1.0, 0.0)
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    t = torch.tensor(500)
    assert torch.equal(Guider(parts["model"], with_image).bind(x, seed=1)(x, t), Guider(parts["model"], text).bind(x)(x, t))


def test_stacked_conditionings_each_give_the_unet_their_own_image(unclip_file, photo_dir):
    """ConditioningStack (ComfyUI's Conditioning Combine) predicts each part on its own:
    each with its own image's class labels, a part without one with zeros."""
    import torch

    from nodes.diffusion.clip_vision import CLIPVisionEncode
    from nodes.diffusion.conditioning import ConditioningStack
    from nodes.diffusion.impl.guidance import Guider
    from nodes.diffusion.impl.unclip import augment
    from nodes.diffusion.text import TextEncoder
    from nodes.diffusion.unclip import UnCLIPCheckpoint, UnCLIPConditioning

    parts = UnCLIPCheckpoint().run(_ctx(checkpoints=unclip_file.parent), unclip_file.name, "auto", "auto")
    embeds = CLIPVisionEncode().run(RunContext(), parts["clip_vision"], _image_tensor(photo_dir, "photo.png"), "center")
    text = TextEncoder().run(RunContext(), parts["clip"], PROMPT, 1)
    stacked = ConditioningStack().run(RunContext(), UnCLIPConditioning().run(RunContext(), text, embeds, 0.9, 0.0), text)

    seen = []
    unet = parts["model"].unet
    original = unet.forward
    unet.forward = lambda *a, **k: seen.append(k.get("class_labels")) or original(*a, **k)
    try:
        x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
        Guider(parts["model"], stacked).bind(x, seed=7)(x, torch.tensor(500))
    finally:
        del unet.forward
    assert len(seen) == 2
    assert torch.allclose(seen[0], augment(embeds.image_embeds, 0, 7 - 10) * 0.9, atol=1e-6)
    assert torch.equal(seen[1], torch.zeros(1, 2 * EMBED_DIM))
