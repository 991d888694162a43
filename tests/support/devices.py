"""A simulated GPU for tests on the CPU: a device backend with a fixed memory size whose
"offload" really takes a model's weights off the device.

The run's device stays ``"cpu"`` (where torch computes), but the backend says it holds
``total_bytes`` and that models can be offloaded to ``"host"``. Offloading a module moves
its parameter and buffer objects into a store and leaves meta tensors (no data) in their
place, so a node that ran with a model still offloaded would fail ("Tensor on device
meta"), not quietly compute; restoring puts the very same objects back, so results are
bit-identical. ``bytes_on(module, "cpu")`` counts what is really there. With a CUDA GPU
present, :func:`device_backend` returns the pack's real backend for ``"cuda"`` instead,
limited to the same budget: the tests then exercise the real moves unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from nodeflow import DeviceMemory, HostMemory

HOST = "host"


@dataclass
class SimulatedDevice:
    total_bytes: int
    moves: list[tuple[str, str]] = field(default_factory=list)  # (module class, to device)
    _store: dict[int, list[tuple[Any, str, str, Any]]] = field(default_factory=dict)

    def resolve(self, name: str) -> str:
        return HostMemory().resolve(name)  # torch computes on the CPU

    def memory(self, device: str) -> DeviceMemory | None:
        if device == HOST:  # where offloaded models live: this machine's RAM
            return HostMemory().memory("cpu")
        return DeviceMemory(device, self.total_bytes, None, "simulated")

    def offload_device(self, device: str) -> str | None:
        return HOST

    def move(self, module: Any, device: str) -> None:
        self.moves.append((type(module).__name__, device))
        if device == HOST:
            if id(module) in self._store:
                return
            kept = []
            for owner in module.modules():
                for kind in ("_parameters", "_buffers"):
                    table = getattr(owner, kind)
                    for name, tensor in list(table.items()):
                        if tensor is None or tensor.is_meta:
                            continue
                        kept.append((owner, kind, name, tensor))
                        empty = torch.empty_like(tensor, device="meta")
                        table[name] = torch.nn.Parameter(empty, tensor.requires_grad) if kind == "_parameters" else empty
            self._store[id(module)] = kept
        else:
            for owner, kind, name, tensor in self._store.pop(id(module), []):
                getattr(owner, kind)[name] = tensor

    def bytes_on(self, module: Any, device: str) -> int:
        seen, total = set(), 0
        for tensor in (*module.parameters(), *module.buffers()):
            if tensor.is_meta or tensor.untyped_storage().data_ptr() in seen:
                continue
            seen.add(tensor.untyped_storage().data_ptr())
            total += int(tensor.untyped_storage().nbytes())
        return total

    @property
    def offloaded(self) -> int:
        return len(self._store)


class LimitedDevices:
    """The pack's real backend with its memory reported as ``total_bytes`` (a GPU made small)."""

    def __init__(self, total_bytes: int):
        from nodes.diffusion.devices import TorchDevices

        self.real = TorchDevices()
        self.total_bytes = total_bytes
        self.moves: list[tuple[str, str]] = []

    def resolve(self, name: str) -> str:
        return self.real.resolve(name)

    def memory(self, device: str) -> DeviceMemory | None:
        if device == "cpu":
            return self.real.memory("cpu")
        return DeviceMemory(device, self.total_bytes, None, "limited")

    def offload_device(self, device: str) -> str | None:
        return self.real.offload_device(device)

    def move(self, module: Any, device: str) -> None:
        self.moves.append((type(module).__name__, device))
        self.real.move(module, device)

    def bytes_on(self, module: Any, device: str) -> int:
        return self.real.bytes_on(module, device)


def device_backend(total_bytes: int) -> tuple[Any, str]:
    """(backend, run device): the real backend on a CUDA GPU when there is one, else the simulated device."""
    if torch.cuda.is_available():
        return LimitedDevices(total_bytes), "cuda"
    return SimulatedDevice(total_bytes), "cpu"
