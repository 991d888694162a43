"""A model's parts from their own files (ComfyUI's UNETLoader, CLIPLoader, DualCLIPLoader):
a tiny checkpoint split into a UNet file, text encoder file(s) and a VAE file gives the same
image through UNet + Load Text Encoder(s) + Load VAE as through the Checkpoint node, for
SD 1.x, SD 2.x and SDXL, in the layouts published files use; the importer maps the three
ComfyUI loaders and refuses the other model families by their field."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from nodeflow import RunSettings  # noqa: E402
from nodeflow.files.open import workflow_from_dict  # noqa: E402
from nodeflow.files.workflow import WorkflowError  # noqa: E402
from nodeflow.model.node import NodeError, RunContext  # noqa: E402
from nodeflow.model.registry import default_registry  # noqa: E402
from nodes.diffusion.part_loaders import DualTextEncoderLoader, TextEncoderLoader  # noqa: E402
from tests.support.standins import text_encoder_file_states, unet_file_state, vae_original_state  # noqa: E402
from tests.support.tiny_models import save_single_file, shared_tiny_sd, shared_tiny_sd2, shared_tiny_sdxl  # noqa: E402

BUILDERS = {"sd1": shared_tiny_sd, "sd2": shared_tiny_sd2, "sdxl": shared_tiny_sdxl}


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """Per family: a models tree in ComfyUI's layout with the tiny model as one checkpoint
    file and as its parts: UNet (original names for SD 1.x/2.x, diffusers names for SDXL,
    each without any config), text encoder file(s) and the VAE."""
    from safetensors.torch import save_file

    trees = {}
    for family, build in BUILDERS.items():
        model = build(tmp_path_factory)
        root = tmp_path_factory.mktemp(f"split-{family}")
        for folder in ("checkpoints", "diffusion_models", "text_encoders", "vae"):
            (root / folder).mkdir()
        save_single_file(model, root / "checkpoints" / "whole.safetensors")
        layout = "diffusers" if family == "sdxl" else "original"
        save_file(unet_file_state(model, layout), root / "diffusion_models" / "unet.safetensors")
        other = "original" if layout == "diffusers" else "diffusers"
        save_file(unet_file_state(model, other), root / "diffusion_models" / f"unet_{other}.safetensors")
        for index, state in enumerate(text_encoder_file_states(model)):
            save_file(state, root / "text_encoders" / f"te{index}.safetensors")
        # named as published (sdxl_vae.safetensors): a VAE file's latent scale is told by its name
        save_file(vae_original_state(model), root / "vae" / ("sdxl_vae.safetensors" if family == "sdxl" else "vae.safetensors"))
        trees[family] = root
    return trees


def _settings(root):
    return RunSettings(model_folders={"checkpoints": [root / "checkpoints"], "unet": [root / "diffusion_models"],
                                      "clip": [root / "text_encoders"], "vae": [root / "vae"]})


def _workflow(family: str, split_parts: bool) -> dict:
    """ComfyUI API format: txt2img from the checkpoint, or from UNETLoader + CLIPLoader (or
    DualCLIPLoader, in reversed order) + VAELoader."""
    prompt = "CLIPTextEncodeSDXL" if family == "sdxl" else "CLIPTextEncode"

    def text(words):
        if family == "sdxl":
            return {"clip": ["clip", 0 if split_parts else 1], "width": 32, "height": 32, "crop_w": 0, "crop_h": 0,
                    "target_width": 32, "target_height": 32, "text_g": words, "text_l": words}
        return {"clip": ["clip", 0 if split_parts else 1], "text": words}

    if split_parts:
        loaders = {
            "model": {"class_type": "UNETLoader", "inputs": {"unet_name": "unet.safetensors", "weight_dtype": "fp8_e4m3fn"}},
            "clip": ({"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "te1.safetensors", "clip_name2": "te0.safetensors",
                                                                  "type": "sdxl", "device": "default"}}
                     if family == "sdxl" else
                     {"class_type": "CLIPLoader", "inputs": {"clip_name": "te0.safetensors", "type": "stable_diffusion"}}),
            "vae": {"class_type": "VAELoader", "inputs": {"vae_name": "sdxl_vae.safetensors" if family == "sdxl" else "vae.safetensors"}},
        }
        model, vae = ["model", 0], ["vae", 0]
    else:
        loaders = {"clip": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "whole.safetensors"}}}
        model, vae = ["clip", 0], ["clip", 2]
    return {
        **loaders,
        "pos": {"class_type": prompt, "inputs": text("a red circle")},
        "neg": {"class_type": prompt, "inputs": text("blurry")},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 32, "height": 32, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {
            "seed": 5, "steps": 3, "cfg": 6.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
            "model": model, "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0]}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": vae}},
        "out": {"class_type": "PreviewImage", "inputs": {"images": ["decode", 0]}},
    }


def _image(data: dict, root, tmp_path) -> np.ndarray:
    from nodeflow.engine.executor import Executor

    registry = default_registry()
    workflow = workflow_from_dict(data, registry)
    for node in workflow.graph.nodes.values():
        if "dtype" in registry.get(node.type).inputs:
            workflow.graph.set_value(node.id, "dtype", "fp32")
    # The tiny VAE scales by 2, not SD's 8, which a UNet file cannot tell: the latent asks the VAE.
    vae = "vae" if "vae" in workflow.graph.nodes else "clip"
    workflow.graph.connect(vae, "vae", "latent", "vae", replace=True)
    result = Executor(registry, device="cpu").run(workflow.graph, output_dir=tmp_path, settings=_settings(root))
    assert result.ok, result.error
    return result.outputs["out"]["images"].numpy()


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_the_split_files_give_the_checkpoints_image(split, family, tmp_path):
    whole = _image(_workflow(family, split_parts=False), split[family], tmp_path)
    parts = _image(_workflow(family, split_parts=True), split[family], tmp_path)
    assert whole.shape == (1, 32, 32, 3) and whole.std() > 0.01
    np.testing.assert_allclose(parts, whole, atol=1e-5)


def test_the_importer_maps_the_loaders_and_keeps_the_run_precision():
    registry = default_registry()
    graph = workflow_from_dict(_workflow("sdxl", split_parts=True), registry).graph
    assert graph.nodes["model"].type == "UNet" and graph.nodes["model"].values["unet"] == "unet.safetensors"
    assert graph.nodes["model"].values.get("dtype", "auto") == "auto"  # fp8: loaded at the run's precision
    assert graph.nodes["clip"].type == "DualTextEncoderLoader"
    assert (graph.nodes["clip"].values["clip_name1"], graph.nodes["clip"].values["clip_name2"]) == ("te1.safetensors", "te0.safetensors")
    graph = workflow_from_dict(_workflow("sd1", split_parts=True), registry).graph
    assert graph.nodes["clip"].type == "TextEncoderLoader" and graph.nodes["clip"].values["clip_name"] == "te0.safetensors"


@pytest.mark.parametrize("loader, kind", [("CLIPLoader", "sd3"), ("CLIPLoader", "wan"), ("DualCLIPLoader", "flux")])
def test_text_encoder_types_of_other_model_families_are_refused_naming_the_field(loader, kind):
    data = _workflow("sd1", split_parts=True)
    data["clip"] = {"class_type": loader, "inputs": {"clip_name": "t5xxl.safetensors", "clip_name1": "clip_l.safetensors",
                                                     "clip_name2": "t5xxl.safetensors", "type": kind}}
    with pytest.raises(WorkflowError, match=rf"node clip \({loader}\): type '{kind}' has no nodeflow equivalent"):
        workflow_from_dict(data, default_registry())


def test_an_unknown_weight_dtype_is_refused():
    data = _workflow("sd1", split_parts=True)
    data["model"]["inputs"]["weight_dtype"] = "int4"
    with pytest.raises(WorkflowError, match=r"weight_dtype 'int4' has no nodeflow equivalent"):
        workflow_from_dict(data, default_registry())


def test_the_families_and_encoders_found_in_the_files(split):
    from nodes.diffusion.loaders import UNet

    for family, expected in (("sd1", ["sd1"]), ("sd2", ["sd2"])):
        ctx = RunContext(device="cpu", settings=_settings(split[family]))
        clip = TextEncoderLoader().run(ctx, clip_name="te0.safetensors", encoder="auto", dtype="fp32")
        assert [clip.family.name] == expected and len(clip.encoders) == 1
        assert UNet().run(ctx, unet="unet.safetensors", dtype="fp32", prediction="auto").family.name == family
    ctx = RunContext(device="cpu", settings=_settings(split["sdxl"]))
    pair = DualTextEncoderLoader().run(ctx, clip_name1="te1.safetensors", clip_name2="te0.safetensors", dtype="fp32")
    assert pair.family.name == "sdxl" and [e.config.hidden_size for e in pair.encoders] == [32, 64]
    assert pair.pad_token_ids[0] != pair.pad_token_ids[1]  # CLIP-L pads with its end token, OpenCLIP-G with 0
    # OpenCLIP-G alone is the SDXL refiner's text encoder, when the file's size does not say so itself
    alone = TextEncoderLoader().run(ctx, clip_name="te1.safetensors", encoder="open_clip_g", dtype="fp32")
    assert alone.family.name == "sdxl_refiner" and alone.encoders[0].text_projection is not None


def test_a_missing_file_names_the_field_and_the_folders_searched(split):
    ctx = RunContext(device="cpu", settings=_settings(split["sd1"]))
    problems = TextEncoderLoader.check_host({"clip_name": "clip_l.safetensors"}, ctx)
    assert "clip_l.safetensors" in problems["clip_name"] and str(split["sd1"] / "text_encoders") in problems["clip_name"]
    with pytest.raises(NodeError) as error:
        DualTextEncoderLoader().run(ctx, clip_name1="te0.safetensors", clip_name2="nope.safetensors", dtype="fp32")
    assert error.value.field == "clip_name2" and "not found" in error.value.message


def test_a_file_of_another_kind_is_refused_naming_the_field(split, tmp_path):
    from safetensors.torch import save_file

    folder = tmp_path / "text_encoders"
    folder.mkdir()
    save_file({"encoder.block.0.layer.0.SelfAttention.k.weight": torch.zeros(4, 4)}, folder / "t5.safetensors")
    (folder / "whole.safetensors").symlink_to(split["sd1"] / "checkpoints" / "whole.safetensors")
    ctx = RunContext(device="cpu", settings=RunSettings(model_folders={"clip": [folder]}))
    with pytest.raises(NodeError, match="holds no CLIP text encoder") as foreign:
        TextEncoderLoader().run(ctx, clip_name="t5.safetensors", encoder="auto", dtype="fp32")
    assert foreign.value.field == "clip_name"
    with pytest.raises(NodeError) as outside:  # a link out of the text encoder folders is never read
        TextEncoderLoader().run(ctx, clip_name="whole.safetensors", encoder="auto", dtype="fp32")
    assert outside.value.field == "clip_name" and "outside" in outside.value.message


def test_the_memory_estimates_hold_the_files_weights(split):
    from safetensors.torch import load_file

    from nodes.diffusion.loaders import UNet

    root = split["sdxl"]
    ctx = RunContext(device="cpu", settings=_settings(root))
    unet = UNet.estimate_memory({"unet": "unet.safetensors", "dtype": "fp32"}, {}, ctx)
    stored = sum(t.numel() * 4 for t in load_file(root / "diffusion_models" / "unet.safetensors").values())
    assert unet.holds == stored and unet.facts["unet_weights"] == stored
    pair = DualTextEncoderLoader.estimate_memory({"clip_name1": "te0.safetensors", "clip_name2": "te1.safetensors",
                                                  "dtype": "fp32"}, {}, ctx)
    expected = sum(t.numel() * 4 for name in ("te0", "te1")
                   for t in load_file(root / "text_encoders" / f"{name}.safetensors").values())
    assert pair.holds == expected


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_a_unet_file_in_either_naming_predicts_as_the_checkpoints_unet(split, family):
    """Original names (bare) and diffusers names without a config: the same UNet, its SDXL
    time-id width found without the text encoder that tells it in a checkpoint."""
    from nodes.diffusion.loaders import Checkpoint, UNet

    ctx = RunContext(device="cpu", settings=_settings(split[family]))
    whole = Checkpoint().run(ctx, checkpoint="whole.safetensors", dtype="fp32", prediction="auto")["model"]
    other = "unet_original.safetensors" if family == "sdxl" else "unet_diffusers.safetensors"
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 8, 8, generator=generator)
    context = torch.randn(1, 77, whole.unet.config.cross_attention_dim, generator=generator)
    extra = {}
    if family == "sdxl":
        pooled = whole.unet.config.projection_class_embeddings_input_dim - 6 * whole.unet.config.addition_time_embed_dim
        extra = {"added_cond_kwargs": {"text_embeds": torch.randn(1, pooled, generator=generator),
                                       "time_ids": torch.tensor([[32.0, 32, 0, 0, 32, 32]])}}
    with torch.no_grad():
        expected = whole.unet(x, 10, context, **extra).sample
        for name in ("unet.safetensors", other):
            loaded = UNet().run(ctx, unet=name, dtype="fp32", prediction="auto")
            assert loaded.family.name == family and loaded.scheduler_config == whole.scheduler_config, name
            assert torch.allclose(loaded.unet(x, 10, context, **extra).sample, expected, atol=1e-6), name


def test_published_sizes_decide_family_time_ids_and_encoder():
    from nodes.diffusion.impl import loading

    assert loading._pooled_width(2816, 2048, 6) == 1280  # SDXL base: 1280 + 6 x 256
    assert loading._pooled_width(2560, 1280, 5) == 1280  # the refiner: 1280 + 5 x 256
    assert loading._pooled_width(64 + 6 * 8, 96, 6) == 64  # a narrower model: ids 8 wide
    assert loading.lone_unet_family(768, False, False, False) == "sd1"
    assert loading.lone_unet_family(1024, True, False, False) == "sd2"
    assert loading.lone_unet_family(1024, True, False, True) == "sd2"  # unCLIP's image embedding
    assert loading.lone_unet_family(2048, True, True, False) == "sdxl"
    assert loading.lone_unet_family(1280, True, True, False) == "sdxl_refiner"
    assert loading.lone_unet_family(64, True, False, False) == "sd2"  # narrower: by the linear projections
    assert loading.lone_unet_family(32, False, False, False) == "sd1"

    def encoder(width: int, layers: int, layout: str = "transformers") -> str:
        if layout == "open_clip":
            state = {"token_embedding.weight": torch.empty(49408, width, device="meta"),
                     **{f"transformer.resblocks.{i}.ln_1.weight": torch.empty(width, device="meta") for i in range(layers)}}
        else:
            state = {"text_model.embeddings.token_embedding.weight": torch.empty(49408, width, device="meta"),
                     **{f"text_model.encoder.layers.{i}.mlp.fc1.weight": torch.empty(1, device="meta") for i in range(layers)}}
        return loading.detect_encoder(loading.text_encoder_file(state, "x.safetensors"))

    assert encoder(768, 12) == "clip_l"
    assert encoder(1024, 24, "open_clip") == encoder(1024, 23) == "open_clip_h"
    assert encoder(1280, 32) == encoder(1280, 32, "open_clip") == "open_clip_g"
    prefixed = {"conditioner.embedders.1.model." + k: v for k, v in
                {"token_embedding.weight": torch.empty(49408, 1280, device="meta"),
                 "transformer.resblocks.0.ln_1.weight": torch.empty(1280, device="meta")}.items()}
    assert loading.text_encoder_file(prefixed, "g.safetensors").layout == "open_clip"  # a checkpoint's prefix taken off
