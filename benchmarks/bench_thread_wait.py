"""How OpenMP threads wait between torch's parallel regions, side by side (issue 14).

    .venv/bin/python -m benchmarks.bench_thread_wait [--model sd15|bundled] [--rounds 3] [--calls 4]
                                                      [--busy] [VARIANT ...]

The CLI sets ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep at once): a spinning thread collapses
when anything else holds a core. diffusers leaves OpenMP's default (libgomp: spin about
300,000 times, then sleep). This times one UNet call with classifier-free guidance (batch
2; ``sd15``: an SD 1.5-size UNet from the shipped config with random weights, 32x32
latents; ``bundled``: the shapes UNet, 8x8) in a fresh process per variant, the variants
alternating, ``--calls`` calls per process after a warm-up call, ``--rounds`` rounds, and
prints each variant's median with its ratio to ``passive``. ``--busy`` runs a busy loop on
one core for the whole benchmark (another program holding a core). Variants: passive,
default (no setting), spin:N (``GOMP_SPINCOUNT=N`` under the default policy), active.
Figures in docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.orders import balance_note, order_of_round

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time
import nodes.diffusion.impl  # the torchvision shim, before diffusers
import torch
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
which, calls = sys.argv[1], int(sys.argv[2])
if which == "sd15":
    config = json.load(open("nodes/diffusion/configs/sd1/unet/config.json")); side, dim = 32, 768
else:
    config = json.load(open("nodes/bundled/models/shapes/unet/config.json")); side, dim = 8, config["cross_attention_dim"]
torch.manual_seed(0)
unet = UNet2DConditionModel.from_config({k: v for k, v in config.items() if not k.startswith("_")}).eval()
g = torch.Generator().manual_seed(1)
x, text, t = torch.randn(2, 4, side, side, generator=g), torch.randn(2, 77, dim, generator=g), torch.tensor(500.0)
times = []
with torch.inference_mode():
    unet(x, t, encoder_hidden_states=text)
    for _ in range(calls):
        start = time.perf_counter()
        unet(x, t, encoder_hidden_states=text)
        times.append(time.perf_counter() - start)
print(json.dumps(times))
"""

BUSY = "while True: pass"


def environment(variant: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env["PYTHONPATH"] = str(ROOT)
    if variant == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    elif variant == "active":
        env["OMP_WAIT_POLICY"] = "ACTIVE"
    elif variant.startswith("spin:"):
        env["GOMP_SPINCOUNT"] = variant.split(":", 1)[1]
    elif variant != "default":
        raise SystemExit(f"unknown variant {variant!r}")
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="*", default=["passive", "default", "spin:10000", "spin:50000"])
    parser.add_argument("--model", choices=("sd15", "bundled"), default="sd15")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--busy", action="store_true", help="hold one core with a busy loop meanwhile")
    args = parser.parse_args()
    variants = args.variants if "passive" in args.variants else ["passive", *args.variants]
    busy = subprocess.Popen([sys.executable, "-c", BUSY]) if args.busy else None
    times: dict[str, list[float]] = {v: [] for v in variants}
    try:
        print(f"model {args.model}, {args.rounds} rounds x {args.calls} calls, busy core: {args.busy}, "
              f"load average at start: {os.getloadavg()[0]:.2f}", flush=True)
        if balance_note(variants, args.rounds):
            print(balance_note(variants, args.rounds), flush=True)
        for round_index in range(args.rounds):
            for variant in order_of_round(variants, round_index):
                done = subprocess.run([sys.executable, "-c", CHILD, args.model, str(args.calls)], cwd=ROOT,
                                      env=environment(variant), capture_output=True, text=True, check=True)
                measured = json.loads(done.stdout.strip().splitlines()[-1])
                times[variant] += measured
                print(f"round {round_index + 1} {variant:>12}: " + ", ".join(f"{s:.3f}" for s in measured)
                      + f" s (load {os.getloadavg()[0]:.2f})", flush=True)
    finally:
        if busy is not None:
            busy.kill()
    base = statistics.median(times["passive"])
    print("\n| variant | median per call | ratio to passive |\n|---|---|---|")
    for variant in variants:
        median = statistics.median(times[variant])
        print(f"| {variant} | {median:.3f} s | {median / base:.3f} |")
    print(f"\nload average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
