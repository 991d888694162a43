"""Loading, validating and saving a synthetic 1,000-node workflow.

    .venv/bin/python -m benchmarks.bench_workflow [--nodes 1000] [--repeat 15]

Builds a layered graph of the test pack's nodes (each Add sums two nodes of the layer
above, the last layer feeds output nodes), with positions, saves it, and prints the
median time of: parsing + building the graph from the file text, validating it, and
writing it (rendering + atomic save).

Target: load + validate of 1,000 nodes well under 100 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path


from tests.support.testpack import make_registry  # noqa: E402

from nodeflow.model.graph import Graph  # noqa: E402
from nodeflow.model.validation import validate  # noqa: E402
from nodeflow.files.workflow import save_workflow, workflow_to_json  # noqa: E402
from nodeflow.files.open import workflow_from_json  # noqa: E402


def build(nodes: int, width: int = 50) -> Graph:
    graph = Graph(make_registry())

    def output(node_id: str) -> str:
        return "sum" if graph.nodes[node_id].type == "Add" else "value"

    previous = [graph.add_node("Number", {"value": float(i)}, pos=(i * 10, 0)).id for i in range(width)]
    while len(graph.nodes) < nodes - width:
        layer = []
        for i in range(width):
            node = graph.add_node("Add", pos=(i * 10, len(graph.nodes)), size=(180, 80))
            graph.connect(previous[i], output(previous[i]), node.id, "a")
            other = previous[(i + 1) % width]
            graph.connect(other, output(other), node.id, "b")
            layer.append(node.id)
        previous = layer
    for node_id in previous[: nodes - len(graph.nodes)]:
        sink = graph.add_node("Sink")
        graph.connect(node_id, output(node_id), sink.id, "value")
    return graph


def median_ms(action, repeat: int) -> tuple[float, float]:
    """Median wall time and median CPU time of ``action``, in ms. On a busy machine the
    CPU time is the fairer figure: it leaves out time spent waiting for a core."""
    wall, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        action()
        wall.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()

    graph = build(args.nodes)
    registry = graph.registry
    text = workflow_to_json(graph)
    loaded = workflow_from_json(text, registry)
    assert validate(loaded.graph) == [], validate(loaded.graph)[:3]

    load = median_ms(lambda: workflow_from_json(text, registry), args.repeat)
    check = median_ms(lambda: validate(loaded.graph), args.repeat)
    with tempfile.TemporaryDirectory() as folder:
        save = median_ms(lambda: save_workflow(Path(folder) / "bench.json", graph), args.repeat)
    total = (load[0] + check[0], load[1] + check[1])
    print(f"{len(graph.nodes)} nodes, {len(graph.links)} links, {len(text) / 1024:.0f} KiB; median wall / CPU ms")
    print(f"load (parse + build):   {load[0]:6.1f} / {load[1]:6.1f}")
    print(f"validate:               {check[0]:6.1f} / {check[1]:6.1f}")
    print(f"load + validate:        {total[0]:6.1f} / {total[1]:6.1f}   (target: well under 100 ms)")
    print(f"save (render + fsync):  {save[0]:6.1f} / {save[1]:6.1f}")

if __name__ == "__main__":
    main()
