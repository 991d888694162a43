"""The device facts a run needs, told by a pack: how much memory a device has, and how to
move a model off it and back.

The core never imports torch, yet the cache budget, the offloading of models and the
peak-memory check before a run all depend on the device: VRAM on a CUDA GPU (read from
the device), the recommended maximum on Apple's MPS, RAM on the CPU. A pack that knows
the device library declares a :class:`DeviceBackend` (``Pack(devices=...)``); the
executor asks it. Without one, :class:`HostMemory` answers for the CPU alone: RAM (the
smaller of physical memory and a cgroup limit) and nowhere to offload to.

A backend moves *modules* (objects with ``parameters()`` and ``buffers()``) in place,
as ``torch.nn.Module.to`` does; the core finds them inside node outputs (dataclasses,
lists, tuples, dicts) and decides which to move (:mod:`nodeflow.engine.residency`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


DEVICE_NAME = re.compile(r"^(cpu|mps|cuda)(?::(\d+))?$")


class DeviceError(ValueError):
    """A device name that is malformed or not available on this machine."""


@dataclass(frozen=True)
class DeviceMemory:
    """What a device holds: ``total_bytes`` of memory, ``free_bytes`` of it free now (None
    when the device cannot tell), and where the figures came from (``source``, e.g.
    ``"torch.cuda.mem_get_info"``), for messages and ``nodeflow`` reports."""

    device: str
    total_bytes: int
    free_bytes: int | None = None
    source: str = ""


@runtime_checkable
class DeviceBackend(Protocol):
    """What the core asks a pack about devices. Every method must be cheap for ``"cpu"``
    (no torch import just to learn the RAM size)."""

    def resolve(self, name: str) -> str:
        """A concrete, available device for a well-formed ``name`` (lower case; ``"auto"``:
        the best this machine has); :class:`DeviceError` naming why one is not there."""
        ...

    def memory(self, device: str) -> DeviceMemory | None:
        """The device's memory, or None when it cannot be told."""
        ...

    def offload_device(self, device: str) -> str | None:
        """Where models go when ``device`` is short of memory (``"cpu"`` for a GPU), or None
        when there is nowhere cheaper (the CPU itself): offloading is then off."""
        ...

    def move(self, module: Any, device: str) -> None:
        """Move ``module``'s parameters and buffers to ``device``, in place."""
        ...

    def bytes_on(self, module: Any, device: str) -> int:
        """Bytes of ``module``'s parameters and buffers that live on ``device``."""
        ...


class HostMemory:
    """The backend when no pack declares one: the CPU's RAM, no offloading, no GPUs."""

    def resolve(self, name: str) -> str:
        if name in ("auto", "cpu", "cpu:0"):
            return "cpu"
        raise DeviceError(f"device {name!r} needs a node pack that drives GPUs (the diffusion pack, with "
                          "PyTorch); none is installed")

    def memory(self, device: str) -> DeviceMemory | None:
        if not str(device).startswith("cpu"):
            return None
        total = machine_memory()
        return None if total is None else DeviceMemory("cpu", total, available_memory(), "physical RAM / cgroup limit")

    def offload_device(self, device: str) -> str | None:
        return None

    def move(self, module: Any, device: str) -> None:
        raise NotImplementedError("HostMemory offloads nothing")

    def bytes_on(self, module: Any, device: str) -> int:
        return 0


def machine_memory() -> int | None:
    """This machine's memory: the smaller of physical RAM and a cgroup limit."""
    sizes = []
    try:
        sizes.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        pass
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            sizes.append(int(text))
    return min(sizes) if sizes else None


def available_memory() -> int | None:
    """RAM available now without swapping (``MemAvailable``), or None off Linux."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
