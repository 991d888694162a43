"""The ``nodeflow serve`` subcommand: its options, and turning them into a :class:`ServerConfig`."""

from __future__ import annotations

import argparse
from pathlib import Path

from .config import MiB, ServeError, ServerConfig


def add_serve_command(sub: "argparse._SubParsersAction") -> None:
    serve = sub.add_parser("serve", help="run an HTTP + WebSocket server with a job queue (ComfyUI-compatible API)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default 127.0.0.1; any other needs a token, generated if not given)")
    serve.add_argument("--port", type=int, default=8188, help="port (default 8188, ComfyUI's)")
    serve.add_argument("--token", default=None, help="the token clients must send (env NODEFLOW_TOKEN)")
    serve.add_argument("--data-dir", default="nodeflow-server", metavar="DIR",
                       help="job database and default input/output/temp folders (default ./nodeflow-server)")
    serve.add_argument("--input-dir", default=None, metavar="DIR", help="uploads and LoadImage files (default DATA/input)")
    serve.add_argument("--output-dir", "-o", default=None, metavar="DIR", help="saved images (default DATA/output)")
    serve.add_argument("--device", action="append", default=[], metavar="DEVICE",
                       help="a device to run jobs on, one worker each (repeatable; default auto)")
    serve.add_argument("--models", action="append", default=[], metavar="DIR",
                       help="a models folder, ComfyUI models/ tree or Hugging Face cache (repeatable)")
    serve.add_argument("--allow-path", action="append", default=[], metavar="PATH",
                       help="let workflows name files under PATH outside the models/input folders (repeatable)")
    serve.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                       help="another Host name to answer to, e.g. the machine's LAN name (repeatable)")
    serve.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                       help="a web page origin allowed to call the API, e.g. http://localhost:3000 (repeatable)")
    serve.add_argument("--max-body-mb", type=float, default=16, help="largest JSON request body (default 16)")
    serve.add_argument("--max-upload-mb", type=float, default=64, help="largest upload (default 64)")
    serve.add_argument("--cache-mb", type=float, default=None, help="output cache budget (default: the executor's)")
    serve.add_argument("--previews", action="store_true",
                       help="send step previews (binary frames on /ws, data URLs on /v1/events); off by default, "
                            "like ComfyUI's --preview-method none")
    serve.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                       help="run the jobs (and sweep points) on Ray actors: none for a local Ray, 'auto' or an "
                            "address for a cluster (pip install nodeflow[ray])")
    serve.add_argument("--ray-actors", type=int, default=None, metavar="N",
                       help="Ray actors (default: one per GPU, else one per CPU); one queue worker each")
    serve.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    serve.set_defaults(handler=run_serve)


def config_from_args(args: argparse.Namespace, registry) -> ServerConfig:
    import os

    from nodeflow.host.settings import build_run_settings

    settings = build_run_settings(registry, args.models, args.allow_path)
    return ServerConfig(
        host=args.host, port=args.port, token=args.token or os.environ.get("NODEFLOW_TOKEN") or None,
        data_dir=Path(args.data_dir), input_dir=Path(args.input_dir) if args.input_dir else None,
        output_dir=Path(args.output_dir) if args.output_dir else None, devices=tuple(args.device) or ("auto",),
        allowed_hosts=tuple(args.allow_host), allowed_origins=tuple(args.allow_origin),
        max_body_bytes=int(args.max_body_mb * MiB), max_upload_bytes=int(args.max_upload_mb * MiB),
        cache_budget_bytes=None if args.cache_mb is None else int(args.cache_mb * MiB),
        previews=args.previews, run_settings=settings, ray=args.ray, ray_actors=args.ray_actors,
        model_dirs=tuple(args.models), allow_paths=tuple(args.allow_path),
    )


def run_serve(args: argparse.Namespace) -> int:
    import sys

    from nodeflow.host.config import ConfigError
    from nodeflow.model.registry import default_registry

    from .run import serve

    try:
        registry = default_registry(args.user_nodes)
        for message in registry.load_errors:
            print(f"nodeflow: warning: {message}", file=sys.stderr)
        config = config_from_args(args, registry)
        return serve(config, registry, log_level=args.log_level)
    except (ConfigError, ServeError) as exc:
        print(f"nodeflow: {exc}", file=sys.stderr)
        return 2  # the CLI's exit code for bad arguments
