"""Sizes a workflow asks for are checked against the memory budget before anything is
allocated, naming the node, the field and the figures; what can be checked before the run
(files, folders, pixel budgets) is found by validation, so nothing generated is lost."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from nodeflow import NodeError  # noqa: E402
from nodeflow.engine.executor import Executor  # noqa: E402
from nodeflow.files.open import workflow_from_dict  # noqa: E402
from nodeflow.model.context import RunContext  # noqa: E402
from nodeflow.model.registry import default_registry  # noqa: E402
from nodeflow.model.validation import validate  # noqa: E402
from tests.support import ROOT, host_context  # noqa: E402

GB = 2**30


@pytest.fixture(scope="module")
def shapes():
    ctx = host_context()
    return default_registry().get("Checkpoint")().run(ctx, checkpoint="shapes", dtype="fp32", prediction="auto")


def _txt2img(width: int, height: int, tiling: str = "auto") -> dict:
    document = json.loads((ROOT / "workflows" / "txt2img.json").read_text())
    for node in document["nodes"]:
        if node["type"] == "EmptyLatent":
            node["values"].update(width=width, height=height)
        if node["type"] == "Sampler":
            node["values"]["steps"] = 1
        if node["type"] == "VAEDecode":
            node["values"]["tiling"] = tiling
    return document


def test_a_whole_decode_over_the_budget_is_refused_before_allocating(shapes):
    cls = default_registry().get("VAEDecode")
    latent = torch.zeros(1, 4, 4096, 4096, device="meta")  # 8192x8192 pixels for the bundled model; no memory
    inputs = {"vae": shapes["vae"], "latent": type("L", (), {"samples": latent})(), "tiling": "off", "tile_size": 512}
    need = cls.working_memory(inputs, None)
    assert need.field == "tiling" and need.bytes > 8 * GB
    from nodeflow.model.memory import check_memory
    from nodeflow import RunSettings

    with pytest.raises(NodeError, match=r"without tiles needs about [\d.,]+ GB .* budget of 4\.0 GB") as caught:
        check_memory(need, RunSettings(memory_budget=4 * GB))
    assert caught.value.field == "tiling"
    tiled = cls.working_memory({**inputs, "tiling": "on"}, None)
    assert tiled.bytes < need.bytes / 4  # tiling is the way out the message names


def test_a_run_whose_sampling_exceeds_the_budget_is_refused_before_it_starts(tmp_path):
    registry = default_registry()
    workflow = workflow_from_dict(_txt2img(256, 256), registry)
    settings = host_context().settings.replace(memory_budget=40 * 2**20)
    result = Executor(registry, device="cpu").run(workflow.graph, output_dir=tmp_path, settings=settings)
    assert result.status == "invalid" and result.executed == ()  # the plan's estimate: nothing loaded
    problems = {(p.node_type, p.field): p.message for p in result.problems}  # every one at once
    assert set(problems) == {("EmptyLatent", "width"), ("VAEDecode", "tiling")}
    assert "Sampler" in problems["EmptyLatent", "width"] and "budget of 40 MB" in problems["EmptyLatent", "width"]
    assert "without tiles" in problems["VAEDecode", "tiling"]
    assert list(tmp_path.iterdir()) == []


def test_an_image_too_big_to_encode_is_refused_on_the_load_image_before_it_runs(tmp_path):
    """The plan reads the image's size from its file header (no pixels decoded), so an
    img2img whose encode cannot fit is refused on LoadImage's image before anything runs."""
    from PIL import Image

    (tmp_path / "input").mkdir()
    Image.new("RGB", (256, 256), "yellow").save(tmp_path / "input" / "big.png")
    Image.new("RGB", (32, 32), "yellow").save(tmp_path / "input" / "small.png")
    registry = default_registry()
    document = json.loads((ROOT / "workflows" / "img2img.json").read_text())
    settings = host_context().settings.replace(memory_budget=40 * 2**20)
    results = {}
    for name in ("big.png", "small.png"):
        for node in document["nodes"]:
            if node["type"] == "LoadImage":
                node["values"]["image"] = name
        workflow = workflow_from_dict(document, registry)
        results[name] = Executor(registry, device="cpu").check(workflow.graph, output_dir=tmp_path / "out",
                                                               input_dir=tmp_path / "input", settings=settings)
    assert results["small.png"] == []
    problems = {(p.node_type, p.field): p.message for p in results["big.png"]}
    assert ("LoadImage", "image") in problems, problems
    assert "encoding 1 x 256x256" in problems["LoadImage", "image"] and "budget of 40 MB" in problems["LoadImage", "image"]
    assert not (tmp_path / "out").exists()


def test_validation_with_the_host_finds_missing_files_and_unusable_folders(tmp_path):
    registry = default_registry()
    document = _txt2img(64, 64)
    document["nodes"][0]["values"]["checkpoint"] = "shapess"
    document["nodes"].append({"id": "20", "type": "LoadImage", "values": {"image": "cat.png"}})
    document["nodes"].append({"id": "21", "type": "SaveImage", "values": {"filename_prefix": "../up"}})
    document["links"].append({"from": {"node": "20", "output": "image"}, "to": {"node": "21", "input": "images"}})
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / "cat.jpg").write_bytes(b"x")
    (tmp_path / "out").write_text("a file where the output folder should be")
    workflow = workflow_from_dict(document, registry)
    context = RunContext(output_dir=tmp_path / "out", input_dir=tmp_path / "input", settings=host_context().settings)

    assert validate(workflow.graph, extra_problems=workflow.problems) == []  # without the host: nothing to see
    problems = {(p.node_id, p.field): p for p in validate(workflow.graph, context=context)}
    assert "nearest name: 'shapes'" in problems[("1", "checkpoint")].message
    assert problems[("1", "checkpoint")].code == "missing_file"
    assert "nearest name: 'cat.jpg'" in problems[("20", "image")].message
    assert "may not contain" in problems[("21", "filename_prefix")].message
    saves = [p for (node, field), p in problems.items() if field is None and "is a file, not a folder" in p.message]
    assert saves  # both SaveImage nodes name the output folder


def test_an_empty_latent_over_the_pixel_budget_is_refused_before_the_run(tmp_path):
    registry = default_registry()
    workflow = workflow_from_dict(_txt2img(8192, 8192), registry)
    settings = host_context().settings.replace(max_batch_pixels=1 << 20)
    result = Executor(registry, device="cpu").run(workflow.graph, output_dir=tmp_path, settings=settings)
    assert result.status == "invalid" and any(p.field == "width" for p in result.problems)
    assert not result.executed
