"""Working memory: what a node says it will allocate, and the budget that is checked against.

Widget ranges bound each value alone and ``check_pixels`` bounds a batch's pixels, but a
node's working memory depends on its inputs and its model (a VAE decode of 8192x8192
without tiles needs ~100 GB of activations). A node that can tell declares
:meth:`Node.working_memory <nodeflow.model.node.Node.working_memory>`, returning a
:class:`MemoryNeed` from the shapes of its inputs (no allocation, no torch import needed);
the executor calls it right before ``run`` and :func:`check_memory` refuses a need over
the budget with the node's field and both figures, before anything is allocated.

The budget is ``RunSettings.memory_budget`` when the host sets one, else three quarters of
this machine's memory (the smaller of physical RAM and a cgroup limit). A device memory
manager can later own the budget (per device, minus what models hold) by setting it,
or by replacing :func:`memory_budget`; nodes only ever declare needs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from nodeflow.model.context import RunSettings
from nodeflow.model.node import NodeError


@dataclass(frozen=True)
class MemoryNeed:
    """About ``bytes`` of working memory for ``what`` (e.g. "decoding 1 image of
    8192x8192 without tiles"); ``field`` is the input or value to change, ``hint`` how."""

    bytes: int
    field: str
    what: str
    hint: str = ""


def memory_budget(settings: RunSettings | None = None) -> int | None:
    """Bytes a node may ask for; None when it cannot be told (no check then)."""
    if settings is not None and settings.memory_budget:
        return settings.memory_budget
    total = _machine_memory()
    return None if total is None else total * 3 // 4


def check_memory(need: MemoryNeed | None, settings: RunSettings | None = None) -> None:
    """Raise :class:`NodeError` on ``need.field`` when ``need`` exceeds the budget."""
    budget = memory_budget(settings)
    if need is None or budget is None or need.bytes <= budget:
        return
    hint = f"; {need.hint}" if need.hint else ""
    raise NodeError(
        f"{need.what} needs about {_gb(need.bytes)} of working memory, more than the budget of {_gb(budget)}"
        f"{hint} (raise RunSettings.memory_budget if you have the memory)",
        field=need.field,
    )


def _gb(count: int) -> str:
    return f"{count / 2**30:,.1f} GB" if count >= 2**30 else f"{count / 2**20:,.0f} MB"


def _machine_memory() -> int | None:
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
