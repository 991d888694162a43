"""Start-up, side by side: what a user waits for from the command line, cold.

    .venv/bin/python -m benchmarks.bench_startup [--rounds 3] [--workflow workflows/default.json]

Each round runs, one after another in fresh processes (so the order alternates the
commands within a round): `nodeflow validate WORKFLOW`, `nodeflow nodes`, `nodeflow run
WORKFLOW` (cold: imports torch, diffusers, transformers, loads the bundled model) and
`nodeflow run WORKFLOW --server URL` against a `nodeflow serve` on loopback that has run
the workflow once (warm: the CLI imports no torch; the server has the model loaded).
Printed: the median wall seconds, the median CPU seconds (user + system of the CLI
process; the server's work in the hand-off is not in it) and the ratios to the cold run;
the load average before and after, since the machine is shared. The images of the cold
and the handed-off run are compared byte for byte.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.server_harness import Server  # noqa: E402


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) of one command, which must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stderr}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workflow", default=str(ROOT / "workflows" / "default.json"))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="nodeflow-startup-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    env.pop("NODEFLOW_SERVER", None)
    cli = [sys.executable, "-m", "nodeflow.cli"]
    server = Server(work / "server").start()
    try:
        warm = [*cli, "run", args.workflow, "--server", server.url, "-q"]
        timed([*warm, "-o", str(work / "warm-up")], env)  # the server imports torch and loads the model once
        commands = {
            "nodeflow validate": [*cli, "validate", args.workflow],
            "nodeflow nodes": [*cli, "nodes"],
            "nodeflow run, cold": [*cli, "run", args.workflow, "-q", "-o", str(work / "local")],
            "nodeflow run --server (warm)": [*warm, "-o", str(work / "handed")],
        }
        load_before = os.getloadavg()
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, command in commands.items():
                results[name].append(timed(command, env))
        load_after = os.getloadavg()
    finally:
        server.stop()

    cold_wall = statistics.median(w for w, _ in results["nodeflow run, cold"])
    cold_cpu = statistics.median(c for _, c in results["nodeflow run, cold"])
    print(f"{args.rounds} rounds, alternating; {os.cpu_count()} CPUs; load average before "
          f"{' '.join(f'{v:.2f}' for v in load_before)}, after {' '.join(f'{v:.2f}' for v in load_after)}")
    print(f"| command | wall (median) | CPU user+sys (median) | wall / cold run | runs (wall s) |")
    print("|---|---|---|---|---|")
    for name, runs in results.items():
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"| {name} | {wall:.2f} s | {cpu:.2f} s | {wall / cold_wall:.2f} | "
              f"{', '.join(f'{w:.2f}' for w, _ in runs)} |")
    print(f"cold run CPU {cold_cpu:.2f} s")
    local = sorted((work / "local").glob("*.png"))[0].read_bytes()
    handed = sorted((work / "handed").glob("*.png"))[0].read_bytes()
    print("images of the cold and the handed-off run:", "identical bytes" if local == handed else "DIFFERENT")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
