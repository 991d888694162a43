"""A shared workflow is untrusted input: it can name paths, sizes and types, but it
cannot read or write outside the configured folders, run code, or exhaust memory."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest

from nodeflow.model.fields import FileChoice
from nodeflow import NodeError, RunContext, RunSettings
from nodeflow.model.registry import default_registry
from nodeflow.model.validation import validate
from nodeflow.files.workflow import WorkflowError
from nodeflow.files.open import load_workflow, workflow_from_dict, workflow_from_json
from tests.support import ROOT

HOSTILE_NAMES = [
    "../outside.safetensors",
    "sub/../../outside.safetensors",
    "..\\..\\outside.safetensors",
    "/etc/passwd",
    "~/.ssh/id_rsa",
    "C:\\Windows\\win.ini",
]


@pytest.fixture(scope="module")
def registry():
    return default_registry()


@pytest.fixture
def folders(tmp_path):
    """models/, input/ and output/ folders, and a file outside all of them."""
    for name in ("models", "input", "output", "outside"):
        (tmp_path / name).mkdir()
    (tmp_path / "outside" / "outside.safetensors").write_bytes(b"secret")
    (tmp_path / "outside.safetensors").write_bytes(b"secret")
    return tmp_path


def _context(folders: Path, **settings) -> RunContext:
    models = folders / "models"
    kinds = {"checkpoints": [models], "unet": [models]}
    return RunContext(node_id="7", output_dir=folders / "output", input_dir=folders / "input",
                      settings=RunSettings(model_folders=kinds, **settings))


def _path_fields(registry) -> list[tuple[type, str]]:
    """Every file field of every installed node type that needs no links to run."""
    found = []
    for cls in registry.types():
        sockets = [n for n, i in cls.inputs.items() if not i.is_widget and not i.optional]
        for name, declared in cls.widgets().items():
            if isinstance(declared, FileChoice) and not sockets:
                found.append((cls, name))
    return found


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_no_path_field_leaves_its_folders(registry, folders, name):
    fields = _path_fields(registry)
    assert {(cls.type, field) for cls, field in fields} >= {("Checkpoint", "checkpoint"), ("UNet", "unet"),
                                                            ("LoadImage", "image")}
    for cls, field in fields:
        values = {**cls.default_values(), field: name}
        with pytest.raises(NodeError) as error:
            cls().run(_context(folders), **values)
        message = str(error.value)
        assert f'field "{field}"' in message, message
        assert "absolute path" in message or "'..'" in message or "not found" in message or "not in the" in message


def test_symlinks_out_of_a_folder_are_refused_unless_allowed(registry, folders):
    from nodes.diffusion.impl.paths import resolve_model_path

    (folders / "models" / "escape.safetensors").symlink_to(folders / "outside" / "outside.safetensors")
    (folders / "input" / "escape.png").symlink_to(folders / "outside" / "outside.safetensors")
    (folders / "models" / "inside.safetensors").write_bytes(b"x")
    (folders / "models" / "alias.safetensors").symlink_to(folders / "models" / "inside.safetensors")
    ctx = _context(folders)

    with pytest.raises(NodeError, match="symlink .*outside the configured folders"):
        resolve_model_path("escape.safetensors", "checkpoints", ctx.settings)
    load_image = registry.get("LoadImage")
    with pytest.raises(NodeError, match='field "image": .*symlink'):
        load_image().run(ctx, image="escape.png")
    assert resolve_model_path("alias.safetensors", "checkpoints", ctx.settings).name == "alias.safetensors"

    trusted = _context(folders, trusted_paths=[str(folders / "outside")]).settings  # --allow-path
    assert resolve_model_path("escape.safetensors", "checkpoints", trusted).name == "escape.safetensors"
    absolute = str(folders / "outside" / "outside.safetensors")
    assert resolve_model_path(absolute, "checkpoints", ctx.settings.trusting(absolute)) == Path(absolute)


@pytest.mark.parametrize("prefix", ["../escape", "sub/name", "/tmp/abs", "..", "a\\b", "c:name"])
def test_save_writes_only_inside_the_output_folder(registry, folders, prefix):
    import torch

    with pytest.raises(NodeError, match='field "filename_prefix"'):
        registry.get("SaveImage")().run(_context(folders), images=torch.zeros(1, 4, 4, 3), filename_prefix=prefix,
                                        embed_workflow=True)
    assert list((folders / "output").iterdir()) == []


def test_save_never_overwrites_nor_follows_a_planted_symlink(registry, folders):
    import torch

    target = folders / "outside" / "victim.txt"
    target.write_text("keep me")
    (folders / "output" / "img_00001.png").symlink_to(target)
    (folders / "output" / "img_00002.png").write_bytes(b"earlier run")
    registry.get("SaveImage")().run(_context(folders), images=torch.zeros(2, 4, 4, 3), filename_prefix="img",
                                    embed_workflow=True)
    assert target.read_text() == "keep me"
    assert (folders / "output" / "img_00002.png").read_bytes() == b"earlier run"
    assert sorted(p.name for p in (folders / "output").iterdir()) == [
        "img_00001.png", "img_00002.png", "img_00003.png", "img_00004.png"]


def test_a_pickle_checkpoint_never_runs_its_payload(registry, folders):
    import torch

    marker = folders / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"state_dict": {"weight": torch.zeros(1)}, "evil": Payload()}, folders / "models" / "evil.ckpt")
    with pytest.raises(NodeError, match=r'field "checkpoint": .*evil\.ckpt.*never'):
        registry.get("Checkpoint")().run(_context(folders), checkpoint="evil.ckpt", dtype="auto", prediction="auto")
    assert not marker.exists()


def _graph_doc(node_type: str, **values) -> dict:
    return {"format": "nodeflow.workflow", "version": 1,
            "nodes": [{"id": "1", "type": node_type, "values": values}], "links": []}


@pytest.mark.parametrize("node_type, field, value", [
    ("EmptyLatent", "width", 1_000_000),
    ("EmptyLatent", "height", -8),
    ("EmptyLatent", "batch", 100_000),
    ("Sampler", "steps", 10**9),
    ("LatentUpscale", "scale_by", 1e9),
    ("TextEncoder", "text", "x" * 200_000),
])
def test_oversized_values_are_refused_naming_node_and_field(registry, node_type, field, value):
    workflow = workflow_from_dict(_graph_doc(node_type, **{field: value}), registry)
    problems = [p for p in validate(workflow.graph) if p.code == "invalid_value"]
    assert [(p.node_id, p.field) for p in problems] == [("1", field)]


def test_deeply_nested_and_huge_json_are_refused(registry, tmp_path, monkeypatch):
    with pytest.raises(WorkflowError, match="nested"):
        workflow_from_json("[" * 100_000 + "]" * 100_000, registry)
    deep: dict = {"v": 1}
    for _ in range(200):
        deep = {"v": deep}
    with pytest.raises(WorkflowError, match="nested more than"):
        workflow_from_dict(_graph_doc("EmptyLatent", width=deep), registry)
    comfy = {"1": {"class_type": "CLIPTextEncode", "inputs": {"text": deep}}}
    with pytest.raises(WorkflowError, match="nested more than"):
        workflow_from_dict(comfy, registry)
    many = {str(i): {"class_type": "Note", "inputs": {}} for i in range(6_000)}
    with pytest.raises(WorkflowError, match="limit is"):
        workflow_from_dict(many, registry)

    import nodeflow.files.workflow as workflow_module

    monkeypatch.setattr(workflow_module, "MAX_FILE_BYTES", 1000)
    big = tmp_path / "big.json"
    big.write_text(json.dumps(_graph_doc("TextEncoder", text="x" * 2000)))
    with pytest.raises(WorkflowError, match="larger than the limit"):
        load_workflow(big, registry)


def test_a_png_zip_bomb_stops_at_the_limit(registry, tmp_path):
    from nodeflow.files.pngmeta import MAX_TEXT_BYTES, PNG_SIGNATURE

    bomb = zlib.compress(b"{" + b" " * (MAX_TEXT_BYTES + 1), 9)  # 50 MB of text in ~50 kB
    body = b"nodeflow\x00" + b"\x01\x00" + b"\x00\x00" + bomb  # iTXt: compressed, no language
    header = b"\x00\x00\x00\x01" * 2 + b"\x08\x02\x00\x00\x00"
    path = tmp_path / "bomb.png"
    path.write_bytes(PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"iTXt", body) + _chunk(b"IEND", b""))
    with pytest.raises(WorkflowError, match="larger than the limit"):
        load_workflow(path, registry)


def _chunk(kind: bytes, body: bytes) -> bytes:
    import struct

    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_nothing_in_a_workflow_is_code(registry):
    import sys

    doc = {"format": "nodeflow.workflow", "version": 1, "links": [], "nodes": [
        {"id": "1", "type": "os.system", "values": {"command": "touch /tmp/nodeflow-pwned"}},
        {"id": "2", "type": "__import__('os').system('true')", "values": {}},
        {"id": "3", "type": "evil_plugin_module", "values": {}},
    ]}
    workflow = workflow_from_dict(doc, registry)
    assert {p.code for p in validate(workflow.graph) if p.node_id} == {"unknown_node_type"}
    assert "evil_plugin_module" not in sys.modules
    comfy = {"1": {"class_type": "ExecutePython", "inputs": {"code": "import os"}}}
    with pytest.raises(WorkflowError, match=r"ExecutePython \(node 1\)"):
        workflow_from_dict(comfy, registry)


def test_image_sizes_are_limited_before_allocation(registry, folders):
    import torch

    from nodes.diffusion.types import Latent

    ctx = _context(folders)
    with pytest.raises(NodeError, match='field "batch": 64 x 8192x8192 is 4,294,967,296 pixels'):
        registry.get("EmptyLatent")().run(ctx, width=8192, height=8192, batch=64)
    latent = Latent(torch.zeros(1, 4, 8, 8))
    small = _context(folders, max_batch_pixels=100_000)  # 8x8 latent x8 x8 = 262,144 pixels
    with pytest.raises(NodeError, match='field "scale_by": .* more than the limit of 100,000 per batch'):
        registry.get("LatentUpscale")().run(small, latent=latent, method="bilinear", width=0, height=0, scale_by=8.0)
    assert registry.get("EmptyLatent")().run(ctx, width=64, height=64, batch=2).samples.shape == (2, 4, 8, 8)


def test_a_shared_workflow_naming_an_absolute_model_runs_only_when_the_user_allows_it(tmp_path_factory, tmp_path):
    """A workflow saved with an absolute model path (e.g. after `--set`) is refused when
    reopened by someone else, and runs when they allow that folder (--allow-path)."""
    import nodeflow.api as api
    from nodeflow.host.settings import build_run_settings
    from tests.support.tiny_models import shared_tiny_sd

    model = shared_tiny_sd(tmp_path_factory)
    root = ROOT
    author = api.open(root / "workflows" / "txt2img.json")
    author.set("1.checkpoint", str(model)).set("7.steps", 1)
    author.save(tmp_path / "shared.json")

    reader = api.open(tmp_path / "shared.json", device="cpu")
    refused = reader.run(output_dir=tmp_path / "out", check=False)
    # Refused before anything runs (validation checks the host's folders), naming the field.
    assert refused.status == "invalid" and "absolute path" in refused.error
    assert [p.field for p in refused.problems] == ["checkpoint"]
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())

    allowed = build_run_settings(reader.graph.registry, allow_paths=[model.parent],
                                 environ={"NODEFLOW_CONFIG_DIR": str(tmp_path)})
    assert reader.run(output_dir=tmp_path / "out", settings=allowed).status == "ok"


def test_an_input_image_pillow_refuses_is_a_field_error(registry, folders):
    """A PNG whose compressed text is over Pillow's limit (a decompression bomb) fails
    with an error naming the field, not an uncaught exception."""
    from nodeflow.files.pngmeta import PNG_SIGNATURE

    body = b"comment\x00\x01\x00\x00\x00" + zlib.compress(b" " * (4 << 20))
    header = b"\x00\x00\x00\x01" * 2 + b"\x08\x02\x00\x00\x00"
    (folders / "input" / "bomb.png").write_bytes(
        PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"iTXt", body) + _chunk(b"IEND", b""))
    with pytest.raises(NodeError, match='field "image": cannot read'):
        registry.get("LoadImage")().run(_context(folders), image="bomb.png")


def test_subgraphs_that_multiply_inside_each_other_are_refused_before_they_fill_the_memory(registry):
    """Twelve instances of a subgraph that holds twelve of the next, ten levels down, would be
    12**10 nodes: refused at the node limit, naming the instance, in well under a second."""
    import time

    def definition(index: int) -> dict:
        inner = f"sub{index + 1}" if index < 9 else "CLIPTextEncode"
        nodes = [{"id": n, "type": inner, "pos": [n * 10, 0], "inputs": [], "outputs": [],
                  "widgets_values": ["x"] if inner == "CLIPTextEncode" else []} for n in range(1, 13)]
        return {"id": f"sub{index}", "name": f"level {index}", "nodes": nodes, "links": [], "inputs": [], "outputs": []}

    doc = {"version": 1, "state": {}, "links": [],
           "nodes": [{"id": 1, "type": "sub0", "pos": [0, 0], "inputs": [], "outputs": []}],
           "definitions": {"subgraphs": [definition(i) for i in range(10)]}}
    start = time.perf_counter()
    with pytest.raises(WorkflowError, match=r"ComfyUI node 1(:\d+)+ \(subgraph 'level \d'.*more than 5000 nodes"):
        workflow_from_dict(doc, registry)
    assert time.perf_counter() - start < 5
