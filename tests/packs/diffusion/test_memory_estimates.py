"""The plan's memory estimate follows sizes and weights through the nodes that change them
(an upscale model, a LoRA, an image read from disk), and `nodeflow validate` refuses what
`run` would, naming the node and field, before anything loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from nodeflow.cli import EXIT_INVALID  # noqa: E402
from nodeflow.engine.executor import Executor  # noqa: E402
from nodeflow.files.open import workflow_from_dict  # noqa: E402
from nodeflow.model.registry import default_registry  # noqa: E402
from tests.support import ROOT, host_context  # noqa: E402

ADAPTERS = ROOT / "nodes" / "bundled" / "adapters"


def _document(name: str, **values: dict) -> dict:
    document = json.loads((ROOT / "workflows" / name).read_text())
    for node in document["nodes"]:
        node["values"].update(values.get(node["id"], {}))
    return document


def _steps(estimate) -> dict:
    return {step.node_id: step for step in estimate.steps}


def test_validate_refuses_a_workflow_too_big_for_the_budget_naming_the_empty_latent(tmp_path):
    document = _document("txt2img.json")
    for node in document["nodes"]:
        if node["type"] == "EmptyLatent":
            node["values"].update(width=256, height=256)
    path = tmp_path / "big.json"
    path.write_text(json.dumps(document))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "nodeflow.cli", "validate", str(path), "--json", "--device", "cpu"]
    refused = subprocess.run([*command, "--memory-budget", "40MB"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert refused.returncode == EXIT_INVALID, refused.stderr
    problems = json.loads(refused.stdout)["problems"]
    where = {(p["node_type"], p["field"]) for p in problems if p["code"] == "over_memory_budget"}
    assert ("EmptyLatent", "width") in where, problems
    roomy = subprocess.run([*command, "--memory-budget", "8GB"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert roomy.returncode == 0, roomy.stdout + roomy.stderr


def test_an_upscale_is_estimated_from_the_model_file_and_refused_whole_when_it_cannot_fit(tmp_path):
    """The upscale model's scale and width come from its file's header; they are what
    loading it finds, and the upscaled image's size reaches the second pass."""
    from nodes.diffusion.impl.memory import upscale_need

    registry = default_registry()
    ctx = host_context()
    document = _document("hires-fix.json", empty={"width": 256, "height": 256}, upscale={"tiling": "off"})
    graph = workflow_from_dict(document, registry).graph
    executor = Executor(registry, device="cpu")
    steps = _steps(executor.estimate(graph, output_dir=tmp_path, settings=ctx.settings))
    model = registry.get("UpscaleModelLoader")().run(ctx, model_name="2x-shapes-compact.safetensors", dtype="fp32")
    expected = upscale_need(model, 1, 256, 256, None).bytes
    assert steps["upscale"].need == expected
    assert steps["hires"].need > steps["sampler"].need * 3  # sampling the 2x image: four times the positions

    settings = ctx.settings.replace(memory_budget=expected - 1)
    problems = {(p.node_type, p.field) for p in executor.check(graph, output_dir=tmp_path, settings=settings)}
    assert ("ImageUpscaleWithModel", "tiling") in problems, problems


def test_a_lora_adds_its_weights_to_the_model_it_patches(tmp_path):
    """Its tensors at the model's precision (fp32 here; non-float ones as stored) are held
    beside the model's, and the sampler that uses the patched model counts both."""
    from safetensors.torch import load_file

    registry = default_registry()
    ctx = host_context()
    graph = workflow_from_dict(_document("lora.json", **{"1": {"dtype": "fp32"}}), registry).graph
    steps = _steps(Executor(registry, device="cpu").estimate(graph, output_dir=tmp_path, settings=ctx.settings))
    tensors = load_file(ADAPTERS / "loras" / "shapes-heart.safetensors")
    size = sum(t.numel() * (4 if t.is_floating_point() else t.element_size()) for t in tensors.values())
    assert steps["9"].holds == size
    assert steps["6"].peak >= steps["1"].holds + steps["9"].holds + steps["6"].need
