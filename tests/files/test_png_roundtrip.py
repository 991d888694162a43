"""A saved image carries its workflow: reopening the PNG gives back the same workflow,
and running it again gives the same image."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import nodeflow.api as api  # noqa: E402
from nodeflow import RunSettings  # noqa: E402
from nodeflow.files.pngmeta import PARAMETERS_KEY, WORKFLOW_KEY, read_text_chunks  # noqa: E402
from nodeflow.model.registry import default_registry  # noqa: E402
from nodeflow.files.open import load_workflow  # noqa: E402
from tests.support.tiny_models import shared_tiny_sd  # noqa: E402
from tests.support import ROOT



@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    return shared_tiny_sd(tmp_path_factory).parent  # holds the model as "tiny-sd"


@pytest.fixture
def workflow_file(tmp_path):
    """The shipped txt2img workflow on the tiny model, with positions to keep."""
    flow = api.open(ROOT / "workflows" / "txt2img.json")
    flow.set("1.checkpoint", "tiny-sd").set("7.steps", 2).set("Prompt.text", "a red circle, (sharp:1.2)")
    flow.graph.move("7", (812.5, -40.0))
    path = tmp_path / "txt2img.json"
    flow.save(path)
    return path


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "nodeflow.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    return done


def _pixels(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_run_save_reopen_and_rerun_the_png(workflow_file, models_dir, tmp_path):
    registry = default_registry()
    original = load_workflow(workflow_file, registry).to_dict()

    _cli("run", str(workflow_file), "--models", str(models_dir), "-o", "first", "-q", cwd=tmp_path)
    (first,) = (tmp_path / "first").glob("*.png")
    chunks = read_text_chunks(first.read_bytes())
    assert json.loads(chunks[WORKFLOW_KEY]) == original
    assert chunks[PARAMETERS_KEY].splitlines() == [
        "a red circle, (sharp:1.2)",
        "Negative prompt: a black background",
        "Steps: 2, Sampler: dpmpp_2m, Schedule: normal, Seed: 42, CFG scale: 7.0, Model: tiny-sd",
    ]

    reopened = load_workflow(first, registry)  # what `run IMAGE.png` and the editor's Open do
    assert reopened.to_dict() == original  # values, links, positions
    assert reopened.graph.nodes["7"].pos == (812.5, -40.0)

    _cli("run", str(first), "--models", str(models_dir), "-o", "second", "-q", cwd=tmp_path)
    (second,) = (tmp_path / "second").glob("*.png")
    assert np.array_equal(_pixels(first), _pixels(second))
    assert read_text_chunks(second.read_bytes())[WORKFLOW_KEY] == chunks[WORKFLOW_KEY]


def test_embedding_can_be_turned_off(workflow_file, models_dir, tmp_path):
    flow = api.open(workflow_file, device="cpu")
    document = load_workflow(workflow_file, default_registry()).to_dict()
    settings = RunSettings(model_folders={"checkpoints": [models_dir]}, workflow=document)
    flow.run(output_dir=tmp_path / "on", settings=settings)
    flow.run(output_dir=tmp_path / "host_off", settings=settings.replace(embed_workflow=False))
    flow.set("9.embed_workflow", False).run(output_dir=tmp_path / "node_off", settings=settings)

    (on,) = (tmp_path / "on").glob("*.png")
    assert WORKFLOW_KEY in read_text_chunks(on.read_bytes())
    for folder in ("host_off", "node_off"):
        (off,) = (tmp_path / folder).glob("*.png")
        assert read_text_chunks(off.read_bytes()) == {}
        assert np.array_equal(_pixels(off), _pixels(on))


def test_a_png_without_a_workflow_says_so(tmp_path):
    from PIL import Image

    from nodeflow.files.workflow import WorkflowError

    path = tmp_path / "photo.png"
    Image.new("RGB", (4, 4)).save(path)
    with pytest.raises(WorkflowError, match="the image carries no workflow"):
        load_workflow(path, default_registry())


def test_images_with_a_large_workflow_still_open_in_pillow(tmp_path):
    """Pillow refuses compressed text over 1 MB; such workflows are stored uncompressed."""
    from PIL import Image

    from nodeflow.files.pngmeta import png_info

    large = json.dumps({"text": "x" * 3_000_000})
    path = tmp_path / "large.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=png_info({WORKFLOW_KEY: large, PARAMETERS_KEY: "a\nb"}))
    with Image.open(path) as image:
        assert image.convert("RGB").size == (8, 8)
    assert read_text_chunks(path.read_bytes()) == {WORKFLOW_KEY: large, PARAMETERS_KEY: "a\nb"}
