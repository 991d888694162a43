"""The memory manager for the device, through the real executor and the bundled model:
the budget is read from the device; a run whose estimated peak cannot fit is refused before
anything loads, naming the node and field that set the size; models the next node does
not read are moved off a device that is short of memory and moved back when a node reads
them, and the images are the same as without moving; fp16 models keep an fp32 VAE.

On this CPU-only machine the device is simulated (``tests/support/devices.py``: a fixed
memory size, and offloading that really leaves meta tensors in a model's place); on a
machine with a CUDA GPU the same tests run on ``cuda`` with the pack's real backend.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from PIL import Image  # noqa: E402

from nodeflow.engine.device import device_budget  # noqa: E402
from nodeflow.engine.executor import Executor  # noqa: E402
from nodeflow.engine.residency import modules_in  # noqa: E402
from nodeflow.files.open import workflow_from_dict  # noqa: E402
from nodeflow.model.devices import machine_memory  # noqa: E402
from nodeflow.model.memory import format_size  # noqa: E402
from nodeflow.model.registry import default_registry  # noqa: E402
from nodes.diffusion.devices import TorchDevices  # noqa: E402
from nodes.diffusion.impl.memory import sampler_bytes, unet_shape, vae_bytes  # noqa: E402
from tests.support import ROOT, host_context  # noqa: E402
from tests.support.devices import SimulatedDevice, device_backend  # noqa: E402

GB = 2**30
SIDE = 96  # pixels: big enough that a sampler's working memory pushes the models over the budget


def _txt2img(width: int = SIDE, height: int = SIDE, batch: int = 1, prompt: str | None = None) -> dict:
    document = json.loads((ROOT / "workflows" / "txt2img.json").read_text())
    for node in document["nodes"]:
        if node["type"] == "Checkpoint":
            node["values"]["dtype"] = "fp32"  # the same bytes on a GPU as here
        if node["type"] == "EmptyLatent":
            node["values"].update(width=width, height=height, batch=batch)
        if node["type"] == "Sampler":
            node["values"]["steps"] = 3
        if node["type"] == "TextEncoder" and prompt is not None and node["id"] == "2":
            node["values"]["text"] = prompt
    return document


def _run(executor: Executor, document: dict, out) -> object:
    registry = executor.registry
    result = executor.run(workflow_from_dict(document, registry).graph, output_dir=out, settings=host_context().settings)
    assert result.ok, result.error
    return result


def _pixels(result) -> np.ndarray:
    return np.asarray(Image.open(result.files[0]))


@pytest.fixture(scope="module")
def sizes():
    """Bytes of the bundled model's parts on the device, and the working memory of the
    sampler and decode at SIDE pixels (the pack's own figures)."""
    backend, device = device_backend(1)
    outputs = default_registry().get("Checkpoint")().run(
        host_context(device=device), checkpoint="shapes", dtype="fp32", prediction="auto")
    part = {name: sum(backend.bytes_on(m, device) for m in modules_in([value])) for name, value in outputs.items()}
    factor = outputs["vae"].family.vae_scale_factor
    unet = unet_shape(outputs["model"].unet.config)
    vae_width = outputs["vae"].vae.config.block_out_channels[0]
    side = SIDE // factor
    return {**part, "sample": sampler_bytes(1, 2, side, side, unet, 4), "decode": vae_bytes(1, SIDE, SIDE, vae_width, 4)}


def test_models_offloaded_and_restored_give_the_same_images(sizes, tmp_path):
    registry = default_registry()
    # Room for the whole checkpoint as it loads, not for it plus the sampler's working memory.
    budget = sizes["model"] + sizes["vae"] + sizes["sample"] - 1
    assert budget >= sizes["model"] + sizes["clip"] + sizes["vae"]
    backend, device = device_backend(int(budget / 0.9) + 1 if torch.cuda.is_available() else int(budget / 0.75) + 1)
    tight = Executor(registry, device=device, devices=backend)
    roomy = Executor(registry, device=device)

    first = _run(tight, _txt2img(), tmp_path / "tight")
    assert first.files
    away = backend.offload_device(device)
    # Sampling: the text and vision encoders (never read again) left first, then the VAE
    # (read by the decode after it); decoding: the VAE came back and the UNet (done) left.
    assert backend.moves == [("CLIPTextModel", away), ("CLIPVisionModelWithProjection", away), ("AutoencoderKL", away),
                             ("AutoencoderKL", device), ("UNet2DConditionModel", away)]
    assert np.array_equal(_pixels(first), _pixels(_run(roomy, _txt2img(), tmp_path / "roomy")))

    # Another prompt: the checkpoint comes from the cache with its text encoder offloaded;
    # encoding brings it back, and the image is again the one an unconstrained run makes.
    backend.moves.clear()
    second = _run(tight, _txt2img(prompt="a red circle"), tmp_path / "tight2")
    assert "1" in second.cached and ("CLIPTextModel", device) in backend.moves
    assert np.array_equal(_pixels(second), _pixels(_run(roomy, _txt2img(prompt="a red circle"), tmp_path / "roomy2")))
    stats = tight.residency().stats()
    assert stats.offloads >= 4 and stats.restores >= 2 and stats.offloaded_bytes >= sizes["clip"] + sizes["vae"]


def test_on_a_device_with_room_nothing_moves(tmp_path):
    backend, device = device_backend(64 * GB)
    _run(Executor(default_registry(), device=device, devices=backend), _txt2img(), tmp_path)
    assert backend.moves == []


def test_the_budget_is_read_from_the_device():
    registry = default_registry()
    simulated = Executor(registry, device="cpu", devices=SimulatedDevice(8 * GB))
    assert simulated.device_memory().total_bytes == 8 * GB
    assert simulated.residency().budget_bytes == int(8 * GB * 0.75)

    real = TorchDevices()
    cpu = real.memory("cpu")
    assert cpu.total_bytes == machine_memory() and real.offload_device("cpu") is None
    executor = Executor(registry, device="cpu")
    assert executor.devices.memory("cpu") == cpu or executor.device_memory().total_bytes == cpu.total_bytes
    assert executor.cache.budget_bytes == cpu.total_bytes // 2  # half the RAM the CPU's entries live in
    assert not executor.residency().active  # nowhere cheaper than the CPU to offload to
    if torch.cuda.is_available():
        gpu = real.memory("cuda")
        assert gpu.total_bytes == torch.cuda.mem_get_info()[1] and real.offload_device("cuda") == "cpu"
        assert Executor(registry, device="cuda").residency().budget_bytes == device_budget(gpu)


@pytest.mark.parametrize("width, height, batch, field", [(2048, 2048, 16, "batch"), (4096, 2048, 1, "width")])
def test_a_run_that_cannot_fit_is_refused_before_anything_loads(width, height, batch, field, tmp_path):
    backend, device = device_backend(4 * GB)
    executor = Executor(default_registry(), device=device, devices=backend)
    document = _txt2img(width, height, batch)
    result = executor.run(workflow_from_dict(document, executor.registry).graph, output_dir=tmp_path,
                          settings=host_context().settings)
    assert result.status == "invalid" and result.executed == () and list(tmp_path.iterdir()) == []
    (problem,) = result.problems
    assert (problem.node_id, problem.node_type, problem.field) == ("4", "EmptyLatent", field)
    assert problem.code == "over_memory_budget"
    budget = format_size(device_budget(backend.memory(device)))  # 4 GB x 0.75 here, x 0.9 on a GPU
    assert "Sampler" in problem.message and f"budget of {budget} on {device}" in problem.message


def test_a_model_larger_than_the_device_is_refused_on_the_loader(sizes, tmp_path):
    backend, device = device_backend(sizes["model"])  # the UNet alone would fill it
    executor = Executor(default_registry(), device=device, devices=backend)
    result = executor.run(workflow_from_dict(_txt2img(32, 32), executor.registry).graph, output_dir=tmp_path,
                          settings=host_context().settings)
    assert result.status == "invalid" and result.executed == ()
    assert [(p.node_id, p.field) for p in result.problems] == [("1", "dtype")]  # fp32: fp16 would halve it
    assert "lower precision" in result.problems[0].message


def test_the_pixel_limit_is_found_by_validation_and_not_reported_twice(tmp_path):
    backend, device = device_backend(4 * GB)
    executor = Executor(default_registry(), device=device, devices=backend)
    result = executor.run(workflow_from_dict(_txt2img(8192, 8192, 64), executor.registry).graph, output_dir=tmp_path,
                          settings=host_context().settings)
    assert result.status == "invalid" and result.executed == ()
    assert [(p.node_id, p.field) for p in result.problems] == [("4", "batch")]
    assert result.problems[0].code != "over_memory_budget" and "pixels" in result.problems[0].message


def test_fp16_weights_keep_an_fp32_vae_unless_told_otherwise():
    from nodes.diffusion.impl.loading import resolve_dtype

    assert resolve_dtype("auto", "cuda") == torch.float16 and resolve_dtype("auto", "cpu") == torch.float32
    checkpoint = default_registry().get("Checkpoint")()
    ctx = host_context()
    upcast = checkpoint.run(ctx, checkpoint="shapes", dtype="fp16", prediction="auto", vae_dtype="auto")
    assert upcast["model"].unet.dtype == torch.float16 and upcast["vae"].vae.dtype == torch.float32
    chosen = checkpoint.run(ctx, checkpoint="shapes", dtype="fp16", prediction="auto", vae_dtype="fp16")
    assert chosen["vae"].vae.dtype == torch.float16


# ------------------------------------------------------------------------- which devices exist
def test_torch_tells_which_devices_exist():
    from nodeflow.engine.device import DeviceError, resolve_device
    from nodes.diffusion.devices import TorchDevices

    devices = TorchDevices()
    assert resolve_device("auto", devices) == "cpu"  # this machine has the CPU build of torch
    with pytest.raises(DeviceError, match="not available"):
        resolve_device("cuda", devices)
    with pytest.raises(DeviceError, match="not available"):
        resolve_device("mps", devices)


def test_torch_tells_which_gpus_exist(monkeypatch):
    import torch

    from nodeflow.engine.device import DeviceError, resolve_device
    from nodes.diffusion.devices import TorchDevices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr("nodes.diffusion.devices._may_have_accelerator", lambda: True)  # the driver's files
    assert resolve_device("auto", TorchDevices()) == "cuda"
    assert resolve_device("cuda:1", TorchDevices()) == "cuda:1"
    with pytest.raises(DeviceError, match="2 CUDA GPU"):
        resolve_device("cuda:2", TorchDevices())


def test_the_cpu_is_resolved_without_importing_torch():
    """`nodeflow validate` resolves the device to estimate against; importing torch would cost it seconds."""
    import os
    import subprocess
    import sys

    code = ("import sys; from nodeflow.engine.device import resolve_device; "
            "from nodes.diffusion.devices import TorchDevices, _may_have_accelerator; "
            "assert resolve_device('cpu', TorchDevices()) == 'cpu'; "
            "assert _may_have_accelerator() or resolve_device('auto', TorchDevices()) == 'cpu'; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr


def test_without_torch_the_device_is_the_cpu(monkeypatch):
    import sys

    from nodeflow.engine.device import DeviceError, resolve_device
    from nodes.diffusion.devices import TorchDevices

    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    assert resolve_device("auto", TorchDevices()) == "cpu"
    with pytest.raises(DeviceError, match="PyTorch"):
        resolve_device("cuda", TorchDevices())
