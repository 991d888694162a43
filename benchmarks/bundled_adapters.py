"""The bundled model's adapters measured through the project's nodes (docs/bundled-model.md,
"Adapters"): the LoRA's heart rate at strengths 1 / 0.5 / 0 and the base prompts with it on,
the ControlNet's IoU with its mask (and at strength 0), inpainting inside/outside, the
upscaler's PSNR against bicubic, and the hires fix with and without its LoRA.

    .venv/bin/python -m benchmarks.bundled_adapters [--count 40] [--threads 1] [--parts controlnet ...]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from nodes.bundled import ADAPTER_JUDGE_PATH, CLASSIFIER_PATH  # noqa: E402
from nodes.bundled.training import adapter_metrics as am  # noqa: E402
from nodes.bundled.training.classifier import load_classifier  # noqa: E402
from nodes.bundled.training.dataset import HELD_OUT_SEED, held_out_prompts, make_split, split_scenes  # noqa: E402


PARTS = ("lora", "controlnet", "inpaint", "upscaler", "hires")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=40, help="held-out cases per figure")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="which figures (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    judge, heart_judge = load_classifier(CLASSIFIER_PATH), load_classifier(ADAPTER_JUDGE_PATH)

    if "lora" in args.parts:
        lora_figures(args.count, heart_judge)
    if "controlnet" in args.parts:
        controlnet_figures(args.count, judge)
    if "inpaint" in args.parts:
        inpaint_figures(args.count, judge)
    if "upscaler" in args.parts:
        upscaler_figures(args.count)
    if "hires" in args.parts:
        hires_figures(args.count, judge)


def lora_figures(count: int, heart_judge) -> None:
    lora = am.LoRAGenerator()
    hearts = [p for p, _ in am.heart_prompts(count)]
    for strength in (1.0, 0.5, 0.0):
        print(f"LoRA strength {strength}: heart in {am.shape_rate(lora(hearts, strength), heart_judge, am.HEART):.1%} "
              f"of {count} held-out heart prompts")
    base = held_out_prompts(count)
    print(f"LoRA strength 1: base prompts all three right {am.base_adherence(lora([p for p, _ in base], 1.0), [s for _, s in base], heart_judge):.1%}")


def controlnet_figures(count: int, judge) -> None:
    control = am.ControlNetGenerator()
    cases = am.control_cases(count)
    for strength in (1.0, 0.0):
        images = control(cases, strength=strength)
        overlap = am.iou(images, [c[2] for c in cases])
        right = am.judged_right(images, [c[1] for c in cases], judge).float().mean()
        print(f"ControlNet strength {strength}, {count} pairs: IoU >= 0.7 in {(overlap >= 0.7).float().mean():.1%} "
              f"(median {overlap.median():.2f}), judged right {right:.1%}")


def inpaint_figures(count: int, judge) -> None:
    cases = am.inpaint_cases(count)
    pasted, decoded = am.InpaintGenerator()(cases)
    outside, round_trip = am.outside_psnr(pasted, cases), am.outside_psnr(decoded, cases)
    print(f"inpainting: inside judged right {am.judged_right(pasted, [c[3] for c in cases], judge).float().mean():.1%}, "
          f"outside PSNR after the paste min {outside.min():.1f} dB (120 = identical), "
          f"the decoder's alone median {round_trip.median():.1f} dB")


def upscaler_figures(count: int) -> None:
    from nodes.bundled.training.adapters import _large

    count = max(count, 200)
    small = make_split(count, HELD_OUT_SEED)["images"]
    large = _large(split_scenes(count, HELD_OUT_SEED))
    from nodes.bundled.training.metrics import psnr

    truth = torch.from_numpy(large).float() / 255
    model, bicubic = am.UpscaleGenerator()(small)  # through Load Upscale Model + Upscale Image (using Model)
    print(f"upscaler 2x, {count} held-out images: {psnr(truth, model):.2f} dB, bicubic {psnr(truth, bicubic):.2f} dB")


def hires_figures(count: int, judge) -> None:
    prompts = held_out_prompts(count)
    scenes = [s for _, s in prompts]
    for lora in (am.HIRES_LORA_NAME, None):
        first, hires = am.HiresFixGenerator(lora_name=lora)([p for p, _ in prompts])
        print(f"hires fix (denoise {am.HIRES_DENOISE}, {'with the hi-res LoRA' if lora else 'base UNet'}): "
              f"judged right at 32x32 {am.judged_right(first, scenes, judge).float().mean():.1%}, at 64x64 "
              f"(area-downscaled for the judge) {am.judged_right(am.to_judge_size(hires), scenes, judge).float().mean():.1%}")


if __name__ == "__main__":
    main()
