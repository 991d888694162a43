"""Model loading and prompt encoding cost, on the tiny test models.

    .venv/bin/python -m benchmarks.bench_loading [--repeat 5]

Prints, in ms (fastest of ``--repeat``; the machine is shared):

- importing diffusers + transformers (once per process, paid by the first load);
- building the tiny SD 1.x model (the tests' fixture);
- loading it with the Checkpoint node from a diffusers folder and from a single
  .safetensors file (original layout), and the tiny SDXL model the same two ways;
- encoding a short prompt and a 200-token prompt with the TextEncoder node.

Loading builds models on the meta device and adopts the file's tensors, so its cost
should be reading the file plus key conversion, not random initialisation.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent


def fastest(repeat: int, action) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - start)
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    start = time.perf_counter()
    import diffusers  # noqa: F401
    import transformers  # noqa: F401
    from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: F401  (lazy modules)
    from transformers import CLIPTextModel  # noqa: F401

    print(f"import diffusers+transformers: {(time.perf_counter() - start) * 1000:8.0f} ms")

    from nodeflow import RunContext
    from nodes.diffusion.loaders import Checkpoint
    from nodes.diffusion.text import TextEncoder
    from tests.support.tiny_models import build_tiny_sd, build_tiny_sdxl, save_single_file

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        build_tiny_sd(folder / "tiny")
        print(f"build tiny SD 1.x model:       {(time.perf_counter() - start) * 1000:8.0f} ms")
        save_single_file(folder / "tiny", folder / "tiny.safetensors")
        build_tiny_sdxl(folder / "tinyxl")
        save_single_file(folder / "tinyxl", folder / "tinyxl.safetensors")

        ctx = RunContext(settings={"model_folders": {"checkpoints": [str(folder)]}})

        def load(value: str):
            return Checkpoint().run(ctx, checkpoint=value, dtype="fp32", prediction="auto")

        for value in ("tiny", "tiny.safetensors", "tinyxl", "tinyxl.safetensors"):
            print(f"load {value:<26}{fastest(args.repeat, lambda: load(value)):8.1f} ms")

        clip = load("tiny.safetensors")["clip"]
        long_prompt = " ".join(["red", "square", "blue", "circle"] * 50)
        for name, text in (("encode short prompt", "a (red:1.2) square"), ("encode 200-token prompt", long_prompt)):
            ms = fastest(args.repeat, lambda: TextEncoder().run(ctx, clip=clip, text=text, clip_skip=1))
            print(f"{name:<31}{ms:8.1f} ms")


if __name__ == "__main__":
    main()
