"""Save Checkpoint: a model with a LoRA baked in, saved as one original-layout file and
loaded back by the Checkpoint node, draws what the LoRA'd model draws; SDXL's two text
encoders survive the trip; the file carries the workflow; families nodeflow cannot write
are refused naming the input."""

from __future__ import annotations

import json
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from nodeflow import NodeError, RunContext, RunSettings  # noqa: E402
from nodes.diffusion.loaders import Checkpoint  # noqa: E402
from nodes.diffusion.lora import LoRA  # noqa: E402
from nodes.diffusion.model_save import CheckpointSave  # noqa: E402
from nodes.diffusion.sampling import CFG, Noise, Sampler  # noqa: E402
from nodes.diffusion.text import TextEncoder  # noqa: E402
from nodes.diffusion.types import Latent  # noqa: E402
from tests.support import FIXTURES  # noqa: E402
from tests.support.standins import build_kohya_lora  # noqa: E402
from tests.support.tiny_models import shared_tiny_sd, shared_tiny_sdxl  # noqa: E402


def _load(folder, name):
    ctx = RunContext(device="cpu", settings=RunSettings(model_folders={"checkpoints": [folder]}))
    return Checkpoint().run(ctx, checkpoint=name, dtype="fp32", prediction="auto")


def _image_latent(loaded, side=16):
    encode = TextEncoder()
    positive = encode.run(RunContext(), clip=loaded["clip"], text="a red circle", clip_skip=1)
    negative = encode.run(RunContext(), clip=loaded["clip"], text="blurry", clip_skip=1)
    guider = CFG().run(RunContext(), loaded["model"], positive, negative, 6.0, 0.0)
    channels = loaded["model"].unet.config.in_channels
    return Sampler().run(RunContext(), noise=Noise().run(RunContext(), seed=5), guider=guider,
                         latent=Latent(torch.zeros(1, channels, side, side)), sampler="euler", schedule="normal",
                         steps=3, denoise=1.0, eta=0.0).samples


def _save(tmp_path, loaded, workflow=None, dtype="fp32"):
    written = []
    ctx = RunContext(device="cpu", output_dir=tmp_path / "out", settings=RunSettings(workflow=workflow),
                     on_file_written=written.append)
    CheckpointSave().run(ctx, model=loaded["model"], clip=loaded["clip"], vae=loaded["vae"], filename_prefix="merged",
                         dtype=dtype)
    assert len(written) == 1
    return written[0]


def test_a_model_with_a_lora_saved_and_loaded_back_draws_what_the_lora_draws(tmp_path_factory, tmp_path):
    tiny = shared_tiny_sd(tmp_path_factory)
    lora_file = build_kohya_lora(tiny, tmp_path / "loras" / "style.safetensors")
    base = _load(tiny.parent, tiny.name)
    ctx = RunContext(device="cpu", settings=RunSettings(model_folders={"checkpoints": [tiny.parent],
                                                                       "loras": [lora_file.parent]}))
    with_lora = {**base, **LoRA().run(ctx, base["model"], base["clip"], "style.safetensors", 0.8, 0.6)}
    expected = _image_latent(with_lora)
    plain = _image_latent(base)
    assert (expected - plain).abs().max() > 1e-3  # the LoRA does something

    path = _save(tmp_path, with_lora, workflow={"format": "nodeflow", "nodes": {}})
    assert path.parent == tmp_path / "out" / "checkpoints" and path.name == "merged_00001.safetensors"
    reloaded = _load(path.parent, path.name)
    torch.testing.assert_close(_image_latent(reloaded), expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(_image_latent(base), plain)  # the cached base model is as it was

    from safetensors import safe_open

    with safe_open(path, "pt") as opened:
        assert json.loads(opened.metadata()["workflow"]) == {"format": "nodeflow", "nodes": {}}
        assert not any("lora" in key for key in opened.keys())
    assert _save(tmp_path, with_lora).name == "merged_00002.safetensors"  # never over a file


def test_an_sdxl_checkpoint_keeps_both_text_encoders(tmp_path_factory, tmp_path):
    tiny = shared_tiny_sdxl(tmp_path_factory)
    loaded = _load(tiny.parent, tiny.name)
    path = _save(tmp_path, loaded, dtype="fp32")
    reloaded = _load(path.parent, path.name)
    assert reloaded["model"].family.name == "sdxl"
    torch.testing.assert_close(_image_latent(reloaded), _image_latent(loaded), atol=1e-4, rtol=1e-4)


def test_fp16_files_are_half_the_size(tmp_path_factory, tmp_path):
    tiny = shared_tiny_sd(tmp_path_factory)
    loaded = _load(tiny.parent, tiny.name)
    full, half = _save(tmp_path / "a", loaded, dtype="fp32"), _save(tmp_path / "b", loaded, dtype="fp16")
    assert half.stat().st_size < 0.6 * full.stat().st_size


def test_a_family_nodeflow_cannot_write_is_refused_naming_the_input(tmp_path_factory, tmp_path):
    from dataclasses import replace

    tiny = shared_tiny_sd(tmp_path_factory)
    loaded = _load(tiny.parent, tiny.name)
    other = replace(loaded["vae"], family=replace(loaded["vae"].family, name="sd2"))
    with pytest.raises(NodeError, match="saves SD 1.x and SDXL checkpoints; this vae is sd2") as error:
        CheckpointSave().run(RunContext(output_dir=tmp_path), model=loaded["model"], clip=loaded["clip"], vae=other,
                             filename_prefix="x", dtype="fp16")
    assert error.value.field == "vae"
    assert not (tmp_path / "checkpoints").exists()


def test_comfyuis_checkpoint_save_keeps_the_name_part_of_its_prefix():
    from nodeflow.files.open import workflow_from_dict
    from nodeflow.model.registry import default_registry

    prompt = json.loads((FIXTURES / "comfyui" / "txt2img_api.json").read_text())
    loader = next(key for key, node in prompt.items() if node["class_type"] == "CheckpointLoaderSimple")
    prompt["99"] = {"class_type": "CheckpointSave", "inputs": {"filename_prefix": "checkpoints/ComfyUI",
                                                               "model": [loader, 0], "clip": [loader, 1], "vae": [loader, 2]}}
    graph = workflow_from_dict(prompt, default_registry()).graph
    saves = [node for node in graph.nodes.values() if node.type == "CheckpointSave"]
    assert len(saves) == 1 and saves[0].values["filename_prefix"] == "ComfyUI"
