"""The model loaders ask the kernel to read a model's weights ahead while torch imports;
the hint touches only the model's own regular weights files, never follows a symlink out
of the folder, and skips a file too large for the memory available."""

from __future__ import annotations

import os

import pytest

from nodes.diffusion.impl import prefetch


def _diffusers_folder(root):
    (root / "unet").mkdir(parents=True)
    (root / "vae").mkdir()
    (root / "model_index.json").write_text("{}")
    (root / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"u" * 4096)
    (root / "unet" / "config.json").write_text("{}")
    (root / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"v" * 4096)
    return root


def test_a_folder_gives_its_weights_files_and_nothing_else(tmp_path):
    folder = _diffusers_folder(tmp_path / "model")
    found = sorted(p.relative_to(folder).as_posix() for p in prefetch._weight_files(folder))
    assert found == ["unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors"]


def test_symlinks_out_of_the_folder_are_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.safetensors").write_bytes(b"s" * 4096)
    folder = _diffusers_folder(tmp_path / "model")
    (folder / "text_encoder").symlink_to(outside, target_is_directory=True)
    (folder / "vae" / "linked.safetensors").symlink_to(outside / "secret.safetensors")
    assert all("secret" not in str(p) for p in prefetch._weight_files(folder))
    assert prefetch._weight_files(folder / "vae" / "linked.safetensors") == []


@pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="no posix_fadvise on this platform")
def test_the_hint_runs_in_the_background_and_skips_files_over_the_budget(tmp_path, monkeypatch):
    hinted = []
    real = os.posix_fadvise
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, offset, length, advice: (hinted.append(length), real(fd, offset, length, advice)))
    small, large = tmp_path / "small.safetensors", tmp_path / "large.safetensors"
    small.write_bytes(b"a" * 4096)
    large.write_bytes(b"b" * 8192)
    monkeypatch.setattr(prefetch, "_available_bytes", lambda: 2 * 4096)  # half of it: 4 KiB
    for path in (small, large):
        thread = prefetch.read_ahead(path)
        thread.join(timeout=10)
        assert not thread.is_alive() and thread.daemon
    assert hinted == [4096]


def test_a_missing_path_is_no_error(tmp_path):
    thread = prefetch.read_ahead(tmp_path / "gone.safetensors")
    if thread is not None:
        thread.join(timeout=10)
    assert prefetch._weight_files(tmp_path / "gone.safetensors") == []
