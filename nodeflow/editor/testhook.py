"""A file-based remote control of a running editor, for window tests and benchmarks.

Enabled only when ``NODEFLOW_EDITOR_HOOK`` names a folder. A client writes
``request-<n>.json`` (``{"cmd": ...}``) there; the render loop answers with
``response-<n>.json``. Commands: ``state`` (graph, selection, run, on-screen pin and
node positions, frame rate), ``run``, ``screenshot`` (``path``), ``open`` (``path``),
``resize`` (``width``, ``height``), ``select`` (``nodes``), ``answer_recovery``
(``restore``: bool), ``quit`` (clean exit, no questions).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dearpygui.dearpygui as dpg

from nodeflow.editor.userfiles import write_json_atomic

if TYPE_CHECKING:
    from nodeflow.editor.app import EditorApp

ENV_VAR = "NODEFLOW_EDITOR_HOOK"


class TestHook:
    __test__ = False  # not a pytest test class

    def __init__(self, app: "EditorApp", folder: Path):
        self.app = app
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        dpg.set_viewport_pos([0, 0])  # screen coordinates = window coordinates for xdotool
        self._frame_times: list[float] = []

    @classmethod
    def from_env(cls, app: "EditorApp") -> "TestHook | None":
        folder = os.environ.get(ENV_VAR)
        return cls(app, Path(folder)) if folder else None

    def poll(self) -> None:
        now = time.perf_counter()
        self._frame_times.append(now)
        del self._frame_times[:-120]
        for request in sorted(self.folder.glob("request-*.json")):
            try:
                data = json.loads(request.read_text())
            except ValueError:
                continue  # still being written
            request.unlink()
            answer = self._handle(data)
            write_json_atomic(self.folder / request.name.replace("request", "response"), answer)

    def _handle(self, data: dict[str, Any]) -> dict[str, Any]:
        c = self.app.c
        cmd = data.get("cmd")
        if cmd == "state":
            return self._state()
        if cmd == "run":
            return {"refused": c.run()}
        if cmd == "screenshot":
            dpg.output_frame_buffer(file=str(data["path"]))
            return {"ok": True}
        if cmd == "open":
            self.app.open_file(data["path"])
            return {"ok": True, "status": c.status}
        if cmd == "resize":
            dpg.set_viewport_width(int(data["width"]))
            dpg.set_viewport_height(int(data["height"]))
            return {"ok": True}
        if cmd == "select":
            self.app.c.select(data["nodes"])
            return {"ok": True}
        if cmd == "quit":
            self.app.quit()
            return {"ok": True}
        if cmd == "answer_recovery":
            self.app.answer_recovery(bool(data.get("restore")))
            return {"ok": True}
        return {"error": f"unknown command {cmd!r}"}

    def _state(self) -> dict[str, Any]:
        c, canvas = self.app.c, self.app.canvas
        view = c.runner.view
        times = self._frame_times
        fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
        return {
            "title": c.title,
            "dirty": c.dirty,
            "status": c.status,
            "path": str(c.path) if c.path else None,
            "nodes": {
                nid: {"type": n.type, "title": n.title, "mode": n.mode, "pos": list(n.pos),
                      "values": {k: v for k, v in n.values.items() if isinstance(v, (int, float, str, bool))}}
                for nid, n in c.graph.nodes.items()
            },
            "links": [[l.source, l.output, l.target, l.input] for l in c.graph.iter_links()],
            "selection": sorted(c.selection),
            "run": {"status": view.status, "states": view.node_states, "images": len(view.images),
                    "error": view.error, "steps_previewed": len(view.x0_strip)},
            "pins": canvas.pin_screen_positions(),
            "node_rects": {nid: [*dpg.get_item_rect_min(item), *dpg.get_item_rect_size(item)] for nid, item in canvas.nodes.items()},
            "preview_rect": [*dpg.get_item_rect_min(self.app.side.result.item), *dpg.get_item_rect_size(self.app.side.result.item)],
            "palette_filter_rect": [*dpg.get_item_rect_min(self.app.palette.filter), *dpg.get_item_rect_size(self.app.palette.filter)],
            "viewport": [dpg.get_viewport_client_width(), dpg.get_viewport_client_height()],
            "recovery_offered": dpg.is_item_shown(self.app.recovery_window),
            "fps": fps,
            "open_seconds": self.app.open_seconds,
            "logic_ms": 1000 * sum(self.app.logic_seconds) / max(len(self.app.logic_seconds), 1),
            "frames": self.app.frames,
        }
