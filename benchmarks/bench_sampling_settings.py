"""Sampling settings torch and diffusers offer and diffusers does not turn on, side by side.

    .venv/bin/python -m benchmarks.bench_sampling_settings MODEL ROUNDS PER_ROUND [VARIANT ...]

MODEL is ``bundled`` (the shapes UNet, 8x8 latents) or ``sd15`` (an SD 1.5-size UNet from
the shipped config with random weights, 32x32 latents = 256x256 images). One UNet call with
classifier-free guidance (batch of 2) is timed PER_ROUND times for the baseline and each
VARIANT in turn, ROUNDS times (a first round warms up and is not counted). Printed per
variant: the median, its ratio to the baseline's, and the largest difference of its output
from the baseline's (0 means bit-identical). Variants: channels_last, fused_qkv, no_mkldnn,
math_sdpa, threads1. Figures in docs/performance.md.
"""
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.chdir(Path(__file__).resolve().parent.parent)
sys.path.insert(0, os.getcwd())
import nodes.diffusion.impl  # noqa: E402,F401  (the torchvision shim, before diffusers)
import torch  # noqa: E402
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel  # noqa: E402
if len(sys.argv) < 4:
    raise SystemExit(__doc__)
which, rounds, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
variants = ["baseline"] + sys.argv[4:]
if which == "sd15":
    cfg = json.load(open("nodes/diffusion/configs/sd1/unet/config.json")); lat, dim = 32, 768
else:
    cfg = json.load(open("nodes/bundled/models/shapes/unet/config.json")); lat, dim = 8, cfg["cross_attention_dim"]
torch.manual_seed(0)
unet = UNet2DConditionModel.from_config({k: v for k, v in cfg.items() if not k.startswith("_")}).eval()
g = torch.Generator().manual_seed(1)
x = torch.randn(2, 4, lat, lat, generator=g); enc = torch.randn(2, 77, dim, generator=g); t = torch.tensor(500.0)
from torch.nn.attention import sdpa_kernel, SDPBackend
def setup(v):
    """(context manager, model input, undo)"""
    if v == "channels_last":
        unet.to(memory_format=torch.channels_last)
        return contextlib.nullcontext(), x.to(memory_format=torch.channels_last), lambda: unet.to(memory_format=torch.contiguous_format)
    if v == "threads1":
        torch.set_num_threads(1); return contextlib.nullcontext(), x, lambda: torch.set_num_threads(2)
    if v == "math_sdpa":
        return sdpa_kernel(SDPBackend.MATH), x, lambda: None
    if v == "no_mkldnn":
        return torch.backends.mkldnn.flags(enabled=False), x, lambda: None
    if v == "fused_qkv":
        unet.fuse_qkv_projections(); return contextlib.nullcontext(), x, unet.unfuse_qkv_projections
    return contextlib.nullcontext(), x, lambda: None
times = {v: [] for v in variants}; outs = {}
for r in range(rounds + 1):
    for v in variants:
        cm, xx, undo = setup(v)
        with cm, torch.inference_mode():
            for _ in range(per):
                s = time.perf_counter(); out = unet(xx, t, encoder_hidden_states=enc, return_dict=False)[0]
                if r: times[v].append(time.perf_counter() - s)
        outs[v] = out.float().contiguous()
        undo()
for v in variants:
    d = float((outs[v] - outs["baseline"]).abs().max())
    print(f"{which} {v:14s} median {statistics.median(times[v])*1000:8.1f} ms  ratio {statistics.median(times[v])/statistics.median(times['baseline']):.3f}  max|diff| {d:.1e}  n={len(times[v])}", flush=True)
