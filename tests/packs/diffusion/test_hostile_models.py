"""A model folder is untrusted input like a workflow: whatever its shard index, component
folders, symlinks and JSON files say, a loader reads only inside the model folders, and
every malformed file is an error that names it."""

from __future__ import annotations

import json
import pickle
import resource
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from nodeflow import NodeError, RunContext, RunSettings  # noqa: E402
from nodeflow.model.registry import default_registry  # noqa: E402
from tests.support import ROOT  # noqa: E402

SHAPES = ROOT / "nodes" / "bundled" / "models" / "shapes"


@pytest.fixture
def models(tmp_path):
    """models/shapes (a copy of the bundled model), and an outside/ folder beside models/."""
    (tmp_path / "models").mkdir()
    shutil.copytree(SHAPES, tmp_path / "models" / "shapes")
    (tmp_path / "outside").mkdir()
    return tmp_path


def _load(models: Path, name: str = "shapes") -> None:
    ctx = RunContext(settings=RunSettings(model_folders={"checkpoints": [models / "models"]}))
    default_registry().get("Checkpoint")().run(ctx, checkpoint=name, dtype="fp32", prediction="auto")


def _refusal(models: Path) -> str:
    with pytest.raises(NodeError) as caught:
        _load(models)
    assert caught.value.field == "checkpoint"
    return str(caught.value)


def _shard(models: Path, target: str) -> None:
    """Replace the VAE's weights by a shard index naming ``target``."""
    vae = models / "models" / "shapes" / "vae"
    weights = vae / "diffusion_pytorch_model.safetensors"
    shutil.copy(weights, models / "outside" / "shard.safetensors")
    names = json.loads(json.dumps(list(__import__("safetensors.torch").torch.load_file(weights))))
    weights.unlink()
    index = {"weight_map": {name: target for name in names}}
    (vae / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))


@pytest.mark.parametrize("kind", ["absolute", "dotdot"])
def test_a_shard_index_cannot_name_weights_outside(models, kind):
    outside = models / "outside" / "shard.safetensors"
    target = str(outside) if kind == "absolute" else "../../../outside/shard.safetensors"
    _shard(models, target)
    message = _refusal(models)
    assert "outside the model folders" in message
    # The answer is the same whether or not the outside file exists.
    outside.unlink()
    assert _refusal(models) == message


def test_a_shard_index_inside_the_folder_loads(models):
    vae = models / "models" / "shapes" / "vae"
    _shard(models, "part.safetensors")
    shutil.move(models / "outside" / "shard.safetensors", vae / "part.safetensors")
    _load(models)


@pytest.mark.parametrize("component", ["vae", "unet", "text_encoder", "tokenizer"])
def test_a_component_folder_symlinked_out_is_refused(models, component):
    folder = models / "models" / "shapes" / component
    shutil.move(folder, models / "outside" / component)
    folder.symlink_to(models / "outside" / component, target_is_directory=True)
    message = _refusal(models)
    assert "outside the model folders" in message or "symlinked folder" in message


@pytest.mark.parametrize("relative", ["text_encoder/config.json", "unet/config.json", "tokenizer/vocab.json",
                                      "model_index.json", "scheduler/scheduler_config.json"])
def test_a_json_file_symlinked_out_is_refused(models, relative):
    file = models / "models" / "shapes" / relative
    shutil.move(file, models / "outside" / file.name)
    file.symlink_to(models / "outside" / file.name)
    assert "outside the model folders" in _refusal(models)


@pytest.mark.parametrize("relative, content", [
    ("unet/config.json", "{not json"),
    ("text_encoder/config.json", "[1, 2]"),
    ("vae/config.json", '{"block_out_channels": "many"}'),
    ("tokenizer/vocab.json", '{"a": '),
    ("model_index.json", '{"text_encoder": 5}'),
    ("unet/config.json", '{"in_channels": ' + "9" * 5000 + "}"),
])
def test_a_malformed_json_file_is_an_error_naming_it(models, relative, content):
    (models / "models" / "shapes" / relative).write_text(content)
    message = _refusal(models)
    assert Path(relative).name in message or relative.split("/")[0] in message


def test_a_bogus_shard_index_names_the_index(models):
    vae = models / "models" / "shapes" / "vae"
    (vae / "diffusion_pytorch_model.safetensors").unlink()
    (vae / "diffusion_pytorch_model.safetensors.index.json").write_text('{"weight_map": [1]}')
    assert "diffusion_pytorch_model.safetensors.index.json" in _refusal(models)


def test_a_huge_vocabulary_in_config_json_allocates_nothing(models):
    config_file = models / "models" / "shapes" / "text_encoder" / "config.json"
    config = json.loads(config_file.read_text())
    config["vocab_size"] = 30_000_000  # 15 GB of embedding if it were built before the check
    config_file.write_text(json.dumps(config))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    message = _refusal(models)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert "do not fit" in message and grown_mb < 1000


def test_a_pickled_text_encoder_is_refused_with_our_message(models):
    folder = models / "models" / "shapes" / "text_encoder"
    (folder / "model.safetensors").unlink()

    class Payload:
        def __reduce__(self):
            return (print, ("payload ran",))

    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"w": Payload()}))
    message = _refusal(models)
    assert "never done" in message and "weights_only" not in message


@pytest.mark.parametrize("relative, key, value", [
    ("unet/config.json", "layers_per_block", 1_000_000),      # a million modules, even on meta
    ("vae/config.json", "block_out_channels", [32] * 100_000),
    ("text_encoder/config.json", "num_hidden_layers", 10**6),
    ("scheduler/scheduler_config.json", "num_train_timesteps", 10**9),  # an 8 GB schedule
])
def test_config_counts_that_would_take_hours_or_gigabytes_are_refused(models, relative, key, value):
    file = models / "models" / "shapes" / relative
    config = json.loads(file.read_text())
    config[key] = value
    file.write_text(json.dumps(config))
    assert key in _refusal(models)


def test_a_tokenizer_file_swapped_out_after_the_check_is_never_read(models, monkeypatch):
    # The tokenizer library opens its files by name: it is handed a copy made through the
    # checked descriptors, so a vocabulary replaced by a symlink out at that moment (a race
    # with whoever can write the model folder) is not what it reads.
    from transformers import CLIPTokenizer

    outside = models / "outside" / "vocab.json"
    outside.write_text(json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1, "secret</w>": 2}))
    vocab = models / "models" / "shapes" / "tokenizer" / "vocab.json"
    read = CLIPTokenizer.from_pretrained.__func__
    seen = []

    def swapped_then_read(cls, folder, *args, **kwargs):
        vocab.unlink()
        vocab.symlink_to(outside)
        tokenizer = read(cls, folder, *args, **kwargs)
        seen.append(tokenizer)
        return tokenizer

    monkeypatch.setattr(CLIPTokenizer, "from_pretrained", classmethod(swapped_then_read))
    _load(models)
    (tokenizer,) = seen
    assert "secret</w>" not in tokenizer.get_vocab() and len(tokenizer.get_vocab()) > 3
