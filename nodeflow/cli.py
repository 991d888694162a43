"""The ``nodeflow`` command line: run, sweep, validate, list nodes, edit, serve, train the demo model.

Exit codes: 0 ok, 1 failure while running, 2 invalid workflow or arguments, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
from pathlib import Path
from typing import Any, Sequence

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """Bad arguments; exit code 2."""


class CommandFailed(Exception):
    """A failure outside any node (the server to hand a run to cannot be reached); exit code 1."""


def main(argv: Sequence[str] | None = None) -> int:
    # OpenMP threads that spin while waiting collapse when anything else holds a core (the
    # editor's render loop, another program): a 20-step tiny-model run measured 44 s
    # spinning against 1.5 s sleeping on a 2-core machine with one core busy. Set before
    # torch is imported; an explicit setting by the user wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = _parser()
    # A pack's command hands all its options to its own parser (argparse's REMAINDER refuses
    # a remainder that starts with an option, such as `train-demo --steps unet=100`).
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "pack_command", None) is not None:
        args.command_args = extra + args.command_args
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        return _edit(args)
    try:
        return args.handler(args)
    except UsageError as exc:
        print(f"nodeflow: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except CommandFailed as exc:
        print(f"nodeflow: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("nodeflow: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nodeflow", description="Node-graph diffusion image generation.")
    parser.add_argument(
        "--user-nodes",
        metavar="DIR",
        default=os.environ.get("NODEFLOW_USER_NODES"),
        help="also load node types from the .py files in DIR (off unless given; env NODEFLOW_USER_NODES)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run a workflow headless")
    run.add_argument("workflow", help="workflow JSON file, ComfyUI workflow, or PNG that carries a workflow")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NODE.FIELD=VALUE",
        help="set a value before running (NODE is an id or a unique title; VALUE is JSON or plain text)",
    )
    run.add_argument("--output-dir", "-o", default="output", help="folder for saved images (default: output)")
    run.add_argument("--input-dir", default=None, help="folder LoadImage reads from (default: input)")
    run.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N or mps")
    run.add_argument("--memory-budget", type=_size, default=None, metavar="SIZE", help=MEMORY_BUDGET_HELP)
    run.add_argument("--report", choices=["text", "json"], default="text", help="summary format on stdout")
    run.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    run.add_argument("--verbose", "-v", action="store_true", help="print tracebacks of failures")
    run.add_argument(
        "--models", action="append", default=[], metavar="DIR",
        help="a models folder, ComfyUI models/ tree or Hugging Face cache (repeatable; also NODEFLOW_MODELS)",
    )
    run.add_argument(
        "--allow-path", action="append", default=[], metavar="PATH",
        help="let the workflow name files under PATH even outside the models/input folders (repeatable)",
    )
    run.add_argument("--no-metadata", action="store_true", help="do not store the workflow in saved images")
    run.add_argument(
        "--server", metavar="URL", default=None,
        help="hand the run to a running `nodeflow serve` at URL (e.g. http://127.0.0.1:8188; env NODEFLOW_SERVER), "
             "which has torch and the model loaded already: progress is shown here and the images it saves are "
             "downloaded into --output-dir under the names a local run would give them; exit codes as for a local "
             "run. Input images found under --input-dir are uploaded to the server first; the server's own "
             "model folders and devices apply (--models, --allow-path and --device are refused). If the server cannot be reached the run fails (exit 1), it never falls back "
             "to a local run; a token is read from NODEFLOW_TOKEN",
    )
    run.add_argument("--local", action="store_true", help="run in this process even if NODEFLOW_SERVER is set")
    run.set_defaults(handler=_run)

    imp = sub.add_parser("import", help="convert a workflow from another tool (e.g. ComfyUI JSON or PNG)")
    imp.add_argument("source", help="a ComfyUI workflow (UI or API format), or an image carrying a workflow")
    imp.add_argument("--output", "-o", required=True, metavar="OUT.json", help="the nodeflow workflow to write")
    imp.set_defaults(handler=_import)

    validate = sub.add_parser("validate", help="check a workflow without running it")
    validate.add_argument("workflow", help="workflow JSON file, ComfyUI workflow, or PNG that carries a workflow")
    validate.add_argument("--json", action="store_true", help="print problems as JSON")
    validate.add_argument("--output-dir", "-o", default="output", help="folder a run would save images to")
    validate.add_argument("--input-dir", default="input", help="folder LoadImage would read from")
    validate.add_argument("--models", action="append", default=[], metavar="DIR", help="as for run")
    validate.add_argument("--allow-path", action="append", default=[], metavar="PATH", help="as for run")
    validate.add_argument("--device", default=None,
                          help="device whose memory the plan's peak is estimated against, as for run (default auto)")
    validate.add_argument("--memory-budget", type=_size, default=None, metavar="SIZE", help=MEMORY_BUDGET_HELP)
    validate.set_defaults(handler=_validate)

    nodes = sub.add_parser("nodes", help="list the node types and their declarations")
    fmt = nodes.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="every declaration as JSON")
    fmt.add_argument("--markdown", action="store_true", help="the node reference as Markdown")
    nodes.set_defaults(handler=_nodes)

    from nodeflow.sweep.command import add_parser as add_sweep_parser

    add_sweep_parser(sub)  # nodeflow sweep: see nodeflow/sweep/command.py

    edit = sub.add_parser("edit", help="open the desktop editor (the default with no command)")
    edit.add_argument("workflow", nargs="?")
    edit.set_defaults(handler=_edit)

    from .server.command import add_serve_command  # argparse only: no web framework until it runs

    add_serve_command(sub)

    from nodeflow.model.registry import default_registry

    for command in default_registry().commands().values():  # what the packs add, e.g. train-demo
        if command.name in sub.choices:
            continue  # a pack cannot replace a built-in command
        pack_command = sub.add_parser(command.name, help=command.help, add_help=False)
        pack_command.add_argument("command_args", nargs=argparse.REMAINDER)
        pack_command.set_defaults(handler=_pack_command, pack_command=command)
    return parser


# ----------------------------------------------------------------------------- helpers
def _registry(args: argparse.Namespace):
    from nodeflow.model.registry import default_registry

    registry = default_registry(args.user_nodes)
    for message in registry.load_errors:
        print(f"nodeflow: warning: {message}", file=sys.stderr)
    return registry


def _load(args: argparse.Namespace):
    from nodeflow.files.workflow import WorkflowError
    from nodeflow.files.open import load_workflow

    try:
        return load_workflow(args.workflow, _registry(args))
    except FileNotFoundError:
        raise UsageError(f"no such workflow file: {args.workflow}") from None
    except WorkflowError as exc:
        raise UsageError(f"{args.workflow}: {exc}") from None


def _parse_override(text: str) -> tuple[str, str, Any]:
    target, sep, raw = text.partition("=")
    node, dot, field = target.rpartition(".")
    if not sep or not dot or not node or not field:
        raise UsageError(f"--set expects NODE.FIELD=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw  # plain text, e.g. --set 6.text=a red circle
    return node, field, value


def _print_problems(problems, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"valid": not problems, "problems": [p.to_dict() for p in problems]}, indent=2))
        return
    for problem in problems:
        print(f"  - {problem}", file=sys.stderr)


# ---------------------------------------------------------------------------- commands
def _validate(args: argparse.Namespace) -> int:
    from nodeflow.model.validation import validate

    from nodeflow.model.context import RunContext

    workflow = _load(args)
    # With the folders a run would use: missing model and input files, files outside the
    # folders and an unusable output folder are found here too (Node.check_host).
    settings = _run_settings(args, workflow.graph.registry, [])
    context = RunContext(output_dir=Path(args.output_dir), input_dir=Path(args.input_dir), settings=settings)
    problems = validate(workflow.graph, extra_problems=workflow.problems, context=context)
    if not problems:  # then what run refuses before loading anything: a peak over the device's memory
        from nodeflow.engine.executor import Executor

        problems = Executor(workflow.graph.registry, device=args.device or "auto").check(
            workflow.graph, output_dir=args.output_dir, input_dir=args.input_dir, settings=settings)
    if args.json:
        _print_problems(problems, as_json=True)
    elif problems:
        print(f"{args.workflow}: {len(problems)} problem(s):", file=sys.stderr)
        _print_problems(problems, as_json=False)
    else:
        print(f"{args.workflow}: valid")
    return EXIT_INVALID if problems else EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from nodeflow.engine.events import RunStatus
    from nodeflow.host.settings import user_named_files
    from nodeflow.model.graph import GraphError

    workflow = _load(args)
    graph = workflow.graph
    trusted: list[str] = []
    for text in args.overrides:
        node, field, value = _parse_override(text)
        try:
            node_id = graph.find_node(node)
            graph.set_value(node_id, field, value)
            # the user named this path, not the file: see nodeflow.host.paths
            trusted += user_named_files(graph.registry, graph.nodes[node_id].type, {field: value})
        except GraphError as exc:
            raise UsageError(f"--set {text}: {exc}") from None

    server = _server_url(args)
    if server:
        result = _run_on_server(args, server, workflow)
    else:
        result = _run_here(args, workflow, trusted)

    if result.status == RunStatus.INVALID:  # the executor validates before it runs anything
        if args.report == "json":
            _print_problems(result.problems, as_json=True)
        else:
            print(f"{args.workflow}: not runnable, {len(result.problems)} problem(s):", file=sys.stderr)
            _print_problems(result.problems, as_json=False)
        return EXIT_INVALID

    summary = {
        "status": result.status,
        "seconds": round(result.seconds, 4),
        "executed": list(result.executed),
        "cached": list(result.cached),
        "timings": {k: round(v, 4) for k, v in result.timings.items()},
        "output_files": [str(path) for path in result.files],
        "error": result.error,
        "unused": _unused_nodes(graph),
    }
    if args.report == "json":
        print(json.dumps(summary, indent=2))
    else:
        _print_text_summary(summary)
        if summary["unused"] and not args.quiet:
            names = ", ".join(f"{nid} ({graph.nodes[nid].type})" for nid in summary["unused"])
            print(f"note: not run, they feed no output node: {names}", file=sys.stderr)
    if result.status == RunStatus.ERROR and args.verbose and getattr(result, "traceback", None):
        print(result.traceback, file=sys.stderr)
    return {RunStatus.OK: EXIT_OK, RunStatus.INTERRUPTED: EXIT_INTERRUPTED}.get(result.status, EXIT_FAILED)


def _run_here(args: argparse.Namespace, workflow, trusted: list[str]):
    """The run in this process: imports torch and the packs' models, then runs the graph."""
    from nodeflow.cli_progress import ConsoleProgress
    from nodeflow.cli_signals import first_ctrl_c
    from nodeflow.engine.executor import Executor

    graph = workflow.graph
    try:
        executor = Executor(graph.registry, device=args.device or "auto")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    show_bar = not args.quiet and sys.stderr.isatty()
    progress = ConsoleProgress(graph, enabled=show_bar)
    settings = _run_settings(
        args, graph.registry, trusted,
        workflow=workflow.to_dict(),  # embedded in saved images (values after --set)
        embed_workflow=not args.no_metadata,
        previews=False,  # a terminal shows no pictures: nodes skip computing step previews
    )

    # Ctrl+C asks the executor to stop at the next step instead of killing the process
    # mid-write; a second Ctrl+C falls through to Python's default. A run clears the
    # executor's stop request as it begins, so one that came just before (while the run
    # was being checked) is passed on again with the run's first event.
    asked = threading.Event()

    def stop() -> None:
        asked.set()
        executor.interrupt()

    def on_event(event: Any) -> None:
        if asked.is_set():
            executor.interrupt()
        progress(event)

    try:
        with first_ctrl_c(stop):
            result = executor.run(
                graph,
                on_event=on_event,
                output_dir=Path(args.output_dir),
                input_dir=Path(args.input_dir or "input"),
                settings=settings,
                extra_problems=workflow.problems,
            )
    finally:
        progress.close()
    return result


def _server_url(args: argparse.Namespace) -> str:
    """The server to hand the run to: ``--server``, else NODEFLOW_SERVER unless ``--local``."""
    if args.server is not None:
        if args.local:
            raise UsageError("--server and --local contradict each other")
        return args.server
    return "" if args.local else os.environ.get("NODEFLOW_SERVER", "").strip()


def _run_on_server(args: argparse.Namespace, server: str, workflow):
    """The run on a warm ``nodeflow serve`` (see :mod:`nodeflow.server.client`), reported like a local one."""
    from nodeflow.cli_progress import ConsoleProgress
    from nodeflow.cli_signals import first_ctrl_c
    from nodeflow.engine.plan import default_outputs
    from nodeflow.server.client import ServerClient, ServerError

    local_only = [name for name, given in (("--models", args.models), ("--allow-path", args.allow_path),
                                           ("--device", args.device),
                                           ("--memory-budget", args.memory_budget)) if given]
    if local_only:
        verb = "applies" if len(local_only) == 1 else "apply"
        raise UsageError(f"{', '.join(local_only)} {verb} to a run in this process; the server at {server} uses its "
                         "own (nodeflow serve --models/--allow-path/--device), or run with --local")
    output_dir = Path(args.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise UsageError(f"the output folder {output_dir} is a file")
    graph = workflow.graph
    via = "--server" if args.server is not None else "NODEFLOW_SERVER"
    print(f"nodeflow: running on the server at {server} ({via}; --local runs here)", file=sys.stderr)
    progress = ConsoleProgress(graph, enabled=not args.quiet and sys.stderr.isatty())
    cancel = threading.Event()  # the first Ctrl+C cancels the job on the server; a second one ends here
    try:
        with first_ctrl_c(cancel.set):
            client = ServerClient(server, token=os.environ.get("NODEFLOW_TOKEN") or None)
            client.check()
            client.upload_inputs(graph, Path(args.input_dir or "input"))
            planned = tuple(sorted(graph.ancestors(default_outputs(graph))))
            return client.run(workflow.to_dict(), output_dir, planned=planned, embed_workflow=not args.no_metadata,
                              on_event=progress, cancel=cancel)
    except ServerError as exc:
        raise CommandFailed(str(exc)) from None
    finally:
        progress.close()


def _unused_nodes(graph) -> list[str]:
    """Nodes that no output node needs: a run neither checks nor runs them."""
    from nodeflow.engine.plan import default_outputs
    from nodeflow.model.problems import node_order_key

    needed = graph.ancestors(default_outputs(graph))
    return sorted((nid for nid in graph.nodes if nid not in needed), key=node_order_key)


MEMORY_BUDGET_HELP = (
    "bytes of memory the run may use, e.g. 6GB or 800MB (default: 90%% of a GPU's memory, 75%% of RAM); "
    "a plan estimated over it is refused naming the node and field"
)


def _size(text: str) -> int:
    """``--memory-budget``: bytes, or a number with KB, MB, GB or TB (powers of 1024)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", text.lower())
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; write e.g. 6GB, 800MB or a number of bytes")
    return int(float(match.group(1)) * 1024 ** "bkmgt".index(match.group(2) or "b"))


def _run_settings(args: argparse.Namespace, registry, trusted: list[str], **options: Any):
    from nodeflow.host.config import ConfigError
    from nodeflow.host.settings import build_run_settings

    try:
        if getattr(args, "memory_budget", None):
            options.setdefault("memory_budget", args.memory_budget)
        return build_run_settings(registry, args.models, [*args.allow_path, *trusted], **options)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def _import(args: argparse.Namespace) -> int:
    from nodeflow.files.atomic import SaveError
    from nodeflow.files.open import convert_file
    from nodeflow.files.workflow import WorkflowError

    try:
        workflow = convert_file(args.source, args.output, _registry(args))
    except SaveError as exc:  # the target: a missing folder, a full disk
        raise UsageError(exc.strerror) from None
    except FileNotFoundError:
        raise UsageError(f"no such file: {args.source}") from None
    except WorkflowError as exc:
        raise UsageError(f"{args.source}: {exc}") from None
    source = workflow.meta.get("imported_from", "a nodeflow workflow")
    print(f"wrote {args.output} ({len(workflow.graph.nodes)} nodes, from {source})")
    return EXIT_OK


def _print_text_summary(summary: dict[str, Any]) -> None:
    status = summary["status"]
    counts = f"{len(summary['executed'])} node(s) run, {len(summary['cached'])} from cache"
    if status == "ok":
        print(f"done in {summary['seconds']:.2f} s: {counts}")
        for path in summary["output_files"]:
            print(f"wrote {path}")
    elif status == "interrupted":
        print(f"interrupted: {counts}", file=sys.stderr)
    else:
        print(f"failed: {summary['error']}", file=sys.stderr)


def _nodes(args: argparse.Namespace) -> int:
    from nodeflow.docs import node_reference_markdown

    registry = _registry(args)
    if args.json:
        print(json.dumps([cls.describe() for cls in registry.types()], indent=2, default=str))
    elif args.markdown:
        print(node_reference_markdown(registry))
    else:
        category = None
        for cls in registry.types():
            if cls.category != category:
                category = cls.category
                print(f"\n{category}")
            summary = cls.description.strip().splitlines()[0] if cls.description.strip() else ""
            print(f"  {cls.type:<24} {summary}")
    return EXIT_OK


def _edit(args: argparse.Namespace) -> int:
    from nodeflow.editor import launch

    return launch(getattr(args, "workflow", None), registry=_registry(args))


def _pack_command(args: argparse.Namespace) -> int:
    return args.pack_command.main(list(args.command_args))


if __name__ == "__main__":
    sys.exit(main())
