"""Files under attack while they are read or written: a symlink swapped in after the check,
a FIFO where an image should be, a crash mid-write. Reads go through one descriptor that
was checked; writes through one atomic writer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from nodeflow import NodeError, PathRefused, RunContext, RunSettings, open_inside
from nodeflow.files.atomic import write_atomically
from nodeflow.model.registry import default_registry
from tests.support import ROOT


@pytest.fixture(scope="module")
def registry():
    return default_registry()


@pytest.fixture
def folders(tmp_path):
    for name in ("input", "output", "outside"):
        (tmp_path / name).mkdir()
    from PIL import Image

    Image.new("RGB", (4, 4), "red").save(tmp_path / "input" / "red.png")
    Image.new("RGB", (4, 4), "blue").save(tmp_path / "outside" / "secret.png")
    return tmp_path


def _ctx(folders: Path) -> RunContext:
    return RunContext(node_id="1", output_dir=folders / "output", input_dir=folders / "input", settings=RunSettings())


def test_a_symlink_swapped_in_after_the_check_is_never_read(folders):
    """Race the open against a loop that swaps the checked name between a file and a
    symlink out: every open yields the inside file or a refusal, never the outside one."""
    inside, outside = folders / "input" / "red.png", folders / "outside" / "secret.png"
    secret = outside.read_bytes()
    real = folders / "input" / "real.png"
    real.write_bytes(inside.read_bytes())
    name = folders / "input" / "swap.png"
    stop = threading.Event()

    def swapper():
        while not stop.is_set():
            for target in (real, outside):
                tmp = folders / "input" / ".swap"
                try:
                    tmp.symlink_to(target)
                    os.replace(tmp, name)
                except OSError:
                    pass

    thread = threading.Thread(target=swapper, daemon=True)
    thread.start()
    read_outside = opened = 0
    try:
        for _ in range(3000):
            try:
                fd = open_inside(name, [folders / "input"], "image")
            except (PathRefused, FileNotFoundError):
                continue
            with os.fdopen(fd, "rb") as file:
                data = file.read()
            opened += 1
            read_outside += data == secret
    finally:
        stop.set()
        thread.join()
    assert read_outside == 0
    assert opened > 0  # the race was run, not refused wholesale


def test_a_fifo_in_the_input_folder_is_refused_not_waited_on(registry, folders):
    os.mkfifo(folders / "input" / "pipe.png")
    with pytest.raises(NodeError, match="not a regular file") as caught:
        registry.get("LoadImage")().run(_ctx(folders), image="pipe.png")
    assert caught.value.field == "image"


def test_an_over_long_image_name_is_a_field_error(registry, folders):
    with pytest.raises(NodeError) as caught:
        registry.get("LoadImage")().run(_ctx(folders), image="x" * 300 + ".png")
    assert caught.value.field == "image" and "too long" in str(caught.value).lower()


def test_a_loaded_image_is_read_through_the_checked_descriptor(registry, folders):
    image, _mask = registry.get("LoadImage")().run(_ctx(folders), image="red.png")
    assert tuple(image.shape) == (1, 4, 4, 3) and float(image[0, 0, 0, 0]) == 1.0


def test_save_image_never_leaves_a_torn_png_and_numbers_on(registry, folders, monkeypatch):
    import torch

    save = registry.get("SaveImage")()
    ctx = _ctx(folders)
    save.run(ctx, images=torch.zeros(1, 8, 8, 3), filename_prefix="p", embed_workflow=False)

    def full_disk(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(NodeError, match="No space left"):
        save.run(ctx, images=torch.zeros(1, 8, 8, 3), filename_prefix="p", embed_workflow=False)
    monkeypatch.undo()
    assert sorted(p.name for p in (folders / "output").iterdir()) == ["p_00001.png"]  # nothing torn, no temp
    save.run(ctx, images=torch.zeros(1, 8, 8, 3), filename_prefix="p", embed_workflow=False)
    assert sorted(p.name for p in (folders / "output").iterdir()) == ["p_00001.png", "p_00002.png"]


def test_save_image_never_replaces_a_name_that_appears(registry, folders):
    import torch

    planted = folders / "output" / "p_00001.png"
    planted.symlink_to(folders / "outside" / "secret.png")
    before = (folders / "outside" / "secret.png").read_bytes()
    registry.get("SaveImage")().run(_ctx(folders), images=torch.zeros(1, 8, 8, 3), filename_prefix="p",
                                    embed_workflow=False)
    assert (folders / "outside" / "secret.png").read_bytes() == before
    assert (folders / "output" / "p_00002.png").is_file()


def test_temporaries_left_by_kill_9_are_cleaned_on_the_next_save(tmp_path):
    target = tmp_path / "flow.json"
    code = (
        "import os, sys\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "import nodeflow.files.atomic as atomic\n"
        "def hang(fd): os.kill(os.getpid(), 9)\n"
        "os.fsync = hang\n"
        "atomic.write_atomically(sys.argv[1], b'new' * 1000)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(target), str(ROOT)], capture_output=True)
    assert result.returncode == -signal.SIGKILL
    assert len(list(tmp_path.glob(".flow.json.*.tmp"))) == 1  # what kill -9 leaves
    write_atomically(target, b"{}")
    assert target.read_bytes() == b"{}"
    assert list(tmp_path.glob(".flow.json.*.tmp")) == []


def test_a_tiny_png_that_decodes_to_gigabytes_is_refused_before_decoding(registry, folders):
    from PIL import Image

    Image.new("L", (8192, 8192)).save(folders / "input" / "bomb.png", optimize=True)
    assert (folders / "input" / "bomb.png").stat().st_size < 300_000
    ctx = RunContext(node_id="1", output_dir=folders / "output", input_dir=folders / "input",
                     settings=RunSettings(memory_budget=512 * 2**20))
    with pytest.raises(NodeError, match=r"decoding 'bomb.png' of 8192x8192 needs about 1\.2 GB") as caught:
        registry.get("LoadImage")().run(ctx, image="bomb.png")
    assert caught.value.field == "image"


def test_a_position_that_json_cannot_hold_is_refused_before_the_run(registry, folders):
    import math

    from nodeflow.model.graph import Graph
    from nodeflow.model.validation import validate

    graph = Graph(registry)
    node = graph.add_node("LoadImage", {"image": "red.png"}).id
    graph.move(node, (math.inf, 0))
    assert [p.field for p in validate(graph) if p.node_id == node] == ["pos"]
