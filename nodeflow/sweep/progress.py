"""The terminal view of a sweep: one bar over the points, one over the running node's steps."""

from __future__ import annotations

import sys

from nodeflow.engine.events import Event, NodeFailed, Progress, RunFinished


class SweepProgress:
    def __init__(self, total: int, enabled: bool = True, stream=None):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self._points = None
        self._steps = None
        if enabled:
            from tqdm import tqdm

            self._points = tqdm(total=total, desc="points", unit="pt", file=self.stream)

    def __call__(self, event: Event) -> None:
        """Executor events of the point running here (local sweeps)."""
        if not self.enabled:
            return
        from tqdm import tqdm

        if isinstance(event, Progress):
            if self._steps is None:
                self._steps = tqdm(total=event.total, desc=f"  node {event.node_id}", unit="step",
                                   file=self.stream, leave=False)
            self._steps.total = event.total
            self._steps.n = event.step
            self._steps.refresh()
        elif isinstance(event, (NodeFailed, RunFinished)):
            self._close_steps()

    def point_done(self, label: str, ok: bool, error: str | None = None) -> None:
        self._close_steps()
        if not ok and error:
            print(f"point {label} failed: {error}", file=self.stream)
        if self._points is not None:
            self._points.set_postfix_str(label[:40])
            self._points.update(1)

    def _close_steps(self) -> None:
        if self._steps is not None:
            self._steps.close()
            self._steps = None

    def close(self) -> None:
        self._close_steps()
        if self._points is not None:
            self._points.close()
            self._points = None
