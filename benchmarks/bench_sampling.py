"""Sampling speed: nodeflow's Sampler node vs diffusers' StableDiffusionPipeline.

Both sides use the same UNet object, scheduler config, sampler, steps, guidance and
seed, and are timed alternately in one process (median of 5 each). Only sampling is
timed: the pipeline gets precomputed prompt embeddings and output_type="latent", and
the node side runs Sampler.run with a prebuilt CFG guider (previews included, as in a
real run). A ratio nodeflow / diffusers <= 1.0 is the target.

    .venv/bin/python -m benchmarks.bench_sampling [--repeats 5] [--steps 10] [--mid-steps 6] [--sampler dpmpp_2m]

Models: the tiny SD-1.x test model (16x16 latents), and a mid-size random-weight UNet
(block channels 128/256/512, two cross-attention levels, 64x64 latents, 768-wide
cross-attention) built in code.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent

import torch  # noqa: E402

from nodeflow import RunContext  # noqa: E402
from nodes.diffusion.impl.samplers import SAMPLERS, make_scheduler  # noqa: E402
from nodes.diffusion.types import Conditioning, DiffusionModel, Latent, ModelFamily, NoiseSource  # noqa: E402
from nodes.diffusion.sampling import CFG, Sampler  # noqa: E402

SEED = 7
SCALE = 7.5


def tiny_pipeline(folder: Path):
    from diffusers import StableDiffusionPipeline
    from tests.support.tiny_models import build_tiny_sd

    return StableDiffusionPipeline.from_pretrained(build_tiny_sd(folder / "tiny"), local_files_only=True, safety_checker=None)


def mid_pipeline(tiny):
    """The tiny pipeline's parts around a mid-size random UNet (VAE and text encoder are not timed)."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64,
        block_out_channels=(128, 256, 512),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=768,
        attention_head_dim=8,
    ).eval()
    parts = dict(tiny.components, unet=unet)
    return StableDiffusionPipeline(**parts, requires_safety_checker=False)


def bench(name: str, pipe, embeds: torch.Tensor, latent_side: int, sampler: str, steps: int, repeats: int) -> tuple[float, float]:
    pipe.set_progress_bar_config(disable=True)
    config = dict(pipe.scheduler.config)
    factor = pipe.vae_scale_factor
    family = ModelFamily("sd1", 4, factor)
    model = DiffusionModel(pipe.unet, family, config, torch.float32)
    negative = torch.zeros_like(embeds)
    guider = CFG().run(RunContext(), model, Conditioning(embeds), Conditioning(negative), SCALE, 0.0)
    latent = Latent(torch.zeros(1, 4, latent_side, latent_side), family)
    ctx = RunContext(on_progress=lambda step, total, preview: None)

    def ours() -> torch.Tensor:
        return Sampler().run(ctx, NoiseSource(SEED), guider, latent, sampler, "normal", steps, 1.0, 0.0).samples

    def theirs() -> torch.Tensor:
        pipe.scheduler = make_scheduler(sampler, "normal", config)
        return pipe(
            prompt_embeds=embeds, negative_prompt_embeds=negative, num_inference_steps=steps, guidance_scale=SCALE,
            generator=torch.Generator("cpu").manual_seed(SEED), height=latent_side * factor,
            width=latent_side * factor, output_type="latent",
        ).images

    same = torch.equal(ours(), theirs())  # also a warm-up of both
    # Wall time, and CPU time of this process: on a shared machine the second is far
    # less disturbed by other processes competing for the cores. Time spent outside the
    # UNet is each side's own overhead (scheduler, guidance, previews, copies).
    wall: dict[str, list[float]] = {"nodeflow": [], "diffusers": []}
    cpu: dict[str, list[float]] = {"nodeflow": [], "diffusers": []}
    outside: dict[str, list[float]] = {"nodeflow": [], "diffusers": []}
    in_unet = _UNetClock(pipe.unet)
    for repeat in range(repeats):
        order = (("nodeflow", ours), ("diffusers", theirs))
        for label, run in order if repeat % 2 == 0 else reversed(order):
            in_unet.total = 0.0
            started, started_cpu = time.perf_counter(), time.process_time()
            run()
            wall[label].append(time.perf_counter() - started)
            cpu[label].append(time.process_time() - started_cpu)
            outside[label].append(wall[label][-1] - in_unet.total)
    in_unet.remove()
    ratios = []
    for kind, times in (("wall", wall), ("cpu", cpu)):
        ours_s, theirs_s = statistics.median(times["nodeflow"]), statistics.median(times["diffusers"])
        ratios.append(ours_s / theirs_s)
        print(
            f"{name:<9} {sampler:<9} steps={steps:<3} latent={latent_side}x{latent_side} {kind:>4}: "
            f"nodeflow {ours_s:7.3f} s  diffusers {theirs_s:7.3f} s  ratio {ours_s / theirs_s:.3f}",
            flush=True,
        )
    per_step = {label: 1000 * statistics.median(values) / steps for label, values in outside.items()}
    print(
        f"{name:<9} outside the UNet per step: nodeflow {per_step['nodeflow']:.2f} ms, "
        f"diffusers {per_step['diffusers']:.2f} ms; identical latents: {same}",
        flush=True,
    )
    return ratios[0], ratios[1]


class _UNetClock:
    """Adds up the wall time spent inside ``unet.forward``."""

    def __init__(self, unet: torch.nn.Module):
        self.total = 0.0
        self._started = 0.0
        self._handles = [
            unet.register_forward_pre_hook(lambda module, args: self._start()),
            unet.register_forward_hook(lambda module, args, output: self._stop()),
        ]

    def _start(self) -> None:
        self._started = time.perf_counter()

    def _stop(self) -> None:
        self.total += time.perf_counter() - self._started

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="steps on the tiny model")
    parser.add_argument("--mid-steps", type=int, default=6, help="steps on the mid-size UNet")
    parser.add_argument("--sampler", default="dpmpp_2m", choices=sorted(SAMPLERS))
    parser.add_argument("--skip-mid", action="store_true")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.repeats}")
    with tempfile.TemporaryDirectory() as folder, torch.inference_mode():
        tiny = tiny_pipeline(Path(folder))
        embeds = torch.randn(1, 77, tiny.unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(1))
        ratios = [bench("tiny", tiny, embeds, 16, args.sampler, args.steps, args.repeats)]
        if not args.skip_mid:
            mid = mid_pipeline(tiny)
            embeds = torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(1))
            ratios.append(bench("mid-size", mid, embeds, 64, args.sampler, args.mid_steps, args.repeats))
    print("ratios nodeflow / diffusers (wall, cpu): " + "; ".join(f"{w:.3f}, {c:.3f}" for w, c in ratios))


if __name__ == "__main__":
    main()
