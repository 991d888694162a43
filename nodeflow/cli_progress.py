"""A terminal progress display driven by executor events (used by ``nodeflow run``)."""

from __future__ import annotations

import sys
import time

from nodeflow.engine.events import Event, NodeCached, NodeFailed, NodeFinished, NodeStarted, Progress, RunFinished, RunStarted


class ConsoleProgress:
    """One bar for the nodes of the run and one for the steps of the running node.

    Disabled (e.g. output is not a terminal) it still prints failures, so a log
    always says which node broke.
    """

    def __init__(self, graph, enabled: bool = True, stream=None):
        self.graph = graph
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self._nodes = None
        self._steps = None
        self._started = time.perf_counter()

    def __call__(self, event: Event) -> None:
        if isinstance(event, NodeFailed):
            self._close_steps()
            print(f"node {event.node_id} ({event.node_type}) failed: {event.message}", file=self.stream)
        if not self.enabled:
            return
        from tqdm import tqdm

        if isinstance(event, RunStarted):
            self._started = time.perf_counter()
            self._nodes = tqdm(total=len(event.planned), desc="nodes", unit="node", file=self.stream, leave=False)
        elif isinstance(event, NodeStarted):
            if self._nodes is not None:
                self._nodes.set_postfix_str(self._label(event.node_id, event.node_type))
        elif isinstance(event, (NodeFinished, NodeCached)):
            self._close_steps()
            if self._nodes is not None:
                self._nodes.update(1)
        elif isinstance(event, Progress):
            if self._steps is None:
                label = self._label(event.node_id, self.graph.nodes[event.node_id].type)
                self._steps = tqdm(total=event.total, desc=label, unit="step", file=self.stream, leave=False)
            self._steps.total = event.total
            self._steps.n = event.step
            self._steps.refresh()
        elif isinstance(event, RunFinished):
            self.close()

    def _label(self, node_id: str, node_type: str) -> str:
        node = self.graph.nodes.get(node_id)
        title = node.title if node is not None and node.title else node_type
        return f"{title} #{node_id}"

    def _close_steps(self) -> None:
        if self._steps is not None:
            self._steps.close()
            self._steps = None

    def close(self) -> None:
        self._close_steps()
        if self._nodes is not None:
            self._nodes.close()
            self._nodes = None
