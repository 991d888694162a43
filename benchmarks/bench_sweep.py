"""Points per minute of a seed sweep of the bundled model: locally, and on 1 and 2 Ray actors.

    .venv/bin/python -m benchmarks.bench_sweep [--points 32] [--steps 8] [--skip-ray]

Runs ``workflows/default.json`` (sampler steps set by ``--steps``) at ``--points`` seeds,
each time into a fresh folder (nothing is resumed), and prints for each backend:

- the wall time of the whole sweep and points/minute over it (start-up included: Ray's
  start and each actor loading the model);
- the steady state: points/minute over the points after each worker's first one;
- for Ray, the overhead per point: the time between two results arriving at the driver
  minus the time the actor spent running the point (scheduling, pickling the point, the
  PNG bytes coming back), averaged over the steady state of the 1-actor run;
  and the round trip of an empty actor call.

Ray starts locally with ``num_cpus=2`` (one CPU actor each). A Ray CPU actor gets one
thread (Ray sets OMP_NUM_THREADS=1), so the local sweep runs with one thread too
(``--threads`` to change it; on a busy 2-core machine two spinning OpenMP threads made
the local run about 7x slower per point, which is not what this compares).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import nodeflow.api
from nodeflow.host.settings import build_run_settings
from nodeflow.sweep import Sweep, axes_from_mapping

ROOT = Path(__file__).resolve().parent.parent


def workflow(folder: Path, steps: int) -> Path:
    doc = json.loads((ROOT / "workflows" / "default.json").read_text())
    next(n for n in doc["nodes"] if n["id"] == "7")["values"]["steps"] = steps
    path = folder / "bench.json"
    path.write_text(json.dumps(doc))
    return path


def run(path: Path, points: int, out: Path, backend_factory=None) -> dict:
    flow = nodeflow.api.open(path, device="cpu")
    settings = build_run_settings(flow.graph.registry, previews=False)
    sweep = Sweep(flow.graph, axes_from_mapping(flow.graph, {"5.seed": list(range(points))}), output_dir=out,
                  settings=settings, device="cpu")
    arrivals: list[tuple[float, float, str]] = []
    started = time.perf_counter()
    backend = backend_factory(sweep) if backend_factory else sweep.local_backend(flow.executor)
    result = sweep.run(backend, on_point=lambda o: arrivals.append((time.perf_counter(), o.seconds, o.worker)))
    wall = time.perf_counter() - started
    extra = {}
    if hasattr(backend, "actors"):
        import ray

        actor = backend.actors[0]
        ray.get(actor.pid.remote())
        trips = []
        for _ in range(20):
            t = time.perf_counter()
            ray.get(actor.pid.remote())
            trips.append(time.perf_counter() - t)
        extra["round_trip_ms"] = 1000 * statistics.median(trips)
    backend.close()
    assert result.ok, result.failed
    first_of: dict[str, int] = {}
    for i, (_, _, worker) in enumerate(arrivals):
        first_of.setdefault(worker, i)
    steady_from = max(first_of.values())
    steady = arrivals[steady_from:]
    span = steady[-1][0] - steady[0][0] if len(steady) > 1 else float("nan")
    gaps = [b[0] - a[0] - b[1] for a, b in zip(steady, steady[1:])]
    return {
        "wall_s": wall, "points_per_min": 60 * points / wall,
        "steady_points_per_min": 60 * (len(steady) - 1) / span if span == span and span > 0 else float("nan"),
        "mean_point_s": statistics.mean(o for _, o, _ in steady), "overhead_ms": 1000 * statistics.mean(gaps) if gaps else 0,
        **extra,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the local sweep (default 1)")
    args = parser.parse_args()
    if "torch" in sys.modules:
        raise SystemExit("torch was imported before the thread settings")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before torch is imported (the first run imports it)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    folder = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    try:
        path = workflow(folder, args.steps)
        rows = [("local", run(path, args.points, folder / "local"))]
        if not args.skip_ray:
            import ray

            from nodeflow.sweep.ray_backend import RayBackend

            t = time.perf_counter()
            ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
            print(f"ray.init: {time.perf_counter() - t:.1f} s (not in the figures below)")
            for actors in (1, 2):
                def factory(sweep, actors=actors):
                    return RayBackend(sweep.document(), device="cpu", actors=actors)

                rows.append((f"ray, {actors} actor(s)", run(path, args.points, folder / f"ray{actors}", factory)))
            ray.shutdown()
        print(f"{args.points}-point seed sweep, {args.steps} sampler steps, bundled model, {os.cpu_count()} CPUs, "
              f"local sweep with {args.threads} thread(s); overhead: 1-actor run only")
        print(f"{'backend':<18} {'wall s':>7} {'pts/min':>8} {'steady pts/min':>15} {'s/point':>8} {'overhead ms':>12}")
        for name, r in rows:
            print(f"{name:<18} {r['wall_s']:7.1f} {r['points_per_min']:8.1f} {r['steady_points_per_min']:15.1f} "
                  f"{r['mean_point_s']:8.2f} {r['overhead_ms'] if name.startswith('ray, 1 ') else float('nan'):12.1f}"
                  + (f"   (empty actor call {r['round_trip_ms']:.1f} ms)" if "round_trip_ms" in r else ""))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
