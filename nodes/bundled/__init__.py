"""The bundled text-to-image model: a tiny CLIP, VAE and UNet trained on procedural shapes.

The trained diffusers folder lives in ``shapes/``; ``nodeflow train-demo`` rebuilds it
(see :mod:`nodes.bundled._train`). Only ``_``-prefixed modules live here, so the node
registry finds no nodes in this package and importing it stays free of torch.
"""

from pathlib import Path

MODEL_DIR = Path(__file__).parent / "shapes"
CLASSIFIER_PATH = Path(__file__).parent / "classifier.safetensors"
