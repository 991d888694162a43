"""The UNet nodeflow loads against the one diffusers' pipeline loads, in one process.

    .venv/bin/python -m benchmarks.bench_unet_parity [--rounds 4]

``bench_vs_peers`` finds nodeflow's sampling slower per step than diffusers' pipeline.
Both run diffusers' ``UNet2DConditionModel``; this tells whether the model nodeflow
builds (on the meta device from the shipped config, the single file's tensors converted
and assigned) is itself slower than ``UNet2DConditionModel.from_pretrained`` of the same
weights as a diffusers folder, or whether the difference lies in the process around it.
Both models sit in one process, under the CLI's thread wait policy, and make the same
classifier-free-guidance call (batch 2, 32x32 latents, 77 tokens) in alternating order,
under ``torch.inference_mode`` (nodeflow's sampling loop) and ``torch.no_grad`` (the
pipeline's). Uses the SD 1.5-size checkpoint that ``bench_vs_peers`` builds. Prints the
median seconds per call, the ratio to diffusers' model and whether the weights are equal.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI sets it, before torch loads
ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import torch

    from benchmarks.bench_vs_peers import build_checkpoint
    from nodes.diffusion.impl.loading import load_checkpoint  # the pack installs the torchvision shim

    from diffusers import UNet2DConditionModel

    ckpt, folder = build_checkpoint()
    models = {
        "nodeflow": load_checkpoint(ckpt, torch.float32, "cpu").unet,
        "diffusers": UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=torch.float32).eval(),
    }
    same = all(torch.equal(a, b) for a, b in zip(models["nodeflow"].state_dict().values(),
                                                  models["diffusers"].state_dict().values()))
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 32, 32, generator=generator)
    embeds = torch.randn(2, 77, 768, generator=generator)
    t = torch.tensor(500.0)
    modes = {"inference_mode": torch.inference_mode, "no_grad": torch.no_grad}

    def call(name: str, mode: str) -> float:
        with modes[mode]():
            start = time.perf_counter()
            models[name](x, t, encoder_hidden_states=embeds, return_dict=False)
            return time.perf_counter() - start

    for name in models:  # a first call of each warms up (oneDNN's first-call set-up) and is not counted
        call(name, "inference_mode")
    keys = [(name, mode) for mode in modes for name in models]
    times: dict[tuple[str, str], list[float]] = {key: [] for key in keys}
    for round_ in range(args.rounds):
        for key in keys if round_ % 2 == 0 else keys[::-1]:
            times[key].append(call(*key))
    print(f"{torch.get_num_threads()} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
          f"{args.rounds} rounds; weights equal: {same}; load average {os.getloadavg()[0]:.2f}\n")
    print("| model | mode | per call (median) | / diffusers, same mode | calls (s) |")
    print("|---|---|---|---|---|")
    for name, mode in keys:
        median = statistics.median(times[(name, mode)])
        ratio = median / statistics.median(times[("diffusers", mode)])
        runs = ", ".join(f"{s:.3f}" for s in times[(name, mode)])
        print(f"| {name} | {mode} | {median:.3f} s | {ratio:.3f} | {runs} |")


if __name__ == "__main__":
    main()
