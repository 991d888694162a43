"""The executor's memory of node results, keyed by content signature.

An entry is one node's ``{output name: value}``; values stay on the device they were
made on. The cache holds at most ``budget_bytes`` (measured by
:func:`nodeflow.engine.sizing.sizeof`) and evicts the least recently used entries first.

A run *pins* the signatures it still needs: a pinned entry is never evicted, even
when that leaves the cache over budget (a run whose working set exceeds the budget
still completes); the excess is evicted as soon as the pins are released.

Every method is thread-safe: a GUI may read ``stats()`` or call ``clear()`` while a
run stores results from a worker thread.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable

from nodeflow.engine.sizing import sizeof
from nodeflow.model.devices import DeviceMemory, machine_memory

FALLBACK_BUDGET_BYTES = 8 * 1024**3
RAM_FRACTION = 0.5  # models are big; half the RAM leaves room for the run's working memory
VRAM_FRACTION = 0.5  # the same share of a GPU that cannot offload: the rest is working memory


def default_budget_bytes(memory: DeviceMemory | None = None) -> int:
    """The cache's budget on the memory its entries live in: half of a device's
    ``memory`` (a GPU's VRAM as its backend reads it), else half of this machine's RAM,
    or 8 GB when neither can be read. The executor passes the RAM when models can be
    offloaded from the device (they then live in RAM), the device's memory otherwise."""
    if memory is not None and memory.total_bytes > 0:
        fraction = RAM_FRACTION if memory.device.startswith("cpu") else VRAM_FRACTION
        return int(memory.total_bytes * fraction)
    total = machine_memory()
    return int(total * RAM_FRACTION) if total else FALLBACK_BUDGET_BYTES


@dataclass(frozen=True)
class CacheStats:
    entries: int
    bytes: int
    budget_bytes: int
    hits: int
    misses: int
    evictions: int
    pinned: int


@dataclass
class _Entry:
    outputs: dict[str, Any]
    nbytes: int


class OutputCache:
    def __init__(self, budget_bytes: int | None = None):
        self._budget = default_budget_bytes() if budget_bytes is None else int(budget_bytes)
        if self._budget < 0:
            raise ValueError(f"cache budget must be >= 0 bytes, not {budget_bytes}")
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self._pins: Counter[str] = Counter()
        self._bytes = 0
        self._hits = self._misses = self._evictions = 0
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ lookups
    def get(self, signature: str) -> dict[str, Any] | None:
        """The outputs stored under ``signature`` (marking them recently used), or None."""
        with self._lock:
            entry = self._entries.get(signature)
            if entry is None:
                self._misses += 1
                return None
            self._entries.move_to_end(signature)
            self._hits += 1
            return entry.outputs

    def entries(self) -> list[dict[str, Any]]:
        """Every stored entry's outputs, least recently used first, without marking them
        used (what the offloading of models looks through)."""
        with self._lock:
            return [entry.outputs for entry in self._entries.values()]

    def __contains__(self, signature: object) -> bool:
        with self._lock:
            return signature in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    # ------------------------------------------------------------------ storing
    def put(self, signature: str, outputs: dict[str, Any], nbytes: int | None = None) -> None:
        """Store a node's outputs, then evict unpinned entries until within budget."""
        if nbytes is None:
            nbytes = sizeof(outputs)  # measured outside the lock: it may walk large values
        with self._lock:
            old = self._entries.pop(signature, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._entries[signature] = _Entry(outputs, nbytes)
            self._bytes += nbytes
            self._evict_locked()

    def pin(self, signatures: Iterable[str]) -> None:
        """Protect ``signatures`` from eviction (counted: pin twice, unpin twice)."""
        with self._lock:
            self._pins.update(signatures)

    def unpin(self, signatures: Iterable[str]) -> None:
        with self._lock:
            for signature in signatures:
                self._pins[signature] -= 1
                if self._pins[signature] <= 0:
                    del self._pins[signature]
            self._evict_locked()

    def free_unpinned(self) -> int:
        """Evict every entry no run has pinned (what an out-of-memory retry does first);
        returns the bytes they held."""
        with self._lock:
            victims = [signature for signature in self._entries if signature not in self._pins]
            freed = 0
            for signature in victims:
                freed += self._entries.pop(signature).nbytes
            self._bytes -= freed
            self._evictions += len(victims)
            return freed

    def clear(self) -> None:
        """Forget every entry (pins stay: they belong to runs in progress, which hold their own values)."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    @property
    def budget_bytes(self) -> int:
        return self._budget

    @budget_bytes.setter
    def budget_bytes(self, value: int) -> None:
        if value < 0:
            raise ValueError(f"cache budget must be >= 0 bytes, not {value}")
        with self._lock:
            self._budget = int(value)
            self._evict_locked()

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                entries=len(self._entries),
                bytes=self._bytes,
                budget_bytes=self._budget,
                hits=self._hits,
                misses=self._misses,
                evictions=self._evictions,
                pinned=sum(1 for s in self._pins if s in self._entries),
            )

    # ------------------------------------------------------------------ helpers
    def _evict_locked(self) -> None:
        excess = self._bytes - self._budget
        if excess <= 0:
            return
        victims = []  # oldest first; pinned entries (mostly the newest) are skipped
        for signature, entry in self._entries.items():
            if signature not in self._pins:
                victims.append(signature)
                excess -= entry.nbytes
                if excess <= 0:
                    break
        for signature in victims:
            self._bytes -= self._entries.pop(signature).nbytes
        self._evictions += len(victims)
