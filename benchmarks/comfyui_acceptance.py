"""How many ComfyUI workflows in a folder import and validate, and what blocks the rest.

    python -m benchmarks.comfyui_acceptance DIR [--builtins COMFYUI] [--top 25] [--files]

Every ``.json``, ``.png`` and ``.webp`` under DIR is opened as a user would (the front door,
``nodeflow.files.open.load_workflow``) and, when it imports, validated for structure
as a run checks it (what the output nodes need, as ComfyUI checks; no model folders:
missing model files are not counted). Prints the import and validation
rates, then the node types and value refusals that block the most files. With
``--builtins`` (a ComfyUI checkout, or a folder holding its source archive, such as
``/work/shared/peers/comfyui``), files whose node types are all ComfyUI built-ins are
counted apart: those are the ones nodeflow aims to open. ``--files`` prints one line per
file: whether it is built-in only, imports, validates, and the first reason it does not.
"""

from __future__ import annotations

import argparse
import re
import tarfile
from collections import Counter
from pathlib import Path

UNSUPPORTED = re.compile(r"unsupported node types: (.*?)(?:\. unsupported values: |$)", re.S)
# "Type (node 3)" or "Type (nodes 3, 4): reason"; a reason may itself hold "; ", a type name parentheses
TYPE_ENTRY = re.compile(r"(?:^|; )([^;]+?) \(nodes? [\w:., -]+\)")
VALUE_ENTRY = re.compile(r"node [^ ]+ \(([^)]+)\): ([^;]+)")
UI_ONLY = {"Reroute", "Note", "MarkdownNote", "PrimitiveNode"}


def builtin_types(checkout: Path) -> set[str]:
    """Node type names a ComfyUI checkout defines (NODE_CLASS_MAPPINGS keys and v3 node_ids);
    ``checkout`` may also be a folder holding the source as a ``.tar.gz`` (read in place)."""
    names: set[str] = set()
    for text in _python_sources(checkout):
        for block in re.findall(r"NODE_CLASS_MAPPINGS\s*=\s*\{(.*?)\}", text, re.S):
            names.update(re.findall(r'"([^"]+)"\s*:', block))
        names.update(re.findall(r'node_id\s*=\s*"([^"]+)"', text))
    return names


def _python_sources(checkout: Path):
    for source in checkout.rglob("*.py"):
        yield source.read_text(errors="replace")
    for archive in checkout.glob("*.tar.gz"):
        with tarfile.open(archive) as tar:
            for member in tar:
                if member.isfile() and member.name.endswith(".py"):
                    yield tar.extractfile(member).read().decode(errors="replace")


def used_types(path: Path) -> set[str] | None:
    import json

    if path.suffix.lower() != ".json":
        return None
    try:
        data = json.loads(path.read_text(errors="replace"))
    except ValueError:
        return None
    found: set[str] = set()
    if isinstance(data, dict) and isinstance(data.get("nodes"), list):
        nodes = list(data["nodes"])
        subgraphs = [s for s in (data.get("definitions") or {}).get("subgraphs") or [] if isinstance(s, dict)]
        for sub in subgraphs:
            nodes.extend(sub.get("nodes") or [])
        instances = {s.get("id") for s in subgraphs}  # a subgraph instance's type is its definition's id
        found = {str(n.get("type", "")).strip() for n in nodes if isinstance(n, dict) and n.get("type") not in instances}
    elif isinstance(data, dict):
        from nodes.diffusion.comfyui import unwrap_prompt_body  # a /prompt request body holds the graph

        data = unwrap_prompt_body(data)
        found = {str(n.get("class_type", "")).strip() for n in data.values() if isinstance(n, dict)}
    return found or None


def measure(folder: Path, builtins: set[str] | None) -> dict:
    from nodeflow.files.open import load_workflow
    from nodeflow.model.registry import default_registry
    registry = default_registry()
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".json", ".png", ".webp") and p.is_file())
    rows = []
    for path in files:
        row = {"path": path, "imported": False, "valid": False, "types": [], "values": [], "problems": [], "error": ""}
        types = used_types(path)
        row["builtin"] = None if builtins is None or types is None else types <= builtins | UI_ONLY
        try:
            workflow = load_workflow(path, registry)
        except Exception as error:  # every refusal is a figure here, whatever its class
            message = str(error)
            row["error"] = message.splitlines()[0][:160]
            match = UNSUPPORTED.search(message)
            if match:
                row["types"] = [t.split(":")[0].strip() for t in TYPE_ENTRY.findall(match.group(1))]
            if "unsupported values: " in message:
                row["values"] = [f"{t}: {re.sub(r'[0-9.]+', 'N', m.strip())[:90]}"
                                 for t, m in VALUE_ENTRY.findall(message.split("unsupported values: ", 1)[1])]
            rows.append(row)
            continue
        row["imported"] = True
        row["problems"] = structure_problems(workflow)
        row["valid"] = not row["problems"]
        rows.append(row)
    return {"rows": rows}


def structure_problems(workflow) -> list[str]:
    """What stops an imported workflow from running, as a run checks it, missing model files apart."""
    from nodeflow.model.validation import run_outputs, validate

    problems = [p for p in [*workflow.problems, *validate(workflow.graph, run_outputs(workflow.graph))]
                if p.code.name != "MISSING_FILE"]
    return [f"{p.node_type}.{p.field}: {p.code.name}" for p in problems]


def open_and_validate(path: Path, registry):
    """(the workflow, its problems) as ``measure`` counts them; (None, [the import error]) when it does not import."""
    from nodeflow.files.open import load_workflow

    try:
        workflow = load_workflow(path, registry)
    except Exception as error:  # every refusal is a figure here, whatever its class
        return None, [str(error).splitlines()[0][:160]]
    return workflow, structure_problems(workflow)


def report(rows: list[dict], top: int, label: str) -> None:
    total = len(rows)
    if not total:
        print(f"{label}: no files")
        return
    imported = sum(r["imported"] for r in rows)
    valid = sum(r["valid"] for r in rows)
    print(f"{label}: {total} files, {imported} import ({100 * imported / total:.0f}%), "
          f"{valid} import and validate ({100 * valid / total:.0f}%)")
    for title, key in (("missing or refused node types (files)", "types"), ("value refusals (files)", "values"),
                       ("validation problems (files)", "problems")):
        counts = Counter(item for r in rows for item in set(r[key]))
        if counts:
            print(f"  {title}: " + " · ".join(f"{name} {n}" for name, n in counts.most_common(top)))
    other = Counter(r["error"][:100] for r in rows if not r["imported"] and not r["types"] and not r["values"])
    if other:
        print("  other import errors: " + " · ".join(f"{e!r} {n}" for e, n in other.most_common(5)))


def list_files(rows: list[dict], folder: Path) -> None:
    """One line a file: built-in only (yes/no/?), imports, validates, the first reason it does not."""
    print(f"{'builtin':7} {'imports':7} {'valid':5}  file: reason")
    for r in rows:
        builtin = "?" if r["builtin"] is None else "yes" if r["builtin"] else "no"
        reason = r["error"] or "; ".join(r["problems"][:3])
        print(f"{builtin:7} {'yes' if r['imported'] else 'no':7} {'yes' if r['valid'] else 'no':5}  "
              f"{r['path'].relative_to(folder)}" + (f": {reason}" if reason else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--builtins", type=Path, help="a ComfyUI checkout, to count built-in-only workflows apart")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--files", action="store_true", help="print one line per file")
    args = parser.parse_args()
    builtins = builtin_types(args.builtins) if args.builtins else None
    rows = measure(args.folder, builtins)["rows"]
    if args.files:
        list_files(rows, args.folder)
    report(rows, args.top, "all")
    if builtins is not None:
        report([r for r in rows if r["builtin"]], args.top, "built-in nodes only")


if __name__ == "__main__":
    main()
