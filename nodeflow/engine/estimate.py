"""Peak memory of a plan, estimated before anything runs, and the refusal of a run that cannot fit.

Each step's node tells what it will hold and need from its widget values and what its
upstream nodes' estimates passed on (:meth:`Node.estimate_memory
<nodeflow.model.node.Node.estimate_memory>`, a :class:`~nodeflow.model.memory.MemoryEstimate`):
a checkpoint the bytes of its weights (from the file's header), an empty latent its shape,
a sampler its working memory for that shape. A step's peak is its working memory plus
the bytes held by the steps alive at that point (run before it, and read at or after it
or upstream of it: a model reaches a sampler through its guider):

- where models can be offloaded (a GPU), only those it uses (``MemoryEstimate.uses``: a
  sampler needs its UNet on the device, not the text encoder the CPU's RAM can keep), or,
  when it does not tell, those of its ancestors;
- elsewhere (the CPU) all of them, since nothing leaves.

A peak over the budget is a :class:`~nodeflow.model.problems.Problem` on the node and
field that set the size: the working memory's own (an EmptyLatent's ``batch`` when the
sampler's activations are too big) or, when the models alone do not fit, the loader's.
Estimates are deliberately simple upper-side figures: enough to refuse a run that would
fail after minutes of loading, not to pack memory. This check and the hostile-input
limits (``nodeflow.host.limits.check_pixels``, found by validation) do not overlap: the
limits bound what any workflow may ask whatever the machine, this the device at hand,
and it runs only on a plan that passed validation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from nodeflow.engine.plan import Plan, producer
from nodeflow.model.context import RunContext
from nodeflow.model.memory import MemoryEstimate, Upstream, format_size as _gb
from nodeflow.model.problems import Problem, ProblemCode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepEstimate:
    node_id: str
    node_type: str
    holds: int  # bytes its outputs keep (weights)
    need: int  # working memory while it runs
    peak: int  # need + what the steps alive then hold (see the module's docstring)


@dataclass(frozen=True)
class PlanEstimate:
    steps: tuple[StepEstimate, ...]
    budget: int | None
    problems: tuple[Problem, ...] = ()

    @property
    def peak(self) -> int:
        return max((step.peak for step in self.steps), default=0)

    def table(self) -> str:
        """One line per step with a figure, for logs and ``--verbose``."""
        rows = [f"{s.node_id:>6} {s.node_type:<24} holds {_mb(s.holds):>10} need {_mb(s.need):>10} peak {_mb(s.peak):>10}"
                for s in self.steps if s.holds or s.need]
        return "\n".join(rows)


def estimate_plan(plan: Plan, ctx: RunContext, budget: int | None, offloads: bool) -> PlanEstimate:
    """Each step's estimated peak, and a problem for every one over ``budget``."""
    estimates: dict[str, MemoryEstimate] = {}  # signature -> its step's estimate
    nodes: dict[str, tuple[str, str]] = {}  # signature -> (node id, node type)
    index_of: dict[str, int] = {}
    ancestors: dict[str, set[str]] = {}
    last_read = _last_reads(plan)
    results: list[StepEstimate] = []
    problems: dict[tuple[str | None, str | None], Problem] = {}
    for index, step in enumerate(plan.steps):
        inputs = {}
        for name, ref in step.sources.items():
            source = producer(ref)
            if source in nodes:
                inputs[name] = Upstream(*nodes[source], facts=estimates[source].facts if source in estimates else {})
        estimate = _ask(step.cls, step.literals, inputs, replace(ctx, node_id=step.node_id))
        nodes[step.signature] = (step.node_id, step.node_type)
        index_of.setdefault(step.signature, index)
        ancestors[step.signature] = set(step.reads).union(*(ancestors.get(s, ()) for s in step.reads))
        if estimate is None:
            results.append(StepEstimate(step.node_id, step.node_type, 0, 0, 0))
            continue
        estimates[step.signature] = estimate
        need = estimate.need.bytes if estimate.need is not None else 0
        # alive: read at or after this step, or upstream of it (a guider passes its model on,
        # so the LoRA the sampler reads through the guider is still held)
        upstream = ancestors[step.signature]
        alive = [signature for signature, other in estimates.items()
                 if signature != step.signature and other.holds and index_of[signature] < index
                 and (last_read.get(signature, -1) >= index or signature in upstream)
                 and (not offloads or signature in upstream)]
        if offloads and estimate.uses is not None:
            held = estimate.holds + estimate.uses
        else:
            held = estimate.holds + sum(estimates[signature].holds for signature in alive)
        peak = need + held
        results.append(StepEstimate(step.node_id, step.node_type, estimate.holds, need, peak))
        if budget is None or peak <= budget:
            continue
        problem = _refusal(step.node_id, step.node_type, estimate, need, held, alive, estimates, nodes, budget, ctx)
        problems.setdefault((problem.node_id, problem.field), problem)
    return PlanEstimate(tuple(results), budget, tuple(problems.values()))


def _refusal(node_id: str, node_type: str, estimate: MemoryEstimate, need: int, held: int, alive: list[str],
             estimates: dict[str, MemoryEstimate], nodes: dict[str, tuple[str, str]], budget: int,
             ctx: RunContext) -> Problem:
    where = f"the budget of {_gb(budget)} on {ctx.device}"
    advice = " (raise RunSettings.memory_budget if you have the memory)"
    if estimate.need is not None and held <= budget:
        wanted = estimate.need
        models = f", with {_gb(held)} of models on the device," if held else ""
        hint = f"; {wanted.hint}" if wanted.hint else ""
        message = (f"{wanted.what} (node {node_id}, {node_type}) needs about {_gb(need)} of working memory{models} "
                   f"more than {where}{hint}{advice}")
        target = wanted.node_id or node_id
        target_type = node_type if target == node_id else _type_of(target, nodes)
        return Problem(ProblemCode.OVER_MEMORY_BUDGET, message, target, target_type, wanted.field)
    holders = [(estimates[s].holds, nodes[s], estimates[s].holds_field) for s in alive]
    if estimate.holds:
        holders.append((estimate.holds, (node_id, node_type), estimate.holds_field))
    size, (holder_id, holder_type), field = max(holders, key=lambda item: item[0])
    message = (f"the models needed at node {node_id} ({node_type}) hold about {_gb(held)}, more than {where}; "
               f"the largest, about {_gb(size)}, is loaded by node {holder_id} ({holder_type}): load it at a lower "
               f"precision (fp16) or use a smaller model{advice}")
    return Problem(ProblemCode.OVER_MEMORY_BUDGET, message, holder_id, holder_type, field)


def _type_of(node_id: str, nodes: dict[str, tuple[str, str]]) -> str | None:
    return next((kind for nid, kind in nodes.values() if nid == node_id), None)


def _ask(cls: Any, values: dict[str, Any], inputs: dict[str, Upstream], ctx: RunContext) -> MemoryEstimate | None:
    """The node's estimate; a hook that fails is logged and counts as no estimate (the
    checks at run time still hold), so a pack's bug never blocks a run."""
    try:
        estimate = cls.estimate_memory(dict(values), inputs, ctx)
    except Exception:
        log.exception("%s.estimate_memory failed; its memory is not estimated", getattr(cls, "type", cls))
        return None
    return estimate if isinstance(estimate, MemoryEstimate) else None


def _last_reads(plan: Plan) -> dict[str, int]:
    last: dict[str, int] = {}
    for index, step in enumerate(plan.steps):
        for signature in step.reads:
            last[signature] = index
    for refs in plan.outputs.values():
        for signature in filter(None, map(producer, refs.values())):
            last[signature] = len(plan.steps)
    return last


def _mb(count: int) -> str:
    return f"{count / 2**20:,.1f} MB"
