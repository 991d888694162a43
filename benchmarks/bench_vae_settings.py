"""VAE decode/encode settings torch offers and diffusers does not turn on, side by side.

    .venv/bin/python -m benchmarks.bench_vae_settings [--rounds 4] [--size 256] [VARIANT ...]

An SD 1.x-size AutoencoderKL from the shipped config (random, seeded weights, fp32, as
nodeflow runs it on the CPU) decodes one latent of ``--size`` pixels per side and encodes
the image back; the baseline and each VARIANT alternate, ``--rounds`` times after one
warm-up round. Printed per variant and stage: the median, its ratio to the baseline's, and
the largest difference of its output from the baseline's (0: bit-identical).

Variants: ``inplace_silu`` (the VAE's SiLU modules write into their input, which is always
a fresh normalisation output there), ``channels_last`` (model and input), ``no_mkldnn``
(oneDNN off), ``math_sdpa`` (the attention block's SDPA on the math kernel).
Figures in docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from pathlib import Path

import nodes.diffusion.impl  # noqa: F401  (the torchvision shim, before diffusers)

import torch  # noqa: E402
from diffusers import AutoencoderKL  # noqa: E402

CONFIG = Path(__file__).resolve().parent.parent / "nodes/diffusion/configs/sd1/vae/config.json"
VARIANTS = ("inplace_silu", "channels_last", "no_mkldnn", "math_sdpa")


def build_vae() -> AutoencoderKL:
    config = {k: v for k, v in json.loads(CONFIG.read_text()).items() if not k.startswith("_")}
    torch.manual_seed(0)
    return AutoencoderKL.from_config(config).eval()


@contextlib.contextmanager
def variant(vae: AutoencoderKL, name: str):
    """Applies one setting for the duration of the block, then restores the model."""
    if name == "inplace_silu":
        silus = [m for m in vae.modules() if isinstance(m, torch.nn.SiLU)]
        for module in silus:
            module.inplace = True
        try:
            yield torch.contiguous_format
        finally:
            for module in silus:
                module.inplace = False
    elif name == "channels_last":
        vae.to(memory_format=torch.channels_last)
        try:
            yield torch.channels_last
        finally:
            vae.to(memory_format=torch.contiguous_format)
    elif name == "no_mkldnn":
        with torch.backends.mkldnn.flags(enabled=False):
            yield torch.contiguous_format
    elif name == "math_sdpa":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(SDPBackend.MATH):
            yield torch.contiguous_format
    else:
        yield torch.contiguous_format


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("variants", nargs="*", choices=VARIANTS, default=list(VARIANTS))
    args = parser.parse_args()
    vae = build_vae()
    names = ["baseline", *args.variants]
    latent = torch.randn(1, 4, args.size // 8, args.size // 8, generator=torch.Generator().manual_seed(1))
    times = {(n, stage): [] for n in names for stage in ("decode", "encode")}
    outputs: dict[tuple[str, str], torch.Tensor] = {}
    for round_ in range(args.rounds + 1):
        for name in names:
            with variant(vae, name) as memory_format, torch.inference_mode():
                z = latent.to(memory_format=memory_format)
                start = time.perf_counter()
                image = vae.decode(z, return_dict=False)[0]
                decoded = time.perf_counter()
                mean = vae.encode(image.to(memory_format=memory_format)).latent_dist.mode()
                encoded = time.perf_counter()
            if round_:
                times[name, "decode"].append(decoded - start)
                times[name, "encode"].append(encoded - decoded)
            outputs[name, "decode"], outputs[name, "encode"] = image.contiguous(), mean.contiguous()
    print(f"SD 1.x VAE, {args.size}x{args.size}, {args.rounds} rounds, {torch.get_num_threads()} threads")
    print("| variant | decode | ratio | encode | ratio | max|diff| decode / encode |")
    print("|---|---|---|---|---|---|")
    base = {stage: statistics.median(times["baseline", stage]) for stage in ("decode", "encode")}
    for name in names:
        dec, enc = (statistics.median(times[name, s]) for s in ("decode", "encode"))
        diffs = [(outputs[name, s] - outputs["baseline", s]).abs().max().item() for s in ("decode", "encode")]
        print(f"| {name} | {dec:.3f} s | {dec / base['decode']:.3f} | {enc:.3f} s | {enc / base['encode']:.3f} "
              f"| {diffs[0]:.1e} / {diffs[1]:.1e} |")


if __name__ == "__main__":
    main()
