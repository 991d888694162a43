"""Where a cold `nodeflow run` goes, and the floor the model libraries set (#14).

    .venv/bin/python -m benchmarks.bench_import_floor [--rounds 3] [--workflow workflows/default.json]

Part 1, the ladder: fresh interpreters, one after another in each round (so the steps
alternate), each importing a little more, up to the cold run itself. Printed: median CPU
(user + sys of the child) and wall seconds. "the three model classes" is the least a run
on diffusers and transformers can import: `UNet2DConditionModel`, `AutoencoderKL` and
`CLIPTextModel` through their public names (a submodule import runs the same package
`__init__` files, so it loads the same modules). The cold run minus that step is
everything nodeflow does itself: its own imports, validation, loading the bundled
model's tensors, sampling, decoding, the PNG.

Part 2, who pulls in what: one `python -X importtime` of the three model classes,
each module's own time summed by top-level package, plus the cumulative time of the
subtrees that the libraries import without the run needing them. importtime counts
wall time, so on a loaded machine read the shares, not the seconds.

The load average is printed before and after: the machine is shared.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_startup import timed  # noqa: E402

SHIM = "import nodes.diffusion.impl; "  # the torchvision shim every diffusers import in nodeflow runs first
MODEL_CLASSES = ("from diffusers import UNet2DConditionModel, AutoencoderKL; "
                 "from transformers import CLIPTextModel")
LADDER = {
    "python, no imports": "pass",
    "the node declarations (`nodeflow nodes`' registry)":
        "from nodeflow.model.registry import default_registry; default_registry()",
    "import torch": SHIM + "import torch",
    "import torch, torch._dynamo": SHIM + "import torch, torch._dynamo",
    "from transformers import CLIPTextModel": SHIM + "from transformers import CLIPTextModel",
    "from diffusers import UNet2DConditionModel": SHIM + "from diffusers import UNet2DConditionModel",
    "the three model classes": SHIM + MODEL_CLASSES,
}
# Subtrees imported on the way to the three classes; the cumulative importtime of each
# where it is first imported (so a subtree counts what it is the first to pull in).
SUBTREES = {
    "torch": "torch (itself)",
    "torch._dynamo": "torch._dynamo (diffusers' torch_utils, transformers' masking_utils)",
    "peft": "peft (diffusers' hooks, because peft is installed)",
    "scipy.optimize": "scipy.optimize (transformers' object-detection loss)",
    "scipy.stats": "scipy.stats",
    "diffusers.models.transformers": "diffusers.models.transformers (every transformer model)",
    "diffusers.loaders.single_file_utils": "diffusers.loaders.single_file_utils (all schedulers)",
    "torchvision": "torchvision",
}


def importtime(snippet: str, env: dict[str, str]) -> list[tuple[int, int, int, str]]:
    """(self us, cumulative us, depth, module) of each module a fresh `-X importtime` run imports."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", snippet], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=True)
    rows = []
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m:
            rows.append((int(m[1]), int(m[2]), len(m[3]) // 2, m[4]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workflow", default=str(ROOT / "workflows" / "default.json"))
    args = parser.parse_args()

    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    env.pop("NODEFLOW_SERVER", None)
    out = Path("/tmp") / f"nodeflow-floor-{os.getpid()}"
    commands = {name: [sys.executable, "-c", snippet] for name, snippet in LADDER.items()}
    commands["nodeflow run (cold)"] = [sys.executable, "-m", "nodeflow.cli", "run", args.workflow, "-q", "-o", str(out)]

    load_before = os.getloadavg()
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for _ in range(args.rounds):
        for name, command in commands.items():
            results[name].append(timed(command, env))
    rows = importtime(SHIM + MODEL_CLASSES, env)
    load_after = os.getloadavg()

    print(f"{args.rounds} rounds, alternating; {os.cpu_count()} CPUs; load average before "
          f"{' '.join(f'{v:.2f}' for v in load_before)}, after {' '.join(f'{v:.2f}' for v in load_after)}")
    print("| step | CPU user+sys (median) | wall (median) | CPU share of the cold run |")
    print("|---|---|---|---|")
    cold_cpu = statistics.median(c for _, c in results["nodeflow run (cold)"])
    for name, runs in results.items():
        cpu = statistics.median(c for _, c in runs)
        wall = statistics.median(w for w, _ in runs)
        print(f"| {name} | {cpu:.2f} s | {wall:.2f} s | {cpu / cold_cpu:.2f} |")
    floor = statistics.median(c for _, c in results["the three model classes"])
    print(f"cold run minus the three model classes' import: {cold_cpu - floor:.2f} s CPU")

    total = sum(own for own, _, _, _ in rows)
    by_package = collections.Counter()
    for own, _, _, module in rows:
        by_package[module.split(".")[0]] += own
    print(f"\n`-X importtime` of the three model classes: {len(rows)} modules, {total / 1e6:.2f} s")
    print("| package | own import time | share |")
    print("|---|---|---|")
    for package, own in by_package.most_common(10):
        print(f"| {package} | {own / 1e6:.2f} s | {own / total:.2f} |")
    print("| subtree (where first imported) | cumulative | share |")
    print("|---|---|---|")
    for module, label in SUBTREES.items():
        cumulative = next((cum for _, cum, _, name in rows if name == module), None)
        if cumulative is not None:
            print(f"| {label} | {cumulative / 1e6:.2f} s | {cumulative / total:.2f} |")


if __name__ == "__main__":
    main()
