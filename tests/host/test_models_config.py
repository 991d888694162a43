"""Models where users already keep them: ComfyUI trees, Hugging Face caches, plain folders,
named on the command line, in the environment or in a config file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from nodeflow.host.config import ConfigError, load_models_config  # noqa: E402
from nodeflow.host.settings import build_run_settings  # noqa: E402
from nodeflow.model.registry import NodeRegistry  # noqa: E402
from nodes.diffusion.impl.paths import list_models, resolve_model_path  # noqa: E402
from tests.support import ROOT


def _touch(path: Path, content: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


@pytest.fixture
def comfy_tree(tmp_path):
    root = tmp_path / "ComfyUI" / "models"
    _touch(root / "checkpoints" / "sd15.safetensors")
    _touch(root / "checkpoints" / "anime" / "model.ckpt")
    _touch(root / "diffusion_models" / "flux_unet.safetensors")
    _touch(root / "unet" / "old_unet.safetensors")
    _touch(root / "loras" / "style.safetensors")
    _touch(root / "vae" / "vae-ft-mse.safetensors")
    _touch(root / "gligen" / "gligen_sd14_textbox_pruned.safetensors")
    return root


@pytest.fixture
def hf_cache(tmp_path):
    """A Hugging Face hub cache: snapshots hold symlinks into blobs/, refs/main names one."""
    hub = tmp_path / "huggingface" / "hub"
    repo = hub / "models--acme--tiny-diffusion"
    blob = _touch(repo / "blobs" / "abc123", json.dumps({"_class_name": "StableDiffusionPipeline"}).encode())
    for revision in ("old0000", "main1111"):
        snapshot = repo / "snapshots" / revision
        snapshot.mkdir(parents=True)
        (snapshot / "model_index.json").symlink_to(blob)
    _touch(repo / "refs" / "main", b"main1111")
    unet = hub / "models--acme--just-a-unet" / "snapshots" / "r1"
    _touch(unet / "config.json", b"{}")
    _touch(hub / "models--acme--just-a-unet" / "refs" / "main", b"r1")
    return hub.parent


def test_a_comfyui_models_tree_is_recognised(comfy_tree):
    settings = build_run_settings(NodeRegistry(), [comfy_tree], environ={"NODEFLOW_CONFIG_DIR": "/nonexistent"})
    assert list_models("checkpoints", settings)[:2] == ["anime/model.ckpt", "sd15.safetensors"]
    assert {"flux_unet.safetensors", "old_unet.safetensors"} <= set(list_models("unet", settings))
    assert settings.folders("loras") == (comfy_tree / "loras",)
    assert settings.folders("vae") == (comfy_tree / "vae",)
    assert list_models("gligen", settings) == ["gligen_sd14_textbox_pruned.safetensors"]  # GLIGENLoader's folder
    assert resolve_model_path("anime/model.ckpt", "checkpoints", settings) == comfy_tree / "checkpoints/anime/model.ckpt"


def test_a_hugging_face_cache_offers_models_by_repo_name(hf_cache):
    settings = build_run_settings(NodeRegistry(), [hf_cache], environ={"NODEFLOW_CONFIG_DIR": "/nonexistent"})
    assert "acme/tiny-diffusion" in list_models("checkpoints", settings)
    assert "acme/just-a-unet" in list_models("unet", settings)
    found = resolve_model_path("acme/tiny-diffusion", "checkpoints", settings)
    assert found.name == "main1111"  # the revision refs/main points at
    assert (found / "model_index.json").is_file()


def test_sources_flag_then_environment_then_config_file(tmp_path, comfy_tree):
    flag = tmp_path / "flag"
    env = tmp_path / "env"
    listed = tmp_path / "listed"
    extra = tmp_path / "extra-loras"
    for folder in (flag, env, listed, extra):
        folder.mkdir()
    config_dir = tmp_path / "config"
    _touch(config_dir / "config.json", json.dumps(
        {"models": [str(listed)], "model_folders": {"loras": [str(extra)]}}).encode())
    environ = {"NODEFLOW_MODELS": os.pathsep.join([str(env), str(comfy_tree)]), "NODEFLOW_CONFIG_DIR": str(config_dir)}

    config = load_models_config([flag], environ)
    assert config.folders["checkpoints"] == [flag, env, comfy_tree / "checkpoints", listed]
    assert config.folders["loras"] == [comfy_tree / "loras", extra]


def test_bad_configuration_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="is not a folder"):
        load_models_config([tmp_path / "missing"], {"NODEFLOW_CONFIG_DIR": str(tmp_path)})
    _touch(tmp_path / "config.json", b"{not json")
    with pytest.raises(ConfigError, match="config.json"):
        load_models_config([], {"NODEFLOW_CONFIG_DIR": str(tmp_path)})


def test_the_cli_finds_models_through_the_flag(tmp_path, tmp_path_factory):
    """`nodeflow run --models DIR` on a workflow naming a model by its name in DIR."""
    import subprocess
    import sys

    from tests.support.tiny_models import shared_tiny_sd

    models = shared_tiny_sd(tmp_path_factory).parent
    root = ROOT
    import nodeflow.api as api

    flow = api.open(root / "workflows" / "txt2img.json")
    flow.set("1.checkpoint", "tiny-sd").set("7.steps", 1)
    flow.save(tmp_path / "wf.json")
    missing = flow.run(output_dir=tmp_path / "none", device="cpu", check=False)  # no models folder given
    # found before anything runs (validation asks the host), not after the model would load
    assert missing.status == "invalid" and "'tiny-sd' not found" in missing.error

    command = [sys.executable, "-m", "nodeflow.cli", "run", str(tmp_path / "wf.json"), "-q", "-o", str(tmp_path / "out"),
               "--models", str(models)]
    env = {**os.environ, "NODEFLOW_CONFIG_DIR": str(tmp_path / "no-config"), "PYTHONPATH": str(root)}
    found = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert found.returncode == 0, found.stderr
    assert len(list((tmp_path / "out").glob("*.png"))) == 1
