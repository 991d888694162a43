"""Which models stay on the run's device: offload instead of evict.

A GPU holds less than the RAM beside it. Before each node runs, :meth:`Residency.prepare`
moves back to the device every model the node reads that was moved away, then, if the
models on the device plus the node's working memory exceed the device budget, moves
others to the offload device (the CPU's RAM), in this order: models no step of this run
reads again (older cached results) first, then those read furthest ahead. The plan says
which step reads what, so the model the next node needs is never the one that leaves.
Moved models stay in the cache and in the run's values: a later hit or step brings them
back, bit for bit (a move is a copy of the same bytes), so images do not change.

Models are what moves: objects with ``parameters()`` and ``buffers()`` (torch modules)
found inside outputs (dataclasses, lists, tuples, dicts, walked like
:mod:`nodeflow.engine.sizing`). Tensors (latents, images) stay where they are; they are
small beside the weights and the cache's budget evicts them. The moving itself is the
pack's :class:`~nodeflow.model.devices.DeviceBackend`; on a device with nowhere cheaper
to go (``offload_device`` None: the CPU) all of this is a no-op.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import weakref
from dataclasses import dataclass
from typing import Any, Iterable

from nodeflow.model.devices import DeviceBackend

log = logging.getLogger(__name__)
_MAX_DEPTH = 16


@dataclass(frozen=True)
class ResidencyStats:
    """Moves made so far: models offloaded and restored, their bytes and seconds."""

    offloads: int = 0
    offloaded_bytes: int = 0
    offload_seconds: float = 0.0
    restores: int = 0
    restored_bytes: int = 0
    restore_seconds: float = 0.0


def modules_in(values: Iterable[Any]) -> list[Any]:
    """The modules held by ``values`` (each once, in the order found; not their submodules)."""
    found: dict[int, Any] = {}
    seen: set[int] = set()
    stack = [(value, 0) for value in reversed(list(values))]
    while stack:
        value, depth = stack.pop()
        if value is None or isinstance(value, (bool, int, float, str, bytes)) or id(value) in seen:
            continue
        seen.add(id(value))
        if _is_module(value):
            found.setdefault(id(value), value)
        elif depth < _MAX_DEPTH and not _is_tensor(value):
            if isinstance(value, dict):
                children = list(value.values())
            elif isinstance(value, (list, tuple, set, frozenset)):
                children = list(value)
            elif dataclasses.is_dataclass(value) and not isinstance(value, type):
                children = [getattr(value, f.name, None) for f in dataclasses.fields(value)]
            else:
                continue
            stack.extend((child, depth + 1) for child in reversed(children))
    return list(found.values())


class Residency:
    """Keeps the models on ``device`` within ``budget_bytes`` by moving others to the
    backend's offload device; lives as long as its executor (moved models are remembered
    across runs, weakly: a model nobody holds any more is simply gone)."""

    def __init__(self, backend: DeviceBackend, device: str, budget_bytes: int | None):
        self.backend = backend
        self.device = device
        self.target = backend.offload_device(device)
        self.budget_bytes = budget_bytes
        self._away: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()
        self._stats = ResidencyStats()

    @property
    def active(self) -> bool:
        """Is there anywhere to offload to, and a budget to keep?"""
        return self.target is not None and self.budget_bytes is not None

    def stats(self) -> ResidencyStats:
        return self._stats

    def is_away(self, module: Any) -> bool:
        return self._away.get(id(module)) is module

    def prepare(self, needed: Iterable[Any], later: Iterable[tuple[float, Any]], need_bytes: int = 0) -> None:
        """Before a node runs: its ``needed`` values' models onto the device, then others
        away until the models left plus ``need_bytes`` fit. ``later`` is every other live
        value with the index of the next step that reads it (``math.inf``: none does)."""
        wanted = modules_in(needed)
        for module in wanted:
            if self.is_away(module):
                self._move(module, self.device, restoring=True)
        if not self.active:
            return
        wanted_ids = {id(m) for m in wanted}
        wanted_tensors = {id(t) for m in wanted for t in _tensors(m)}
        candidates: dict[int, tuple[float, Any]] = {}
        for rank, value in later:
            for module in modules_in([value]):
                if id(module) in wanted_ids:
                    continue
                previous = candidates.get(id(module))
                candidates[id(module)] = (min(rank, previous[0]) if previous else rank, module)
        on_device = {id(m): self.backend.bytes_on(m, self.device) for m in wanted}
        on_device.update({key: self.backend.bytes_on(m, self.device) for key, (_, m) in candidates.items()})
        excess = sum(on_device.values()) + max(0, need_bytes) - int(self.budget_bytes)  # type: ignore[arg-type]
        if excess <= 0:
            return
        for key, (rank, module) in sorted(candidates.items(), key=lambda item: -item[1][0]):
            if excess <= 0:
                break
            if not on_device[key] or any(id(t) in wanted_tensors for t in _tensors(module)):
                continue  # already away, or shares weights with a model the node reads
            self._move(module, self.target, restoring=False)  # type: ignore[arg-type]
            excess -= on_device[key]
        if excess > 0:
            log.info("models the next node needs and its working memory exceed the %s budget by %d bytes",
                     self.device, excess)

    def offload_all(self, keep: Iterable[Any], values: Iterable[Any]) -> int:
        """Move every model in ``values`` but those in ``keep`` away (an out-of-memory retry);
        returns the bytes moved."""
        if not self.active:
            return 0
        kept = {id(m) for m in modules_in(keep)}
        moved = 0
        for module in modules_in(values):
            if id(module) not in kept and (size := self.backend.bytes_on(module, self.device)):
                self._move(module, self.target, restoring=False)  # type: ignore[arg-type]
                moved += size
        return moved

    def restore(self, values: Iterable[Any]) -> None:
        """Bring every moved model in ``values`` back to the device (a run's requested outputs)."""
        for module in modules_in(values):
            if self.is_away(module):
                self._move(module, self.device, restoring=True)

    def _move(self, module: Any, device: str, restoring: bool) -> None:
        size = 0 if restoring else self.backend.bytes_on(module, self.device)
        started = time.perf_counter()
        self.backend.move(module, device)
        seconds = time.perf_counter() - started
        if restoring:
            size = self.backend.bytes_on(module, self.device)
        s = self._stats
        if restoring:
            self._away.pop(id(module), None)
            self._stats = dataclasses.replace(s, restores=s.restores + 1, restored_bytes=s.restored_bytes + size,
                                              restore_seconds=s.restore_seconds + seconds)
        else:
            self._away[id(module)] = module
            self._stats = dataclasses.replace(s, offloads=s.offloads + 1, offloaded_bytes=s.offloaded_bytes + size,
                                              offload_seconds=s.offload_seconds + seconds)
        log.debug("%s %s (%d bytes) to %s in %.3f s", "restored" if restoring else "offloaded",
                  type(module).__name__, size, device, seconds)


NEVER = math.inf  # the rank of a value no later step reads


def _tensors(module: Any) -> list[Any]:
    return [*module.parameters(), *module.buffers()]


def _is_module(value: Any) -> bool:
    return not isinstance(value, type) and callable(getattr(value, "parameters", None)) and callable(getattr(value, "buffers", None))


def _is_tensor(value: Any) -> bool:
    return hasattr(value, "untyped_storage") and hasattr(value, "element_size")
