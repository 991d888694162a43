"""``nodeflow sweep``: the command line face of sweeps (Ray is imported only for ``--ray``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(sub) -> None:
    sweep = sub.add_parser("sweep", help="run a workflow at many values of its fields (seeds, prompts, scales ...)")
    sweep.add_argument("workflow", help="workflow JSON file, ComfyUI workflow, or PNG that carries a workflow")
    sweep.add_argument("--vary", action="append", default=[], metavar="NODE.FIELD=VALUES", required=True,
                       help="an axis: a range 1..64 (or 0.5..2:0.5), a list 4,6,8, or @FILE with one value a line")
    mode = sweep.add_mutually_exclusive_group()
    mode.add_argument("--product", dest="mode", action="store_const", const="product",
                      help="every combination of the axes (the default)")
    mode.add_argument("--zip", dest="mode", action="store_const", const="zip", help="the i-th value of every axis")
    sweep.set_defaults(mode="product")
    sweep.add_argument("--output-dir", "-o", default="sweep", help="folder for images, sheet.png and sweep.json")
    sweep.add_argument("--input-dir", default="input", help="folder LoadImage reads from (default: input)")
    sweep.add_argument("--dry-run", action="store_true", help="print the plan (points, node executions) and stop")
    sweep.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                       help="run the points on Ray actors: none for a local Ray, 'auto' for a running cluster")
    sweep.add_argument("--actors", type=int, default=None, help="Ray actors (default: one per GPU, else per CPU)")
    sweep.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    sweep.add_argument("--report", choices=["text", "json"], default="text", help="summary format on stdout")
    sweep.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    sweep.add_argument("--models", action="append", default=[], metavar="DIR", help="a models folder (repeatable)")
    sweep.add_argument("--allow-path", action="append", default=[], metavar="PATH",
                       help="let the workflow name files under PATH (repeatable)")
    sweep.add_argument("--no-metadata", action="store_true", help="do not store the workflow in saved images")
    sweep.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from nodeflow.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, UsageError, _load, _run_settings
    from nodeflow.engine.device import resolve_device
    from nodeflow.engine.executor import Executor
    from nodeflow.sweep import Sweep, SweepError, parse_axis
    from nodeflow.cli_signals import first_ctrl_c
    from nodeflow.sweep.progress import SweepProgress

    workflow = _load(args)
    settings = _run_settings(args, workflow.graph.registry, [], embed_workflow=not args.no_metadata, previews=False)
    try:
        device = resolve_device(args.device, workflow.graph.registry.device_backend())
        executor = None if args.ray else Executor(workflow.graph.registry, device=device)
        axes = [parse_axis(text, workflow.graph, base_dir=Path.cwd()) for text in args.vary]
        sweep = Sweep(workflow.graph, axes, args.mode, args.output_dir, settings, device, workflow.ui, workflow.meta,
                      workflow.problems, source=str(args.workflow))
    except (SweepError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    print(sweep.plan.text(), file=sys.stderr if args.report == "json" else sys.stdout)
    if args.dry_run:
        if args.report == "json":
            print(json.dumps(sweep.plan.summary(), indent=2))
        return EXIT_OK
    if args.ray:
        from nodeflow.sweep.ray_backend import RayBackend  # the one place Ray is imported

        backend = RayBackend(sweep.document(), device=args.device, models=args.models, allow_paths=args.allow_path,
                             input_dir=args.input_dir, address=None if args.ray == "local" else args.ray,
                             actors=args.actors, embed_workflow=not args.no_metadata)
    else:
        backend = sweep.local_backend(executor, args.input_dir)
    progress = SweepProgress(len(sweep.plan.points), enabled=not args.quiet and sys.stderr.isatty())
    def stop() -> None:  # after the running point's current step; a second Ctrl+C kills
        print("\nnodeflow: stopping the sweep (Ctrl+C again to kill)", file=sys.stderr)
        sweep.interrupt()

    try:
        with first_ctrl_c(stop):
            result = sweep.run(backend, on_event=progress, progress=progress)
    finally:
        progress.close()
        backend.close()
    summary = result.summary()
    if args.report == "json":
        print(json.dumps(summary, indent=2))
    else:
        print(f"{summary['status']}: {len(result.ran)} point(s) run, {len(result.skipped)} already done, "
              f"{len(result.failed)} failed in {result.seconds:.1f} s; "
              f"manifest {result.manifest}" + (f", sheet {result.sheet}" if result.sheet else ""))
        if result.error:
            print(f"nodeflow: {result.error}", file=sys.stderr)
        for index, error in sorted(result.failed.items()):
            print(f"  point {index}: {error}", file=sys.stderr)
    if result.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if result.ok else EXIT_FAILED
