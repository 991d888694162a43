"""Running part of a schedule: the SDXL base -> refiner pattern (KSamplerAdvanced).

A Sampler with ``end_step`` and ``leftover_noise`` stops early and hands on the still-noisy
latent; a second Sampler with No Noise and ``start_step`` continues it. For a solver
without history (Euler) the two halves are exactly one full run; for a multistep solver
the second half restarts its history, so the result is near the full run, not equal.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import nodeflow.api as api  # noqa: E402
from nodeflow import RunSettings  # noqa: E402
from tests.support import FIXTURES  # noqa: E402
from tests.support.tiny_models import shared_tiny_sd  # noqa: E402

STEPS, SPLIT = 6, 3


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return RunSettings(model_folders={"checkpoints": [shared_tiny_sd(tmp_path_factory).parent]})


def _flow(sampler: str, split: bool, leftover: bool = True):
    flow = api.new(device="cpu")
    flow.add("Checkpoint", "ckpt", checkpoint="tiny-sd")
    flow.add("TextEncoder", "pos", text="a red circle on a blue background")
    flow.add("TextEncoder", "neg", text="blurry")
    flow.add("EmptyLatent", "latent", width=32, height=32)
    flow.add("Noise", "noise", seed=1234)
    flow.add("CFG", "cfg", scale=7.5)
    flow.add("Sampler", "base", sampler=sampler, steps=STEPS, **({"end_step": SPLIT, "leftover_noise": leftover} if split else {}))
    flow.add("PreviewImage", "show")
    flow.add("VAEDecode", "decode")
    links = [("ckpt.clip", "pos.clip"), ("ckpt.clip", "neg.clip"), ("ckpt.model", "latent.model"),
             ("ckpt.model", "cfg.model"), ("pos.conditioning", "cfg.positive"), ("neg.conditioning", "cfg.negative"),
             ("noise.noise", "base.noise"), ("cfg.guider", "base.guider"), ("latent.latent", "base.latent"),
             ("ckpt.vae", "decode.vae"), ("decode.image", "show.images")]
    if split:
        flow.add("DisableNoise", "none")
        flow.add("Sampler", "refiner", sampler=sampler, steps=STEPS, start_step=SPLIT)
        links += [("none.noise", "refiner.noise"), ("cfg.guider", "refiner.guider"), ("base.latent", "refiner.latent"),
                  ("refiner.latent", "decode.latent")]
    else:
        links.append(("base.latent", "decode.latent"))
    for source, target in links:
        flow.connect(source, target)
    return flow


def _latents(flow, models, tmp_path):
    result = flow.run(output_dir=tmp_path, device="cpu", settings=models)
    return {nid: out for nid, out in result.outputs.items()}


def _image(flow, models, tmp_path) -> np.ndarray:
    return _latents(flow, models, tmp_path)["show"]["images"].numpy()


def test_base_then_refiner_equals_one_full_run_for_euler(models, tmp_path):
    full = _image(_flow("euler", split=False), models, tmp_path)
    halves = _image(_flow("euler", split=True), models, tmp_path)
    assert np.array_equal(full, halves)


def test_a_multistep_solver_continues_near_the_full_run(models, tmp_path):
    # DPM-Solver++ keeps its latent variance-preserving; the hand-over converts it to the
    # k-diffusion form and back. Without that the refiner would start far off (an image
    # of noise); with it only the solver's restarted history differs.
    full = _image(_flow("dpmpp_2m", split=False), models, tmp_path)
    halves = _image(_flow("dpmpp_2m", split=True), models, tmp_path)
    assert np.abs(full - halves).mean() < 0.02
    assert not np.array_equal(full, halves)


def test_stopping_without_leftover_noise_returns_a_clean_estimate(models, tmp_path):
    clean, noisy = _flow("euler", split=False), _flow("euler", split=False)
    clean.set("base", "end_step", SPLIT).set("base", "leftover_noise", False)
    noisy.set("base", "end_step", SPLIT).set("base", "leftover_noise", True)
    clean_image, noisy_image = _image(clean, models, tmp_path / "a"), _image(noisy, models, tmp_path / "b")
    full = _image(_flow("euler", split=False), models, tmp_path / "c")
    # Half-way, the clean estimate is nearer the finished image than the still-noisy latent.
    assert np.abs(clean_image - full).mean() < np.abs(noisy_image - full).mean()


def test_comfyui_base_and_refiner_ksampler_advanced_equal_one_ksampler(models, tmp_path):
    import json

    from nodeflow.files.open import workflow_from_dict
    from nodeflow.model.registry import default_registry

    data = json.loads((FIXTURES / "comfyui" / "base_refiner_api.json").read_text())
    graph = workflow_from_dict(data, default_registry()).graph
    assert graph.nodes["3"].values["end_step"] == SPLIT and graph.nodes["3"].values["leftover_noise"] is True
    assert graph.nodes["10"].values["start_step"] == SPLIT and graph.nodes["10.noise"].type == "DisableNoise"
    split = api.open(FIXTURES / "comfyui" / "base_refiner_api.json", device="cpu")
    one = dict(data)
    one["3"] = {"class_type": "KSampler", "inputs": {**{k: v for k, v in data["3"]["inputs"].items() if k in (
        "cfg", "sampler_name", "scheduler", "steps", "model", "positive", "negative", "latent_image")}, "seed": 1234, "denoise": 1.0}}
    one["8"] = {**data["8"], "inputs": {**data["8"]["inputs"], "samples": ["3", 0]}}
    del one["10"]
    path = tmp_path / "one.json"
    path.write_text(json.dumps(one))
    whole = api.open(path, device="cpu")

    def saved(flow, name):
        result = flow.run(output_dir=tmp_path / name, device="cpu", settings=models)
        return next(out["images"] for nid, out in result.outputs.items() if flow.graph.nodes[nid].type == "SaveImage").numpy()

    assert np.array_equal(saved(split, "split"), saved(whole, "whole"))
