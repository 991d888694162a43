"""Which torch device a run uses.

``resolve_device("auto")`` picks CUDA when available, else Apple's MPS, else the CPU.
A named device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) is checked, so asking
for one this machine lacks fails before anything runs. torch is imported only here,
inside the function, and its absence simply means ``"cpu"``.
"""

from __future__ import annotations

import os
import re
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nodeflow.model.devices import DeviceMemory

_DEVICE_NAME = re.compile(r"^(cpu|mps|cuda)(?::(\d+))?$")


class DeviceError(ValueError):
    """A device name that is malformed or not available on this machine."""


def _may_have_accelerator() -> bool:
    """False only where torch could not find a GPU: Linux without the NVIDIA driver's,
    ROCm's or WSL's device files (CUDA and ROCm need them; MPS is macOS only)."""
    if not sys.platform.startswith("linux"):
        return True
    return any(os.path.exists(path) for path in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg"))


def resolve_device(name: str = "auto") -> str:
    """Return a concrete, available device name for ``name`` ("auto", "cpu", "cuda[:N]", "mps")."""
    name = (name or "auto").strip().lower()
    if name != "auto" and not _DEVICE_NAME.match(name):
        raise DeviceError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    if name == "cpu" or (name == "auto" and not _may_have_accelerator()):
        return "cpu"  # without importing torch (seconds): `nodeflow validate` resolves the device too
    try:
        import torch
    except ImportError:
        if name in ("auto", "cpu"):
            return "cpu"
        raise DeviceError(f"device {name!r} needs PyTorch, which is not installed") from None

    cuda = torch.cuda.is_available()
    mps_backend = getattr(torch.backends, "mps", None)
    mps = bool(mps_backend is not None and mps_backend.is_available())
    if name == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"

    kind, index = _DEVICE_NAME.match(name).groups()  # type: ignore[union-attr]
    if kind == "cpu":
        if index not in (None, "0"):
            raise DeviceError(f"unknown device {name!r}; the CPU is just 'cpu'")
        return "cpu"
    if kind == "mps":
        if not mps:
            raise DeviceError("device 'mps' is not available (needs Apple silicon and a PyTorch built with MPS)")
        return name
    if not cuda:
        raise DeviceError(f"device {name!r} is not available: this PyTorch sees no CUDA GPU (try --device cpu)")
    count = torch.cuda.device_count()
    if index is not None and int(index) >= count:
        raise DeviceError(f"device {name!r} is not available: {count} CUDA GPU(s), numbered from 0")
    return name


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
