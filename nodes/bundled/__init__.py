"""The bundled text-to-image model: a tiny CLIP, VAE and UNet trained on procedural shapes.

A pack without nodes: it ships the trained diffusers folder ``models/shapes/`` as a checkpoint
(found by name, "shapes", after the user's own model folders) and the ``nodeflow
train-demo`` command that rebuilds it (see :mod:`nodes.bundled.training.trainer`).
Importing it stays free of torch.
"""

from pathlib import Path
from typing import Sequence

from nodeflow import Command, Pack

MODELS_DIR = Path(__file__).resolve().parent / "models"  # a checkpoints folder: models only
MODEL_DIR = MODELS_DIR / "shapes"
CLASSIFIER_PATH = Path(__file__).resolve().parent / "training" / "classifier.safetensors"  # the judge
# The judge that also knows the LoRA's new shape (the heart); not part of any model.
ADAPTER_JUDGE_PATH = Path(__file__).resolve().parent / "training" / "judge_heart.safetensors"
# The model's adapters, in the folders of their kinds, found like a user's own files.
ADAPTERS_DIR = Path(__file__).resolve().parent / "adapters"
ADAPTER_FOLDERS = {"loras": ADAPTERS_DIR / "loras", "controlnet": ADAPTERS_DIR / "controlnet",
                   "upscale_models": ADAPTERS_DIR / "upscale_models"}


def _train_demo(argv: Sequence[str]) -> int:
    from nodes.bundled.training.trainer import main

    return main(list(argv))


PACK = Pack(
    "bundled",
    description="the tiny 'shapes' model that draws coloured shapes, and its trainer",
    commands=(Command("train-demo", "retrain the bundled demo model from scratch", _train_demo),),
    model_folders={"checkpoints": (MODELS_DIR,), **{kind: (folder,) for kind, folder in ADAPTER_FOLDERS.items()}},
)
