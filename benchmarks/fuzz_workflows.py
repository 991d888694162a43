"""Fuzz the workflow loaders: every input ends in a clear load error or a loaded workflow.

Feeds hypothesis-generated input to everything that reads shared workflows:
native workflow JSON (random and mutated from the shipped workflows), ComfyUI API and
UI documents (random and mutated from the test fixtures), PNG files with random
text chunks, and raw bytes. An input passes when loading raises WorkflowError (with a
message) or returns a workflow that then validates, serialises and reloads without
error. Anything else (an uncaught exception) is a failure, printed with its input.

    nice -n 10 .venv/bin/python -m benchmarks.fuzz_workflows --examples 100000

tests/test_fuzz_workflows.py runs a few hundred examples of the same checks.
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import sys
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent

from nodeflow.files.pngmeta import PNG_SIGNATURE  # noqa: E402
from nodeflow.model.registry import default_registry  # noqa: E402
from nodeflow.model.validation import validate  # noqa: E402
from nodeflow.files.workflow import WorkflowError  # noqa: E402
from nodeflow.files.open import workflow_from_dict, workflow_from_json  # noqa: E402
from nodes.diffusion.comfyui import MAPPINGS, UI_ONLY  # noqa: E402
from nodes.diffusion.impl.metadata import workflow_text  # noqa: E402

SEEDS_NATIVE = [json.loads(p.read_text()) for p in sorted((ROOT / "workflows").glob("*.json"))]
SEEDS_COMFY = [json.loads(p.read_text()) for p in sorted((ROOT / "tests/fixtures/comfyui").glob("*.json"))]
COMFY_TYPES = sorted(MAPPINGS) + sorted(UI_ONLY) + ["VAELoader", "LoraLoader"]

outcomes: Counter[str] = Counter()

# ------------------------------------------------------------------------ strategies
# Values at the edges of what JSON can spell and Python can hold: integers past the
# 4,300-digit int/str conversion limit and past float range, non-finite floats (a dict
# built in code can hold them; JSON text spells them 1e999 / NaN), lone surrogates.
extreme = st.one_of(
    st.tuples(st.sampled_from([20, 64, 309, 400, 4301, 5000]), st.booleans()).map(lambda e: (-1 if e[1] else 1) * 10 ** e[0]), st.sampled_from([math.inf, -math.inf, math.nan, 1e308, -1e308, 5e-324]),
    st.sampled_from(["\ud800", "a\udfffb", "\udc80" * 3, "\x00", "\u202e"]),
)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20), st.sampled_from(["", "1", "3", "4", "normal", "bypass", "euler", "randomize", "..", "/etc"]),
    extreme,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=10), inner, max_size=6)),
    max_leaves=30,
)
node_ids = st.one_of(st.integers(-2, 30), st.sampled_from(["1", "3", "4", "6", "9", "3.noise", ""]))


def _mutate(document: Any, draw: Any, depth: int = 0) -> Any:
    """A copy of ``document`` with random parts replaced, dropped or duplicated."""
    choice = draw(st.integers(0, 9))
    if choice == 0 or depth > 8:
        return draw(json_values)
    if isinstance(document, dict):
        out = {}
        for key, value in document.items():
            action = draw(st.integers(0, 12))
            if action == 0:
                continue  # drop
            out[key] = _mutate(value, draw, depth + 1) if action < 5 else value
        if draw(st.integers(0, 8)) == 0:
            out[draw(st.text(max_size=8))] = draw(json_values)
        return out
    if isinstance(document, list):
        items = [(_mutate(v, draw, depth + 1) if draw(st.integers(0, 3)) == 0 else v) for v in document]
        if items and draw(st.integers(0, 6)) == 0:
            items.append(items[draw(st.integers(0, len(items) - 1))])
        return items
    return draw(json_values) if choice < 3 else document


@st.composite
def mutated_native(draw: Any) -> Any:
    return _mutate(draw(st.sampled_from(SEEDS_NATIVE)), draw)


@st.composite
def mutated_comfy(draw: Any) -> Any:
    return _mutate(draw(st.sampled_from(SEEDS_COMFY)), draw)


@st.composite
def random_comfy_api(draw: Any) -> dict[str, Any]:
    nodes = {}
    for _ in range(draw(st.integers(1, 8))):
        inputs = draw(st.dictionaries(
            st.sampled_from(["model", "clip", "vae", "samples", "images", "seed", "steps", "cfg", "text", "ckpt_name",
                             "sampler_name", "scheduler", "denoise", "positive", "negative", "latent_image", "noise",
                             "guider", "sampler", "sigmas", "width", "height", "batch_size", "upscale_method", "crop"]),
            st.one_of(scalars, st.tuples(node_ids, st.integers(-1, 4)).map(list)), max_size=8))
        nodes[str(draw(node_ids))] = {"class_type": draw(st.sampled_from(COMFY_TYPES)), "inputs": inputs}
    return nodes


@st.composite
def random_comfy_ui(draw: Any) -> dict[str, Any]:
    links = []
    for link_id in range(draw(st.integers(0, 10))):
        ends = [link_id, draw(node_ids), draw(st.integers(-1, 3)), draw(node_ids), draw(st.integers(-1, 5)), "*"]
        links.append(ends if draw(st.booleans()) else dict(zip(
            ["id", "origin_id", "origin_slot", "target_id", "target_slot", "type"], ends)))
    nodes = []
    for _ in range(draw(st.integers(0, 8))):
        inputs = [{"name": draw(st.sampled_from(["model", "clip", "samples", "seed", "positive", "input", ""])),
                   "link": draw(st.one_of(st.none(), st.integers(-1, 12))),
                   **({"widget": {"name": "seed"}} if draw(st.booleans()) else {})}
                  for _ in range(draw(st.integers(0, 4)))]
        nodes.append({"id": draw(node_ids), "type": draw(st.sampled_from(COMFY_TYPES)),
                      "pos": draw(st.one_of(st.lists(st.floats(allow_nan=False), max_size=3), json_values)),
                      "mode": draw(st.sampled_from([0, 2, 4, 1, 7, "x"])), "inputs": inputs,
                      "widgets_values": draw(st.lists(scalars, max_size=8))})
    document = {"nodes": nodes, "links": links, "version": draw(st.sampled_from([0.4, 1]))}
    document["last_node_id" if draw(st.booleans()) else "state"] = 9
    return document


def _png(chunks: list[tuple[bytes, bytes]], good_crc: bool = True) -> bytes:
    out = [PNG_SIGNATURE]
    for kind, body in chunks:
        crc = zlib.crc32(kind + body) if good_crc else 0
        out.append(struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc))
    return b"".join(out)


@st.composite
def png_files(draw: Any) -> bytes:
    payload = draw(st.one_of(
        mutated_comfy().map(json_text), mutated_native().map(json_text), st.text(max_size=50)))
    keyword = draw(st.sampled_from([b"nodeflow", b"workflow", b"prompt", b"parameters", b"", b"x" * 90]))
    data = payload.encode("utf-8", "surrogatepass")
    kind = draw(st.sampled_from([b"tEXt", b"zTXt", b"iTXt", b"IDAT"]))
    if kind == b"zTXt":
        body = keyword + b"\x00\x00" + (zlib.compress(data) if draw(st.booleans()) else draw(st.binary(max_size=20)))
    elif kind == b"iTXt":
        flag = draw(st.booleans())
        body = keyword + b"\x00" + bytes([flag, 0]) + b"\x00\x00" + (zlib.compress(data) if flag else data)
    else:
        body = keyword + b"\x00" + data
    chunks = [(b"IHDR", b"\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"), (kind, body), (b"IEND", b"")]
    raw = _png(chunks, good_crc=draw(st.integers(0, 9)) > 0)
    if draw(st.integers(0, 5)) == 0:
        raw = raw[: draw(st.integers(0, len(raw)))]  # truncated
    return raw


def json_text(value: Any) -> str:
    """``value`` as JSON text, spelling what json.dumps cannot (integers past the
    conversion limit, non-finite floats) the way a hostile file would: raw digits, 1e999, NaN."""
    spelled: dict[str, str] = {}

    def mark(item: Any) -> Any:
        if isinstance(item, dict):
            return {key: mark(v) for key, v in item.items()}
        if isinstance(item, list):
            return [mark(v) for v in item]
        if isinstance(item, int) and not isinstance(item, bool) and item.bit_length() > 4000:
            text = ("-" if item < 0 else "") + "9" * (len(spelled) % 3 * 500 + 4301)
        elif isinstance(item, float) and not math.isfinite(item):
            text = "NaN" if math.isnan(item) else ("1e999" if item > 0 else "-Infinity")
        else:
            return item
        key = f"@@spelled{len(spelled)}@@"
        spelled[key] = text
        return key

    out = json.dumps(mark(value), ensure_ascii=True)
    for key, text in spelled.items():
        out = out.replace(json.dumps(key), text)
    return out


inputs = st.one_of(
    json_values.map(lambda v: ("dict", v)),
    mutated_native().map(lambda v: ("dict", v)),
    mutated_native().map(lambda v: ("json", json_text(v))),
    mutated_comfy().map(lambda v: ("json", json_text(v))),
    mutated_comfy().map(lambda v: ("dict", v)),
    random_comfy_api().map(lambda v: ("dict", v)),
    random_comfy_ui().map(lambda v: ("dict", v)),
    png_files().map(lambda v: ("bytes", v)),
    st.binary(max_size=200).map(lambda v: ("bytes", v)),
)


# ----------------------------------------------------------------------------- check
def check(kind: str, data: Any, registry: Any) -> None:
    """Load ``data``; a WorkflowError must carry a message, a loaded workflow must survive
    validation and a save/load round trip. Other exceptions propagate (the failure)."""
    try:
        workflow = workflow_from_dict(data, registry) if kind == "dict" else workflow_from_json(data, registry)
    except WorkflowError as exc:
        assert str(exc), "a WorkflowError without a message"
        outcomes["refused"] += 1
        return
    validate(workflow.graph, extra_problems=workflow.problems)
    again = workflow_from_dict(workflow.to_dict(), registry)
    assert again.to_dict() == workflow.to_dict(), "a loaded workflow does not survive save/load"
    # What SaveImage embeds in a PNG must be UTF-8 and read back to the same workflow.
    embedded = workflow_text(workflow.to_dict()).encode("utf-8")
    assert workflow_from_json(embedded, registry).to_dict() == workflow.to_dict(), "the PNG copy differs"
    outcomes["loaded"] += 1


def _safe(value: Any) -> str:
    """repr/str that survive integers past the conversion limit."""
    try:
        return repr(value) if not isinstance(value, BaseException) else str(value)
    except ValueError:
        return f"<{type(value).__name__} holding an integer too long to print>"


def _report(start: float) -> str:
    return (f"{sum(outcomes.values())} inputs in {time.perf_counter() - start:.0f} s: {outcomes['loaded']} loaded, "
            f"{outcomes['refused']} refused with a WorkflowError, {outcomes['failed']} uncaught exceptions")


def run(examples: int, seed: int | None = None, keep_going: bool = False, progress: int = 0) -> list[str]:
    """Check ``examples`` inputs. A failure raises (hypothesis shrinks it first) unless
    ``keep_going``, which records each distinct failure and goes on; returns them.
    ``progress``: print a summary line every that many inputs."""
    import traceback

    start = time.perf_counter()

    registry = default_registry()
    failures: dict[str, str] = {}

    @settings(max_examples=examples, deadline=None, database=None, derandomize=seed is not None,
              suppress_health_check=list(HealthCheck))
    @given(inputs)
    def fuzz(case: tuple[str, Any]) -> None:
        if progress and sum(outcomes.values()) % progress == 0 and outcomes:
            print(_report(start), flush=True)
        try:
            check(case[0], case[1], registry)
        except Exception as exc:
            if not keep_going:
                raise
            outcomes["failed"] += 1
            where = traceback.extract_tb(exc.__traceback__)[-1]
            key = f"{type(exc).__name__} at {Path(where.filename).name}:{where.lineno}"
            failures.setdefault(key, f"{key}: {_safe(exc)}\n    input: {_safe(case)[:600]}")

    fuzz()
    return list(failures.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=10_000)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    failures = run(args.examples, keep_going=True, progress=5_000)
    print(_report(start))
    for failure in failures:
        print(failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
