"""What a sweep costs before it runs, read off the engine's own plan signatures.

Each point's graph (the workflow with the point's values set) is planned with
:func:`nodeflow.engine.plan.build_plan`, exactly as the executor will plan it. Steps of
different points with one signature are one piece of work, computed once and then read
from the cache; so the sweep's cost is the number of distinct signatures (plus, per
point, the steps that are never reused: non-deterministic nodes and the output nodes,
which write each point's files). Nothing is guessed from node types.

Points are then ordered so that those sharing work run one after another (the
cache's least-recently-used eviction then never drops work still to be shared), and
for several workers they are split into groups that share work, each group going to
one worker.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from nodeflow.engine.plan import build_plan
from nodeflow.model.context import RunContext, RunSettings
from nodeflow.model.graph import Graph
from nodeflow.sweep.axes import Axis, Point

PLAN_NONCE = "sweep-plan"  # fixed: the plan's signatures must be the same on every re-run (resume)


@dataclass(frozen=True)
class PlannedStep:
    node_id: str
    node_type: str
    signature: str
    per_point: bool  # runs at every point whatever the cache holds (output or non-deterministic node)


@dataclass(frozen=True)
class PointPlan:
    point: Point
    steps: tuple[PlannedStep, ...]

    @property
    def signatures(self) -> dict[str, str]:
        return {step.node_id: step.signature for step in self.steps}


@dataclass
class SweepPlan:
    axes: tuple[Axis, ...]
    mode: str
    points: list[PointPlan]  # in run order
    executions: Counter = field(default_factory=Counter)  # node type -> node runs the sweep costs
    cached: Counter = field(default_factory=Counter)  # node type -> steps already in the cache
    naive: int = 0  # node runs if every point ran alone

    @property
    def total_executions(self) -> int:
        return sum(self.executions.values())

    def summary(self) -> dict[str, Any]:
        return {
            "points": len(self.points),
            "node_executions": self.total_executions,
            "without_sharing": self.naive,
            "executions_by_type": dict(sorted(self.executions.items())),
            "already_cached_by_type": dict(sorted(self.cached.items())),
        }

    def text(self) -> str:
        by_type = ", ".join(f"{t} {n}" for t, n in sorted(self.executions.items(), key=lambda kv: (-kv[1], kv[0])))
        lines = [
            f"sweep: {len(self.points)} point(s) over {' x '.join(f'{a.name} ({len(a.values)})' for a in self.axes)}"
            f" ({self.mode})",
            f"cost: {self.total_executions} node execution(s) instead of {self.naive} run one by one: {by_type}",
        ]
        if self.cached:
            lines.append(f"already cached: {sum(self.cached.values())} step(s)")
        return "\n".join(lines)


def point_graph(base: Graph, point: Point) -> Graph:
    graph = base.copy()
    for node_id, name, value in point.overrides:
        graph.set_value(node_id, name, value)
    return graph


def plan_sweep(
    base: Graph,
    axes: Sequence[Axis],
    points: Iterable[Point],
    output_dir: str | os.PathLike[str],
    device: str,
    settings: RunSettings | None = None,
    cached: Any = (),
    mode: str = "product",
) -> SweepPlan:
    """Plan every point; ``cached`` (e.g. an executor's cache) holds signatures already computed."""
    settings = settings if settings is not None else RunSettings()
    context = RunContext(device=device, output_dir=output_dir, settings=settings)
    planned = []
    for point in points:
        plan = build_plan(point_graph(base, point), salt=device, nonce=PLAN_NONCE,
                          output_dir=os.path.abspath(output_dir), context=context)
        steps = tuple(
            PlannedStep(s.node_id, s.node_type, s.signature, per_point=s.cls.output_node or not s.reusable)
            for s in plan.steps
        )
        planned.append(PointPlan(point, steps))
    ordered = order_points(planned)
    sweep = SweepPlan(tuple(axes), mode, ordered, naive=sum(len(p.steps) for p in ordered))
    seen: set[str] = set()
    for point in ordered:
        for step in point.steps:
            if step.per_point:
                sweep.executions[step.node_type] += 1
            elif step.signature not in seen:
                seen.add(step.signature)
                if step.signature in cached:
                    sweep.cached[step.node_type] += 1
                else:
                    sweep.executions[step.node_type] += 1
    return sweep


def order_points(points: list[PointPlan]) -> list[PointPlan]:
    """Points sharing work next to each other, otherwise in the order asked for.

    Each signature is numbered by the first point (in the asked order) that needs it; a
    point's key is those numbers in plan order (upstream first). Sorting by the keys puts
    points with the same upstream work (e.g. one prompt) together.
    """
    first: dict[str, int] = {}
    for point in points:
        for step in point.steps:
            first.setdefault(step.signature, point.point.index)
    return sorted(points, key=lambda p: (tuple(first[s.signature] for s in p.steps if not s.per_point), p.point.index))


def assign(points: list[PointPlan], workers: int) -> list[list[PointPlan]]:
    """Split the points among ``workers``: points sharing work that not every point shares
    stay together (up to an even share each), groups go to the least loaded worker."""
    workers = max(1, workers)
    counts = Counter(s.signature for p in points for s in p.steps if not s.per_point)
    everyone = len(points)
    parent = list(range(len(points)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[str, int] = {}
    for i, point in enumerate(points):
        for step in point.steps:
            if not step.per_point and 1 < counts[step.signature] < everyone:
                j = owner.setdefault(step.signature, i)
                parent[root(i)] = root(j)
    groups: dict[int, list[PointPlan]] = {}
    for i, point in enumerate(points):
        groups.setdefault(root(i), []).append(point)
    cap = math.ceil(len(points) / workers)
    pieces = [group[k:k + cap] for group in groups.values() for k in range(0, len(group), cap)]
    pieces.sort(key=len, reverse=True)  # stable: equal pieces keep the run order
    bins: list[list[PointPlan]] = [[] for _ in range(workers)]
    for piece in pieces:
        min(bins, key=len).extend(piece)
    rank = {id(p): i for i, p in enumerate(points)}
    return [sorted(b, key=lambda p: rank[id(p)]) for b in bins]
