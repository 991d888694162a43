"""A node that reads a file is re-run when the file changes on disk under the same name."""

import os
from pathlib import Path

from nodeflow import Node, Output, RunContext, RunSettings, STRING, String
from nodeflow.engine.executor import Executor
from nodeflow.host.filestamp import stamp
from nodeflow.model.graph import Graph
from tests.support.testpack import Sink, make_registry, reset

READS: list[str] = []


class ReadText(Node):
    type = "ReadText"
    path = String("")
    outputs = (Output("text", STRING),)

    @classmethod
    def fingerprint(cls, values, ctx):
        return stamp(values["path"])

    def run(self, ctx, path):
        READS.append(path)
        return Path(path).read_text()


class BrokenStamp(ReadText):
    type = "BrokenStamp"

    @classmethod
    def fingerprint(cls, values, ctx):
        raise RuntimeError("plug-in bug")


def _graph(node_type: str, path: Path) -> Graph:
    registry = make_registry()
    registry.register(ReadText)
    registry.register(BrokenStamp)
    graph = Graph(registry)
    graph.add_node(node_type, {"path": str(path)}, node_id="1")
    graph.add_node("Sink", node_id="2")
    graph.connect("1", "text", "2", "value")
    return graph


def test_changed_file_is_read_again_unchanged_file_is_not(tmp_path):
    reset()
    READS.clear()
    source = tmp_path / "prompt.txt"
    source.write_text("a red circle")
    graph = _graph("ReadText", source)
    executor = Executor(graph.registry, device="cpu")

    assert executor.run(graph).executed == ("1", "2")
    assert executor.run(graph).executed == ()  # nothing changed: all from the cache

    source.write_text("a blue square, longer")
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))
    result = executor.run(graph)
    assert result.executed == ("1", "2")
    assert Sink.received[-1] == "a blue square, longer"


def test_folder_stamp_changes_when_any_file_in_it_changes(tmp_path):
    (tmp_path / "unet").mkdir()
    weights = tmp_path / "unet" / "weights.bin"
    weights.write_bytes(b"1234")
    before = stamp(tmp_path)
    weights.write_bytes(b"12345")
    assert stamp(tmp_path) != before
    assert stamp(tmp_path / "nothing-here") == "missing"


def test_a_file_replaced_by_one_of_the_same_size_and_time_gets_a_new_stamp(tmp_path):
    """``cp -p`` (or an archive, or rsync -t) carries the old modification time over: a model
    swapped that way must not be served from the cache as the old one."""
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"old weights")
    times = (model.stat().st_atime_ns, model.stat().st_mtime_ns)
    before = stamp(model)
    replacement = tmp_path / "download.part"
    replacement.write_bytes(b"new weights")  # same size
    os.utime(replacement, ns=times)
    os.replace(replacement, model)
    assert (model.stat().st_size, model.stat().st_mtime_ns) == (len(b"old weights"), times[1])
    assert stamp(model) != before
    assert stamp(model) == stamp(model)  # reading does not change it


def test_a_failing_fingerprint_hook_does_not_stop_the_run(tmp_path):
    reset()
    source = tmp_path / "t.txt"
    source.write_text("x")
    graph = _graph("BrokenStamp", source)
    executor = Executor(graph.registry, device="cpu")
    assert executor.run(graph).status == "ok"


def test_checkpoint_signature_follows_the_file_on_disk(tmp_path):
    from nodes.diffusion.loaders import Checkpoint

    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"first")
    ctx = RunContext(settings=RunSettings(model_folders={"checkpoints": [str(tmp_path)]}))
    values = {"checkpoint": "model.safetensors", "dtype": "auto", "prediction": "auto"}
    before = Checkpoint.fingerprint(values, ctx)
    assert before == Checkpoint.fingerprint(values, ctx)
    weights.write_bytes(b"second, replaced")
    assert Checkpoint.fingerprint(values, ctx) != before
    # a value the folders do not hold has no stamp; the run reports it
    assert Checkpoint.fingerprint({**values, "checkpoint": "../escape.safetensors"}, ctx) is None


def test_load_image_signature_follows_the_file_in_the_input_folder(tmp_path):
    from PIL import Image

    from nodes.diffusion.images import LoadImage

    Image.new("RGB", (4, 4), "red").save(tmp_path / "in.png")
    ctx = RunContext(input_dir=tmp_path)
    before = LoadImage.fingerprint({"image": "in.png"}, ctx)
    Image.new("RGB", (8, 8), "blue").save(tmp_path / "in.png")
    assert LoadImage.fingerprint({"image": "in.png"}, ctx) != before
    assert LoadImage.fingerprint({"image": "../outside.png"}, ctx) is None
