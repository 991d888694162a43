"""The shipped img2img workflow runs as shipped: its input picture is in workflows/input, and
the prompt repaints it while the layout of the input survives (judged, not just written)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nodeflow.cli import main
from nodes.bundled import CLASSIFIER_PATH
from nodes.bundled.training.classifier import load_classifier
from nodes.bundled.training.dataset import COLOUR_NAMES, SHAPES

os.environ.setdefault("HF_HUB_OFFLINE", "1")
WORKFLOWS = Path(__file__).parents[3] / "workflows"


def _pixels(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"))).float()[None] / 255


def test_img2img_repaints_the_shipped_yellow_square_as_the_prompted_red_circle(tmp_path):
    out = tmp_path / "out"
    assert main(["run", str(WORKFLOWS / "img2img.json"), "--input-dir", str(WORKFLOWS / "input"),
                 "--output-dir", str(out), "--quiet"]) == 0
    (saved,) = sorted(out.glob("*.png"))
    judge = load_classifier(CLASSIFIER_PATH)
    before = {k: v.item() for k, v in judge.predict(_pixels(WORKFLOWS / "input" / "example.png")).items()}
    after = {k: v.item() for k, v in judge.predict(_pixels(saved)).items()}
    assert (COLOUR_NAMES[before["colour"]], SHAPES[before["shape"]], COLOUR_NAMES[before["background"]]) == (
        "yellow", "square", "black")
    # "a red circle on a blue background", negative "a green background", denoise 0.6
    assert (COLOUR_NAMES[after["colour"]], SHAPES[after["shape"]], COLOUR_NAMES[after["background"]]) == (
        "red", "circle", "blue")
    assert after["position"] == before["position"]  # what img2img keeps of its input
