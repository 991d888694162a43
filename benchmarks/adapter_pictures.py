"""The picture grids of docs/bundled-model.md's "Adapters" section: each adapter with and
without it, made through the project's own nodes (the generators of
nodes/bundled/training/adapter_metrics.py, which the benchmark and tests measure with).

    .venv/bin/python -m benchmarks.adapter_pictures      # writes docs/adapters/*.png

Held-out prompts, masks and images only (none was seen in training); seeds fixed, so a
rerun on the same weights draws the same pictures.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from nodes.bundled.training import adapter_metrics as am  # noqa: E402
from nodes.bundled.training.dataset import HELD_OUT_SEED, held_out_prompts, make_split, split_scenes  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PICTURES = ROOT / "docs" / "adapters"
ROWS = 4
CELL = 96


def _pictures(images: torch.Tensor) -> list[np.ndarray]:
    return [image.numpy() for image in images.float().clamp(0, 1)]


def _grey(masks) -> list[np.ndarray]:
    return [np.repeat(np.asarray(m, np.float32)[..., None] / 255, 3, -1) for m in masks]


def _save(name: str, columns: list[list[np.ndarray]], column_labels: list[str], row_labels: list[str], title: str) -> None:
    from nodes.diffusion.explain.draw import grid, to_pil

    rows = [list(row) for row in zip(*columns)]
    picture = grid(rows, row_labels=row_labels, column_labels=column_labels, cell=CELL, title=title)
    PICTURES.mkdir(parents=True, exist_ok=True)
    to_pil(picture).save(PICTURES / f"{name}.png")
    print(f"wrote docs/adapters/{name}.png")


def lora() -> None:
    prompts = am.heart_prompts(ROWS)
    generate = am.LoRAGenerator()
    strengths = (0.0, 0.5, 1.0)
    columns = [_pictures(generate([p for p, _ in prompts], s)) for s in strengths]
    _save("lora", columns, [f"strength {s:g}" for s in strengths], [p for p, _ in prompts],
          "LoRA shapes-heart: the same prompt and seed at three strengths")


def controlnet() -> None:
    cases = am.control_cases(ROWS)
    generate = am.ControlNetGenerator()
    columns = [_grey([c[2] for c in cases]), _pictures(generate(cases, strength=0.0)), _pictures(generate(cases))]
    _save("controlnet", columns, ["the mask (hint)", "without (strength 0)", "with ControlNet"], [c[0] for c in cases],
          "ControlNet shapes-mask: the prompt says what, the mask says where")


def upscaler() -> None:
    from nodes.bundled.training.adapters import _large

    small = make_split(ROWS, HELD_OUT_SEED)["images"]
    truth = torch.from_numpy(_large(split_scenes(ROWS, HELD_OUT_SEED))).float() / 255
    model, bicubic = am.UpscaleGenerator()(small)
    columns = [_pictures(torch.from_numpy(small).float() / 255), _pictures(bicubic), _pictures(model), _pictures(truth)]
    _save("upscaler", columns, ["32x32 input", "bicubic 64", "2x-shapes-compact", "64x64 render"],
          [f"held-out {i + 1}" for i in range(ROWS)], "Upscaler 2x: against bicubic and the scene rendered at 64x64")


def inpaint() -> None:
    cases = am.inpaint_cases(ROWS)
    pasted, decoded = am.InpaintGenerator()(cases)
    columns = [_pictures(torch.from_numpy(np.stack([c[0] for c in cases])).float() / 255), _grey([c[1] for c in cases]),
               _pictures(decoded), _pictures(pasted)]
    _save("inpaint", columns, ["source", "mask", "decoded", "pasted (result)"], [c[2] for c in cases],
          "Inpainting: repaint inside the mask, the source's own pixels outside")


def hires_fix() -> None:
    prompts = held_out_prompts(ROWS)
    small, large = am.HiresFixGenerator()([p for p, _ in prompts])
    _, base = am.HiresFixGenerator(lora_name=None)([p for p, _ in prompts])
    _save("hires-fix", [_pictures(small), _pictures(base), _pictures(large)],
          ["32x32 first pass", "64x64, base UNet", "64x64, hi-res LoRA"], [p for p, _ in prompts],
          f"Hires fix: upscaled with the model, resampled at denoise {am.HIRES_DENOISE}")


GRIDS = {"lora": lora, "controlnet": controlnet, "upscaler": upscaler, "inpaint": inpaint, "hires-fix": hires_fix}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("grids", nargs="*", help=f"which of {', '.join(GRIDS)} (default: all)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    unknown = [name for name in args.grids if name not in GRIDS]
    if unknown:
        parser.error(f"unknown grid(s) {unknown}; grids are {list(GRIDS)}")
    torch.set_num_threads(args.threads)
    for name in args.grids or GRIDS:
        started = time.perf_counter()
        GRIDS[name]()
        print(f"  {name}: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
