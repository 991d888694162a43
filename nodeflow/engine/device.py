"""Which torch device a run uses.

``resolve_device("auto")`` picks CUDA when available, else Apple's MPS, else the CPU.
A named device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) is checked, so asking
for one this machine lacks fails before anything runs. torch is imported only here,
inside the function, and its absence simply means ``"cpu"``.
"""

from __future__ import annotations

import re

_DEVICE_NAME = re.compile(r"^(cpu|mps|cuda)(?::(\d+))?$")


class DeviceError(ValueError):
    """A device name that is malformed or not available on this machine."""


def resolve_device(name: str = "auto") -> str:
    """Return a concrete, available device name for ``name`` ("auto", "cpu", "cuda[:N]", "mps")."""
    name = (name or "auto").strip().lower()
    if name != "auto" and not _DEVICE_NAME.match(name):
        raise DeviceError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")
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
