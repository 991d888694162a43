"""Which device a run uses.

``resolve_device(name, devices)`` checks the name's form here and asks the installed
packs' :class:`~nodeflow.model.devices.DeviceBackend` whether the device is there:
``"auto"`` picks the best one (CUDA, then Apple's MPS, then the CPU, as the diffusion
pack's backend tells with torch), and asking for one this machine lacks fails before
anything runs. The core itself never imports torch; with no pack that drives GPUs only
the CPU exists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nodeflow.model.devices import DEVICE_NAME, DeviceBackend, DeviceError, HostMemory

if TYPE_CHECKING:
    from nodeflow.model.devices import DeviceMemory

__all__ = ["DeviceError", "resolve_device", "is_out_of_memory", "release_device_memory", "device_budget"]


def resolve_device(name: str = "auto", devices: DeviceBackend | None = None) -> str:
    """A concrete, available device name for ``name`` ("auto", "cpu", "cuda[:N]", "mps"),
    told by ``devices`` (default: the CPU alone)."""
    name = (name or "auto").strip().lower()
    if name != "auto" and not DEVICE_NAME.match(name):
        raise DeviceError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    if name.startswith("cpu:") and name != "cpu:0":
        raise DeviceError(f"unknown device {name!r}; the CPU is just 'cpu'")
    if name == "cpu:0":
        name = "cpu"
    return (devices if devices is not None else HostMemory()).resolve(name)


def is_out_of_memory(error: BaseException) -> bool:
    """Is ``error`` the device (or the host) running out of memory? Recognised by name and
    message, so the core needs no torch: ``torch.OutOfMemoryError`` (CUDA), MPS's and the
    CPU allocator's RuntimeErrors, Python's MemoryError."""
    if isinstance(error, MemoryError):
        return True
    if type(error).__name__ == "OutOfMemoryError":
        return True
    text = str(error).lower()
    phrases = ("out of memory", "not enough memory", "can't allocate memory", "cannot allocate memory")
    return isinstance(error, RuntimeError) and any(phrase in text for phrase in phrases)


def release_device_memory(device: str) -> None:
    """Give freed blocks back after dropping cached values: collect garbage, and empty the
    caching allocator of a CUDA or MPS device (torch imported only if it already is)."""
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is None:
        return
    try:
        if str(device).startswith("cuda") and torch.cuda.is_available():
            torch.cuda.empty_cache()
        elif str(device).startswith("mps") and hasattr(torch, "mps"):
            torch.mps.empty_cache()
    except (RuntimeError, AttributeError):  # a device in a bad state: the retry will tell
        pass


DEVICE_FRACTION = 0.9  # of a GPU's memory, for models and working memory; the rest: the driver's context
RAM_FRACTION = 0.75  # of the CPU's, as nodeflow.model.memory's default budget


def device_budget(memory: "DeviceMemory | None") -> int | None:
    """Bytes a run may keep on a device (models on it plus a node's working memory): nine
    tenths of a GPU's memory as its backend reads it, three quarters of the CPU's RAM;
    None when the device cannot tell."""
    if memory is None or memory.total_bytes <= 0:
        return None
    fraction = RAM_FRACTION if memory.device.startswith("cpu") else DEVICE_FRACTION
    return int(memory.total_bytes * fraction)
