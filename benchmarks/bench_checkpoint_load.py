"""Loading one SD 1.5-size single-file checkpoint, nodeflow and ComfyUI, imports excluded.

    .venv/bin/python -m benchmarks.bench_checkpoint_load [--comfyui DIR] [--before DIR] [--rounds 6]

``bench_vs_peers`` times the Checkpoint node inside a cold run, where nodeflow's figure
holds importing the modelling libraries and ComfyUI's does not (its server imported them
at start). This one times only the load: each measurement is a fresh process that first
imports what the loader needs (untimed), then loads the checkpoint built by
``bench_vs_peers`` (``build/peers/``, an original-layout fp16 ``.safetensors`` of random
weights, about 2 GB) into fp32 on the CPU and reports wall seconds, user and system CPU
seconds, minor page faults and the peak RSS (VmHWM) of the whole process.

- ``nodeflow``: ``load_checkpoint`` of this checkout, with the CLI's thread wait policy;
- ``nodeflow-before`` (``--before DIR``): the same on another checkout (``git archive``);
- ``comfyui`` (``--comfyui DIR``, a folder made by ``../shared/peers/comfyui/setup.sh DIR``):
  ``comfy.sd.load_checkpoint_guess_config`` in ComfyUI's own venv, started as its server
  starts it (``--cpu``); nodeflow never imports it.

Every round takes the tools in another order (``benchmarks/orders.py``), so that each
tool follows each other equally often: a process that starts just after another freed
gigabytes loads slower on this machine. With three tools, use a multiple of 6 rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _usage() -> dict:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"user": usage.ru_utime, "sys": usage.ru_stime, "faults": usage.ru_minflt}


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _timed(load) -> dict:
    before, start = _usage(), time.perf_counter()
    load()
    wall, after = time.perf_counter() - start, _usage()
    return {"load": wall, **{k: after[k] - before[k] for k in before}, "rss": _peak_rss_mb()}


def worker_nodeflow(path: Path) -> dict:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI sets it, before torch loads
    import torch

    from nodes.diffusion.impl.loading import load_checkpoint  # the package installs the torchvision shim first

    from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: F401  (the imports, untimed)
    from transformers import CLIPTextModel, CLIPTextModelWithProjection  # noqa: F401

    return _timed(lambda: load_checkpoint(path, torch.float32, "cpu"))


def worker_comfyui(path: Path) -> dict:
    sys.argv = ["main.py", "--cpu"]
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy.sd
    import nodes  # noqa: F401  (ComfyUI's node module, imported by its server before any prompt)

    return _timed(lambda: comfy.sd.load_checkpoint_guess_config(str(path), output_vae=True, output_clip=True))


def measure(tool: str, args: argparse.Namespace, path: Path) -> dict:
    if tool == "comfyui":
        comfy = Path(args.comfyui).resolve()
        python, cwd, env = comfy / "venv" / "bin" / "python", comfy / "comfy", dict(os.environ)
        env["PYTHONPATH"] = str(comfy / "comfy")
    else:
        code = Path(args.before).resolve() if tool == "nodeflow-before" else ROOT
        python, cwd, env = Path(sys.executable), code, {**os.environ, "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1"}
    cmd = [str(python), str(Path(__file__).resolve()), "--worker", tool.removesuffix("-before"), "--path", str(path)]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{tool} worker failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


ROWS = [("load", "load (wall)", "s"), ("user", "user CPU", "s"), ("sys", "system CPU", "s"),
        ("faults", "minor page faults", ""), ("rss", "peak RSS", "MB")]


def table(results: dict[str, list[dict]]) -> str:
    tools = list(results)
    base = tools[0]
    others = tools[1:]
    lines = ["| | " + " | ".join(tools) + " | " + " | ".join(f"{base}/{t}" for t in others) + " |",
             "|---" * (1 + len(tools) + len(others)) + "|"]
    for key, label, unit in ROWS:
        medians = {t: statistics.median(r[key] for r in results[t]) for t in tools}
        cells = [f"{medians[t]:,.2f} {unit}".strip() if unit == "s" else f"{medians[t]:,.0f} {unit}".strip() for t in tools]
        ratios = [f"{medians[base] / medians[t]:.2f}" if medians[t] else "-" for t in others]
        lines.append(f"| {label} | " + " | ".join(cells + ratios) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--comfyui", metavar="DIR", help="a ComfyUI set-up folder (setup.sh DIR)")
    parser.add_argument("--before", metavar="DIR", help="also load with another nodeflow checkout")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker = {"nodeflow": worker_nodeflow, "comfyui": worker_comfyui}[args.worker]
        print(json.dumps(worker(Path(args.path))))
        return

    sys.path.insert(0, str(ROOT))
    from benchmarks.bench_vs_peers import build_checkpoint
    from benchmarks.orders import run_rounds

    path, _ = build_checkpoint()
    tools = ["nodeflow"] + (["nodeflow-before"] if args.before else []) + (["comfyui"] if args.comfyui else [])
    results = run_rounds(tools, args.rounds, lambda tool: measure(tool, args, path))
    print(f"median of {args.rounds} rounds; {path.name} into fp32 on the CPU, imports excluded\n")
    print(table(results))


if __name__ == "__main__":
    main()
