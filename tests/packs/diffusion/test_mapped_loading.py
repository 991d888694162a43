"""Single files are memory-mapped while loading: malformed headers are refused, the loaded
model owns its weights (the file can change afterwards), and the file's pages leave the process."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from nodeflow import NodeError, RunContext, RunSettings  # noqa: E402
from nodes.diffusion.impl import loading as _loading  # noqa: E402
from nodes.diffusion.impl.ldm import CheckpointError  # noqa: E402
from nodes.diffusion.impl.mapped import MappedFile  # noqa: E402
from nodes.diffusion.loaders import Checkpoint  # noqa: E402
from tests.support.tiny_models import save_single_file, shared_tiny_sd  # noqa: E402


@pytest.fixture(scope="module")
def single_file(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("mapped")
    return save_single_file(shared_tiny_sd(tmp_path_factory), folder / "tiny.safetensors")


def _load(folder: Path, name: str):
    ctx = RunContext(settings=RunSettings(model_folders={"checkpoints": [str(folder)]}))
    return Checkpoint().run(ctx, checkpoint=name, dtype="auto", prediction="auto")


def _file(path: Path, header: dict, data: bytes = b"") -> Path:
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


@pytest.mark.parametrize("header, data, reason", [
    ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8, "do not fit the file"),
    ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}, b"\0" * 16, "do not fit the file or its shape"),
    ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, "shape"),
    ({"a": {"dtype": "X99", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, "unsupported dtype"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}}, b"\0" * 8, "do not fit"),
    ({"a": [1, 2]}, b"", ""),
])
def test_a_malformed_header_is_an_error_naming_the_file_and_tensor(tmp_path, header, data, reason):
    _file(tmp_path / "bad.safetensors", header, data)
    with pytest.raises(NodeError, match=f"field \"checkpoint\": bad.safetensors: tensor 'a' is malformed.*{reason}"):
        _load(tmp_path, "bad.safetensors")


def test_a_header_longer_than_the_file_is_refused(tmp_path):
    (tmp_path / "short.safetensors").write_bytes(struct.pack("<Q", 10_000) + b"{}")
    with pytest.raises(NodeError, match="short.safetensors is not a readable .safetensors file"):
        _load(tmp_path, "short.safetensors")


def test_mapped_tensors_equal_what_safetensors_reads(single_file):
    from safetensors.torch import load_file

    fd = os.open(single_file, os.O_RDONLY)
    try:
        mapped = MappedFile(fd, single_file.name)
    finally:
        os.close(fd)
    expected = load_file(single_file)
    assert mapped.tensors.keys() == expected.keys()
    for key, value in expected.items():
        assert mapped.tensors[key].dtype == value.dtype and torch.equal(mapped.tensors[key], value), key


def test_the_loaded_model_owns_its_weights_when_the_file_changes(single_file, tmp_path):
    shutil.copy(single_file, tmp_path / "tiny.safetensors")
    out = _load(tmp_path, "tiny.safetensors")
    unet = out["model"].unet
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    # Overwrite every weight byte in place (same size, same header): a model still backed by
    # the file's pages would change with it.
    path = tmp_path / "tiny.safetensors"
    header_len = struct.unpack("<Q", path.read_bytes()[:8])[0]
    with open(path, "r+b") as handle:
        handle.seek(8 + header_len)
        handle.write(b"\x7f" * (path.stat().st_size - 8 - header_len))
    for key, value in unet.state_dict().items():
        assert torch.equal(value, before[key]), key
    with torch.no_grad():  # and its weights can be changed in place (LoRA merges do)
        next(unet.parameters()).add_(1.0)


def test_loading_in_the_files_dtype_still_copies(single_file, tmp_path):
    # The tiny file is fp32: loading as fp32 is where a view could slip through.
    state = _loading.read_state_dict(single_file)
    assert next(iter(state.values())).dtype == torch.float32
    loaded = _loading.load_single_file(single_file, torch.float32, "cpu")
    fd = os.open(single_file, os.O_RDONLY)
    try:
        mapped = MappedFile(fd, single_file.name)
    finally:
        os.close(fd)
    pointers = {t.untyped_storage().data_ptr() for t in mapped.tensors.values()}
    for model in (loaded.unet, loaded.vae, *loaded.text_encoders):
        for tensor in model.state_dict().values():
            assert not mapped.holds(tensor)
            assert tensor.untyped_storage().data_ptr() not in pointers


def test_a_non_checkpoint_file_of_the_right_format_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(CheckpointError, match="not a Stable Diffusion checkpoint"):
        _loading.load_single_file(tmp_path / "x.safetensors", torch.float32, "cpu")
