"""The device memory manager's figures (issue 14), on the bundled model.

    python -m benchmarks.bench_memory [--repeats 3] [--sd15]

Prints:

1. the plan's estimated peak beside the measured rise of the process's peak RSS
   (VmHWM after the run minus RSS before it), each size in a fresh process, CPU, fp32,
   with the modelling code imported before the baseline (a process pays for it once);
   measured twice: with glibc's default allocator, and with a fixed mmap threshold
   (``MALLOC_MMAP_THRESHOLD_=1048576``) so tensors freed go back to the system and RSS
   follows the live tensors, which is what the estimate models;
2. offloading: the txt2img workflow on a simulated device too small for its models and
   the sampler's working memory together (tests/support/devices.py: offloading leaves
   meta tensors, so on this CPU a move costs bookkeeping only, not a PCIe copy), beside
   the same workflow with room: run time, moves, bytes moved, seconds in moves, and
   whether the images are identical; beside it, a ``clone`` of every model tensor (the
   memcpy a real transfer does at least, without the PCIe link a GPU's adds);
3. the estimate's own cost per run (the plan's estimate for the default workflow, and
   with ``--sd15`` the header of the SD 1.5-size file bench_vs_peers builds);
4. weights held at fp32 and fp16, estimated from the files and measured after loading;
5. the calibration of the activation counts in nodes/diffusion/impl/memory.py: one UNet
   forward (batch 2, as with CFG) and one VAE decode on random-weight models of three
   UNet and two VAE architectures, peak RSS rise (live tensors, after a warm-up forward)
   beside the formula's figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = ((64, 1), (256, 1), (512, 1), (256, 4))


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def _document(width: int, height: int, batch: int, steps: int = 4) -> dict:
    document = json.loads((ROOT / "workflows" / "txt2img.json").read_text())
    for node in document["nodes"]:
        if node["type"] == "Checkpoint":
            node["values"]["dtype"] = "fp32"
        if node["type"] == "EmptyLatent":
            node["values"].update(width=width, height=height, batch=batch)
        if node["type"] == "Sampler":
            node["values"]["steps"] = steps
        if node["type"] == "VAEDecode":
            node["values"]["tiling"] = "off"
    return document


def worker_peak(width: int, height: int, batch: int) -> dict:
    """One run in this (fresh) process: the estimate, then the measured rise of peak RSS."""
    import nodes.diffusion.impl  # noqa: F401  (torchvision shim first)
    from nodeflow.engine.executor import Executor
    from nodeflow.files.open import workflow_from_dict
    from nodeflow.model.registry import default_registry
    from tests.support import host_context

    import torch  # noqa: F401  (imported before the baseline: not the run's memory)
    import diffusers  # noqa: F401
    import transformers  # noqa: F401
    from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: F401  (modelling code, once a process)
    from transformers import CLIPTextModel  # noqa: F401

    registry = default_registry()
    executor = Executor(registry, device="cpu")
    graph = workflow_from_dict(_document(width, height, batch), registry).graph
    with tempfile.TemporaryDirectory() as out:
        prepared = executor._prepare(graph, None, None, out, "input", host_context().settings)
        estimate = prepared.estimate
        before = _rss_mb("VmRSS")
        result = executor.run(graph, output_dir=out, settings=host_context().settings)
    assert result.ok, result.error
    return {"estimate_mb": estimate.peak / 2**20, "rise_mb": _rss_mb("VmHWM") - before,
            "peak_step": max(estimate.steps, key=lambda s: s.peak).node_type}


def worker_offload(repeats: int) -> dict:
    import numpy as np
    from PIL import Image

    import nodes.diffusion.impl  # noqa: F401
    from nodeflow.engine.executor import Executor
    from nodeflow.engine.residency import modules_in
    from nodeflow.files.open import workflow_from_dict
    from nodeflow.model.registry import default_registry
    from nodes.diffusion.impl.memory import sampler_bytes, unet_shape
    from tests.support import host_context
    from tests.support.devices import SimulatedDevice

    registry = default_registry()
    side = 96
    document = _document(side, side, 1)
    ctx = host_context()
    parts = registry.get("Checkpoint")().run(ctx, checkpoint="shapes", dtype="fp32", prediction="auto")
    probe = SimulatedDevice(1)
    size = {name: sum(probe.bytes_on(m, "cpu") for m in modules_in([v])) for name, v in parts.items()}
    factor = parts["vae"].family.vae_scale_factor
    need = sampler_bytes(1, 2, side // factor, side // factor, unet_shape(parts["model"].unet.config), 4)
    budget = size["model"] + size["vae"] + need - 1
    rows: dict[str, list[float]] = {"roomy": [], "tight": []}
    images, stats = {}, None
    with tempfile.TemporaryDirectory() as out:
        warm = Executor(registry, device="cpu").run(workflow_from_dict(document, registry).graph,
                                                    output_dir=Path(out) / "warm", settings=ctx.settings)
        assert warm.ok, warm.error  # the first load in a process imports modelling code: not timed
        for round_ in range(repeats):
            for kind in (("roomy", "tight") if round_ % 2 == 0 else ("tight", "roomy")):
                devices = SimulatedDevice(int(budget / 0.75) + 1) if kind == "tight" else None
                executor = Executor(registry, device="cpu", devices=devices)
                graph = workflow_from_dict(document, registry).graph
                started = time.perf_counter()
                result = executor.run(graph, output_dir=Path(out) / kind, settings=ctx.settings)
                rows[kind].append(time.perf_counter() - started)
                assert result.ok, result.error
                images[kind] = np.asarray(Image.open(result.files[-1]))
                if kind == "tight":
                    stats = executor.residency().stats()
    modules = modules_in(parts.values())
    copies = []
    for _ in range(repeats):
        started = time.perf_counter()
        for module in modules:
            for tensor in (*module.parameters(), *module.buffers()):
                tensor.detach().clone()
        copies.append(time.perf_counter() - started)
    return {
        "roomy_s": statistics.median(rows["roomy"]), "tight_s": statistics.median(rows["tight"]),
        "offloads": stats.offloads, "restores": stats.restores,  # one tight run's (each has a fresh executor)
        "offloaded_mb": stats.offloaded_bytes / 2**20, "move_s": stats.offload_seconds + stats.restore_seconds,
        "identical": bool((images["roomy"] == images["tight"]).all()), "budget_mb": budget / 2**20,
        "models_mb": sum(size.values()) / 2**20, "copy_s": statistics.median(copies),
    }


def worker_estimate_cost(repeats: int, sd15: bool) -> dict:
    import nodes.diffusion.impl  # noqa: F401
    from nodeflow.engine.estimate import estimate_plan
    from nodeflow.engine.executor import Executor
    from nodeflow.files.open import workflow_from_dict
    from nodeflow.model.registry import default_registry
    from nodes.diffusion import estimates
    from tests.support import host_context

    registry = default_registry()
    executor = Executor(registry, device="cpu")
    graph = workflow_from_dict(json.loads((ROOT / "workflows" / "default.json").read_text()), registry).graph
    ctx = host_context()
    prepared = executor._prepare(graph, None, None, "out", "input", ctx.settings)
    times = []
    for _ in range(max(repeats, 5)):
        started = time.perf_counter()
        estimate_plan(prepared.plan, ctx, prepared.budget, offloads=False)
        times.append(time.perf_counter() - started)
    figures = {"plan_ms": statistics.median(times) * 1000}
    if sd15:
        from benchmarks.bench_vs_peers import build_checkpoint

        ckpt, _ = build_checkpoint()
        started = time.perf_counter()
        parts = estimates._file_weights(ckpt, 4, 4)
        figures["sd15_header_first_ms"] = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        estimates._file_weights(ckpt, 4, 4)
        figures["sd15_header_again_ms"] = (time.perf_counter() - started) * 1000
        figures["sd15_fp32_mb"] = sum(parts.values()) / 2**20
        figures["sd15_fp16_mb"] = sum(estimates._file_weights(ckpt, 2, 4).values()) / 2**20
    return figures


def worker_dtypes() -> dict:
    import nodes.diffusion.impl  # noqa: F401
    from nodeflow.engine.sizing import sizeof
    from nodeflow.model.registry import default_registry
    from nodes.diffusion.estimates import checkpoint as estimate_checkpoint
    from tests.support import host_context

    registry = default_registry()
    cls = registry.get("Checkpoint")
    ctx = host_context()
    figures = {}
    for dtype in ("fp32", "fp16"):
        estimate = estimate_checkpoint(cls, {"checkpoint": "shapes", "dtype": dtype}, {}, ctx)
        loaded = cls().run(ctx, checkpoint="shapes", dtype=dtype, prediction="auto")
        figures[dtype] = {"estimated_mb": estimate.holds / 2**20, "measured_mb": sizeof(loaded) / 2**20,
                          "vae": str(loaded["vae"].vae.dtype)}
    return figures


UNETS = {  # name: (config, latent side); the bundled model's, SD-1.5-shaped (a transformer at level 0), wider level 1
    "bundled": ({"block_out_channels": [32, 64, 128], "layers_per_block": 1, "attention_head_dim": 4,
                 "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                 "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]}, 256),
    "sd-shaped": ({"block_out_channels": [32, 64, 128, 128], "layers_per_block": 2, "attention_head_dim": 8,
                   "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
                   "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3}, 128),
    "wide-level-1": ({"block_out_channels": [32, 96, 96], "layers_per_block": 2, "attention_head_dim": 4,
                      "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                      "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]}, 128),
}
VAES = {  # name: (config, image side)
    "bundled": ({"block_out_channels": [32, 64], "layers_per_block": 1, "mid_block_add_attention": False,
                 "down_block_types": ["DownEncoderBlock2D"] * 2, "up_block_types": ["UpDecoderBlock2D"] * 2}, 512),
    "sd-shaped": ({"block_out_channels": [32, 64, 128, 128], "layers_per_block": 2,
                   "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4}, 512),
}


def worker_forward(kind: str, name: str) -> dict:
    """One forward of a random-weight model in this (fresh) process: peak RSS rise over
    the second forward (the first, tiny, pays the one-time costs), and the formula's figure."""
    import nodes.diffusion.impl  # noqa: F401
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from nodes.diffusion.impl.memory import sampler_bytes, unet_shape, vae_bytes

    torch.manual_seed(0)
    if kind == "unet":
        config, side = UNETS[name]
        model = UNet2DConditionModel(**config, cross_attention_dim=128, norm_num_groups=16, sample_size=16).eval()
        context = torch.randn(2, 77, 128)
        forward = lambda s: model(torch.randn(2, 4, s, s), 10, encoder_hidden_states=context)  # noqa: E731
        formula = sampler_bytes(1, 2, side, side, unet_shape(config), 4)
        size = side
    else:
        config, side = VAES[name]
        model = AutoencoderKL(**config, norm_num_groups=16, latent_channels=4).eval()
        factor = 2 ** (len(config["block_out_channels"]) - 1)
        forward = lambda s: model.decode(torch.randn(1, 4, s, s)).sample  # noqa: E731
        formula = vae_bytes(1, side, side, config["block_out_channels"][0], 4)
        size = side // factor
    with torch.inference_mode():
        forward(8)
        Path("/proc/self/clear_refs").write_text("5")
        before = _rss_mb("VmRSS")
        forward(size)
    return {"measured_mb": _rss_mb("VmHWM") - before, "formula_mb": formula / 2**20, "side": side}


LIVE = {"MALLOC_MMAP_THRESHOLD_": "1048576"}  # freed tensors return to the system: RSS follows live tensors


def _in_fresh_process(name: str, *args, env: dict | None = None) -> dict:
    code = (f"import json, sys; sys.path.insert(0, {str(ROOT)!r}); from benchmarks.bench_memory import {name}; "
            f"print('RESULT' + json.dumps({name}(*{list(args)!r})))")
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", **(env or {}))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    line = next((line for line in done.stdout.splitlines() if line.startswith("RESULT")), None)
    if line is None:
        raise RuntimeError(f"{name} failed:\n{done.stderr[-3000:]}")
    return json.loads(line[len("RESULT"):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sd15", action="store_true", help="also time the header of the SD 1.5-size file")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}")

    print("\n1. estimated peak vs measured rise of peak RSS (bundled model, CPU, fp32, 4 steps, whole decode; "
          f"median of {args.repeats} fresh processes each)")
    print("| size | estimated peak | measured, live tensors | estimate/measured | measured, default allocator | "
          "estimate/measured | peak at |")
    print("|---|---|---|---|---|---|---|")
    for width, batch in SIZES:
        rises: dict[str, list[float]] = {"live": [], "default": []}
        result = None
        for _ in range(args.repeats):
            for kind, env in (("live", LIVE), ("default", None)):
                result = _in_fresh_process("worker_peak", width, width, batch, env=env)
                rises[kind].append(result["rise_mb"])
        live, default, estimate = statistics.median(rises["live"]), statistics.median(rises["default"]), result["estimate_mb"]
        print(f"| {batch} x {width}x{width} | {estimate:,.0f} MB | {live:,.0f} MB | {estimate / live:.2f} | "
              f"{default:,.0f} MB | {estimate / default:.2f} | {result['peak_step']} |")
    print("(the default allocator keeps what a node freed, so the next node's peak lands on top of it)")

    offload = _in_fresh_process("worker_offload", args.repeats)
    print("\n2. offloading on a simulated device (bundled model, 96x96, 4 steps; median of "
          f"{args.repeats} runs each, fresh executors)")
    print(f"models {offload['models_mb']:.1f} MB, device budget {offload['budget_mb']:.1f} MB")
    print("| | run | moves (off/back) | bytes offloaded | seconds in moves | images identical |")
    print("|---|---|---|---|---|---|")
    print(f"| with room | {offload['roomy_s']:.3f} s | 0 | 0 | 0 | - |")
    print(f"| tight | {offload['tight_s']:.3f} s | {offload['offloads']:.0f}/{offload['restores']:.0f} | "
          f"{offload['offloaded_mb']:.1f} MB | {offload['move_s'] * 1000:.2f} ms | {offload['identical']} |")
    print(f"tight/with room: {offload['tight_s'] / offload['roomy_s']:.2f}; a memcpy of every model's tensors: "
          f"{offload['copy_s'] * 1000:.1f} ms")

    cost = _in_fresh_process("worker_estimate_cost", args.repeats, args.sd15)
    print("\n3. the estimate's own cost")
    print(f"default workflow, whole plan: {cost['plan_ms']:.2f} ms per run (headers cached)")
    if "sd15_header_first_ms" in cost:
        print(f"SD 1.5-size file header: {cost['sd15_header_first_ms']:.1f} ms the first time, "
              f"{cost['sd15_header_again_ms']:.3f} ms again; weights estimated {cost['sd15_fp32_mb']:,.0f} MB at fp32, "
              f"{cost['sd15_fp16_mb']:,.0f} MB at fp16 (VAE fp32)")

    dtypes = _in_fresh_process("worker_dtypes")
    print("\n4. weights held (bundled model)")
    print("| dtype | estimated from files | measured after loading | VAE |")
    print("|---|---|---|---|")
    for dtype, row in dtypes.items():
        print(f"| {dtype} | {row['estimated_mb']:.1f} MB | {row['measured_mb']:.1f} MB | {row['vae']} |")
    print("\n5. activation counts: one forward, random weights, live tensors (after a warm-up forward)")
    print("| model | size | measured RSS rise | formula | formula/measured |")
    print("|---|---|---|---|---|")
    for kind, table in (("unet", UNETS), ("vae", VAES)):
        for name in table:
            row = _in_fresh_process("worker_forward", kind, name, env=LIVE)
            what = f"{row['side']}² latent, batch 2" if kind == "unet" else f"{row['side']}² image"
            print(f"| {kind} {name} | {what} | {row['measured_mb']:,.1f} MB | {row['formula_mb']:,.1f} MB | "
                  f"{row['formula_mb'] / row['measured_mb']:.2f} |")
    print(f"\nload average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
