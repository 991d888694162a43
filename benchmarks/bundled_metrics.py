"""Quality and speed of the bundled "shapes" model, measured on held-out data.

    .venv/bin/python -m benchmarks.bundled_metrics [--prompts 120] [--steps 20] [--nodes]
        [--grid docs/bundled-samples.png] [--denoising docs/bundled-denoising.png]

Prints: VAE reconstruction PSNR and CLIP zero-shot accuracy on held-out images; the judging
classifier's accuracy on real held-out images; prompt adherence (shape colour and background
colour by pixels, shape by the classifier) over held-out prompts at CFG 5 and CFG 1 with
DPM++ 2M; the negative-prompt effect ("a circle" with and without the negative "red");
and timings: the default workflow cold from the command line, and one 20-step image once
the model is loaded. Images come from diffusers' stock StableDiffusionPipeline over the
folder (batched, fast) or, with --nodes, from the project's own nodes.

Targets (docs/bundled-model.md): colours >= 90%, shape >= 70%, CFG 5 clearly above CFG 1,
cold run < 10 s, one image < 2 s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent

import torch  # noqa: E402

from nodes.bundled import CLASSIFIER_PATH, MODEL_DIR  # noqa: E402
from nodes.bundled.training import metrics as m  # noqa: E402
from nodes.bundled.training.classifier import load_classifier  # noqa: E402
from nodes.bundled.training.dataset import HELD_OUT_SEED, SHAPES, held_out_prompts, make_split  # noqa: E402


def _components():
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

    return (AutoencoderKL.from_pretrained(MODEL_DIR / "vae", local_files_only=True).eval(),
            CLIPTokenizer.from_pretrained(str(MODEL_DIR / "tokenizer"), local_files_only=True),
            CLIPTextModel.from_pretrained(MODEL_DIR / "text_encoder", local_files_only=True).eval(),
            CLIPVisionModelWithProjection.from_pretrained(MODEL_DIR / "image_encoder", local_files_only=True).eval())


def measure_components(held_out: dict, classifier) -> None:
    vae, tokenizer, text, vision = _components()
    print(f"VAE reconstruction PSNR, {len(held_out['images'])} held-out images: {m.vae_psnr(vae, held_out['images']):.2f} dB")
    zero_shot = m.clip_zero_shot(tokenizer, text, vision, held_out["images"], held_out)
    print("CLIP zero-shot accuracy (best of 280 captions): "
          + ", ".join(f"{k} {v:.1%}" for k, v in zero_shot.items()))
    predicted = classifier.predict(m.to_image(held_out["images"]))
    print("judge classifier on real held-out images: "
          + ", ".join(f"{k} {(predicted[k].numpy() == held_out[k]).mean():.1%}" for k in predicted))
    colour, background = m.judge_colours(m.to_image(held_out["images"]))
    print(f"pixel colour judge on real held-out images: shape colour {(colour.numpy() == held_out['colour']).mean():.1%}, "
          f"background {(background.numpy() == held_out['background']).mean():.1%}")


def measure_generation(generate, classifier, prompts: int, steps: int) -> None:
    held = held_out_prompts(prompts)
    for guidance in (5.0, 1.0):
        started = time.perf_counter()
        result = m.adherence(generate, held, classifier, guidance, steps)
        print(f"adherence at CFG {guidance:g}, {steps} steps DPM++ 2M: {result} "
              f"[{time.perf_counter() - started:.0f} s]")
    for negative in ("", "red"):
        rate = m.colour_rate(generate, "a circle", negative, "red", count=prompts, steps=steps)
        print(f'"a circle", negative {negative!r}: red shapes in {rate:.1%} of {prompts} seeds')
    shapes = m.judge(generate(["a circle"] * prompts, [""] * prompts, list(range(prompts)), 5.0, steps),
                     [m.Scene(0, 0, 1, 0, 0, 0, (0,) * 6)] * prompts, classifier)
    print(f'"a circle": drawn as a circle in {shapes.shape:.1%} of {prompts} seeds')


def measure_speed() -> None:
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "nodeflow.cli", "run", str(ROOT / "workflows" / "default.json"),
                               "-o", out, "-q"], capture_output=True, text=True, cwd=ROOT)
        cold = time.perf_counter() - started
    status = "ok" if done.returncode == 0 else f"FAILED ({done.returncode}): {done.stderr.strip()[-300:]}"
    print(f"default workflow, cold from the command line: {cold:.2f} s ({status})")
    generate = m.nodes_generator()
    generate(["a red circle on a blue background"], ["a white background"], [0], 5.0, 20)  # load + warm up
    times = []
    for seed in range(1, 6):
        started = time.perf_counter()
        generate(["a red circle on a blue background"], ["a white background"], [seed], 5.0, 20)
        times.append(time.perf_counter() - started)
    print(f"one 20-step DPM++ 2M image at CFG 5 through the nodes, model loaded: "
          f"median {sorted(times)[2]:.3f} s, best {min(times):.3f} s (torch threads: {torch.get_num_threads()})")


def save_grid(generate, path: Path) -> None:
    """Rows: one prompt each, columns: seeds; upscaled 4x with nearest neighbours."""
    from PIL import Image

    prompts = ["a red circle on a blue background", "a yellow star on a purple background",
               "a green background with a white cross", "black triangle, orange background",
               "a blue square on a yellow background", "a orange circle on a black background",  # no "an" in the vocabulary
               "a purple cross on a white background", "a white star on a green background"]
    seeds = 8
    rows = [generate([p] * seeds, [""] * seeds, [100 + k for k in range(seeds)], 5.0, 20) for p in prompts]
    cell, pad = 128, 4
    grid = Image.new("RGB", (seeds * (cell + pad) + pad, len(prompts) * (cell + pad) + pad), (255, 255, 255))
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            picture = Image.fromarray((image.numpy() * 255).round().astype("uint8")).resize((cell, cell), Image.NEAREST)
            grid.paste(picture, (pad + c * (cell + pad), pad + r * (cell + pad)))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    print(f"sample grid written to {path} (rows: {'; '.join(prompts)})")


def save_denoising(path: Path, every: int = 2) -> None:
    """The default workflow's predicted x0 at every ``every``-th step, then the final image:
    what the editor's x0 strip shows while it runs. Upscaled 4x, nearest neighbours."""
    import tempfile

    from PIL import Image

    import nodeflow.api
    from nodeflow.engine.events import Progress
    from nodeflow.editor.images import to_pil_images

    previews: list[Image.Image] = []

    def collect(event) -> None:
        if isinstance(event, Progress) and event.preview is not None and event.step % every == 0:
            previews.append(to_pil_images(event.preview)[0])

    flow = nodeflow.api.open(ROOT / "workflows" / "default.json")
    with tempfile.TemporaryDirectory() as out:
        result = flow.run(output_dir=out, on_event=collect, settings={"previews": True, "embed_workflow": False})
    final = next(v for outputs in result.outputs.values() for v in outputs.values() if isinstance(v, torch.Tensor))
    final_picture = Image.fromarray((final[0].float().clamp(0, 1).numpy() * 255).round().astype("uint8"))
    cells = [*previews, final_picture]
    cell, pad = 128, 4
    strip = Image.new("RGB", (len(cells) * (cell + pad) + pad, cell + 2 * pad), (255, 255, 255))
    for k, picture in enumerate(cells):
        strip.paste(picture.convert("RGB").resize((cell, cell), Image.NEAREST), (pad + k * (cell + pad), pad))
    strip.save(path)
    print(f"denoising strip written to {path} ({len(previews)} predicted-x0 previews, every {every} steps, then the image)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=120, help="held-out prompts (and seeds) per figure")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--nodes", action="store_true", help="generate through the project's nodes, not the pipeline")
    parser.add_argument("--grid", type=Path, default=None, help="also write a sample grid PNG here")
    parser.add_argument("--denoising", type=Path, default=None,
                        help="also write the default workflow's predicted-x0 strip PNG here")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: components,generation,speed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    skip = set(filter(None, args.skip.split(",")))
    classifier = load_classifier(CLASSIFIER_PATH)
    if "components" not in skip:
        measure_components(make_split(1000, HELD_OUT_SEED), classifier)
    generate = m.nodes_generator() if args.nodes else m.pipeline_generator(MODEL_DIR)
    if "generation" not in skip:
        measure_generation(generate, classifier, args.prompts, args.steps)
    if args.grid:
        save_grid(generate, args.grid)
    if args.denoising:
        save_denoising(args.denoising)
    if "speed" not in skip:
        measure_speed()
    print(f"shapes: {', '.join(SHAPES)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
