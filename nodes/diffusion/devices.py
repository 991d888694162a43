"""The device facts the core asks for (:class:`nodeflow.model.devices.DeviceBackend`), told by torch.

- CUDA: total and free VRAM from ``torch.cuda.mem_get_info`` (what the driver reports,
  other processes' use included);
- MPS: ``torch.mps.recommended_max_memory`` (the share of unified memory Metal lets one
  process use) as the total, minus what torch's MPS allocator holds as free;
- CPU: RAM, read without importing torch (listing nodes and CPU runs stay cheap).

It also tells which devices exist (``resolve``: ``auto`` is CUDA, then MPS, then the CPU).

Models leave a GPU for the CPU's RAM (``offload_device``) with ``Module.to``, in place;
on the CPU there is nowhere cheaper to go, so offloading is off. torch is imported only
inside the methods, and only for a GPU.
"""

from __future__ import annotations

from typing import Any

from nodeflow import DeviceError, DeviceMemory, HostMemory


class TorchDevices:
    def resolve(self, name: str) -> str:
        if name == "cpu" or (name == "auto" and not _may_have_accelerator()):
            return "cpu"  # without importing torch (seconds): `nodeflow validate` resolves the device too
        try:
            import torch
        except ImportError:
            if name == "auto":
                return "cpu"
            raise DeviceError(f"device {name!r} needs PyTorch, which is not installed") from None
        cuda = torch.cuda.is_available()
        mps_backend = getattr(torch.backends, "mps", None)
        mps = bool(mps_backend is not None and mps_backend.is_available())
        if name == "auto":
            return "cuda" if cuda else "mps" if mps else "cpu"
        if name.startswith("mps"):
            if not mps:
                raise DeviceError("device 'mps' is not available (needs Apple silicon and a PyTorch built with MPS)")
            return name
        if not cuda:
            raise DeviceError(f"device {name!r} is not available: this PyTorch sees no CUDA GPU (try --device cpu)")
        count = torch.cuda.device_count()
        index = name.partition(":")[2]
        if index and int(index) >= count:
            raise DeviceError(f"device {name!r} is not available: {count} CUDA GPU(s), numbered from 0")
        return name

    def memory(self, device: str) -> DeviceMemory | None:
        name = str(device)
        if name.startswith("cpu"):
            return HostMemory().memory("cpu")
        import torch

        if name.startswith("cuda"):
            index = torch.device(name).index
            free, total = torch.cuda.mem_get_info(index if index is not None else torch.cuda.current_device())
            return DeviceMemory(name, int(total), int(free), "torch.cuda.mem_get_info")
        if name.startswith("mps"):
            total = int(torch.mps.recommended_max_memory())
            used = int(torch.mps.driver_allocated_memory())
            return DeviceMemory(name, total, max(0, total - used), "torch.mps.recommended_max_memory")
        return None

    def offload_device(self, device: str) -> str | None:
        return None if str(device).startswith("cpu") else "cpu"

    def move(self, module: Any, device: str) -> None:
        module.to(device)

    def bytes_on(self, module: Any, device: str) -> int:
        import torch

        want = torch.device(device)
        seen: set[int] = set()
        total = 0
        for tensor in (*module.parameters(), *module.buffers()):
            where = tensor.device
            if where.type != want.type or (want.index is not None and where.index not in (None, want.index)):
                continue
            storage = tensor.untyped_storage()
            if storage.data_ptr() in seen:
                continue
            seen.add(storage.data_ptr())
            total += int(storage.nbytes())
        return total


DEVICES = TorchDevices()


def _may_have_accelerator() -> bool:
    """False only where torch could not find a GPU: Linux without the NVIDIA driver's,
    ROCm's or WSL's device files (CUDA and ROCm need them; MPS is macOS only)."""
    import os
    import sys

    if not sys.platform.startswith("linux"):
        return True
    return any(os.path.exists(path) for path in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg"))
