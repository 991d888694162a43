"""Working memory: what a node says it will allocate, and the budget that is checked against.

Widget ranges bound each value alone and ``check_pixels`` bounds a batch's pixels, but a
node's working memory depends on its inputs and its model (a VAE decode of 8192x8192
without tiles needs ~100 GB of activations). A node that can tell declares
:meth:`Node.working_memory <nodeflow.model.node.Node.working_memory>`, returning a
:class:`MemoryNeed` from the shapes of its inputs (no allocation, no torch import needed);
the executor calls it right before ``run`` and :func:`check_memory` refuses a need over
the budget with the node's field and both figures, before anything is allocated.

The budget is ``RunSettings.memory_budget`` when the host sets one, else the run's
device's (the executor passes it: VRAM on a GPU, see :mod:`nodeflow.model.devices`), else
three quarters of this machine's memory (the smaller of physical RAM and a cgroup limit);
nodes only ever declare needs.

Before a run, the whole plan is estimated from widget values alone
(:meth:`Node.estimate_memory <nodeflow.model.node.Node.estimate_memory>` returns a
:class:`MemoryEstimate`; :mod:`nodeflow.engine.estimate` adds them up), so a workflow
that cannot fit is refused before any model loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from nodeflow.model.context import RunSettings
from nodeflow.model.devices import machine_memory
from nodeflow.model.node import NodeError


@dataclass(frozen=True)
class MemoryNeed:
    """About ``bytes`` of working memory for ``what`` (e.g. "decoding 1 image of
    8192x8192 without tiles"); ``field`` is the input or value to change, ``hint`` how."""

    bytes: int
    field: str
    what: str
    hint: str = ""
    node_id: str | None = None  # the node whose field sets this size, when another one (an EmptyLatent's batch)


def memory_budget(settings: RunSettings | None = None) -> int | None:
    """Bytes a node may ask for; None when it cannot be told (no check then)."""
    if settings is not None and settings.memory_budget:
        return settings.memory_budget
    total = machine_memory()
    return None if total is None else total * 3 // 4


def check_memory(need: MemoryNeed | None, settings: RunSettings | None = None, budget: int | None = None) -> None:
    """Raise :class:`NodeError` on ``need.field`` when ``need`` exceeds the budget
    (``budget``, e.g. the run's device's, or else :func:`memory_budget`)."""
    budget = budget if budget is not None else memory_budget(settings)
    if need is None or budget is None or need.bytes <= budget:
        return
    hint = f"; {need.hint}" if need.hint else ""
    raise NodeError(
        f"{need.what} needs about {format_size(need.bytes)} of working memory, more than the budget of {format_size(budget)}"
        f"{hint} (raise RunSettings.memory_budget if you have the memory)",
        field=need.field,
    )


def format_size(count: int) -> str:
    return f"{count / 2**30:,.1f} GB" if count >= 2**30 else f"{count / 2**20:,.0f} MB"


@dataclass(frozen=True)
class Upstream:
    """What an estimate knows of the node feeding one input: its id and type, and the
    ``facts`` its own :class:`MemoryEstimate` passed on (a latent's shape, a model's size)."""

    node_id: str
    node_type: str
    facts: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MemoryEstimate:
    """A node's memory told from the plan before anything runs.

    - ``holds``: bytes its outputs keep while later nodes need them (a model's weights,
      from the file's size or header), reported on ``holds_field`` when they cannot fit;
    - ``need``: its working memory while it runs (as :meth:`Node.working_memory`);
    - ``uses``: bytes of models it needs on the device while it runs (a sampler's UNet),
      when it can tell; None: all its upstream loaders' ``holds`` count;
    - ``facts``: what the nodes downstream read through :class:`Upstream` (opaque to the
      core: the pack decides, e.g. ``{"latent_shape": (1, 4, 64, 64)}``).
    """

    holds: int = 0
    holds_field: str | None = None
    need: MemoryNeed | None = None
    uses: int | None = None
    facts: Mapping[str, Any] = field(default_factory=dict)
