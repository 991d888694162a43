"""A file-based remote control of a running editor, for the window tests and the editor
benchmark. Not part of the product: tests/editor_gui_app.py installs it through
``run_app(frame_hooks=...)`` when ``NODEFLOW_EDITOR_HOOK`` names a folder.

A client writes ``request-<n>.json`` (``{"cmd": ...}``) there; the render loop answers
with ``response-<n>.json``. A request wakes the editor to full frame rate, as input
would, unless it says ``"quiet": true`` (the benchmark's idle figures). Commands: ``state`` (graph, selection, run, on-screen pin
and node positions, zoom, frame counters), ``run``, ``screenshot`` (``path``), ``open``
(``path``), ``resize`` (``width``, ``height``), ``select`` (``nodes``),
``answer_recovery`` (``restore``: bool), ``file_chosen`` (``path``: what the open file
dialog returns), ``dialog`` (whether the file dialog is open, its purpose), ``sweep_open`` (Run >
Sweep the selected nodes), ``sweep_set`` (``axes``: [[NODE.FIELD, values], ...], ``mode``: what
choosing in the Sweep window's field boxes and typing its values does), ``quit``.

The frame counters (frames drawn, time to the first frame after opening, the editor's
own work per frame) are measured here, from outside the product's loop.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import dearpygui.dearpygui as dpg

from nodeflow.files.atomic import write_atomically

ENV_VAR = "NODEFLOW_EDITOR_HOOK"


class EditorHook:
    def __init__(self, app: Any, folder: Path):
        self.app = app
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        dpg.set_viewport_pos([0, 0])  # screen coordinates = window coordinates for xdotool
        self._frame_times: list[float] = []
        self.frames = 0
        self.started = time.perf_counter()
        self.open_seconds: float | None = None
        self.logic_seconds: list[float] = []
        frame = app.frame

        def timed_frame() -> None:  # the editor's own work per frame, without drawing
            began = time.perf_counter()
            frame()
            self.logic_seconds.append(time.perf_counter() - began)
            del self.logic_seconds[:-120]

        app.frame = timed_frame
        app.wake_checks.append(lambda: any(folder.glob("request-*.json")))

    @classmethod
    def install(cls, app: Any) -> Any:
        """A ``run_app`` frame hook: returns the per-frame call, or None when not asked for."""
        folder = os.environ.get(ENV_VAR)
        return cls(app, Path(folder)).poll if folder else None

    def poll(self) -> None:
        now = time.perf_counter()
        self.frames += 1
        if self.open_seconds is None and self.frames > 1:
            self.open_seconds = now - self.started  # built, read, laid out and drawn once
        self._frame_times.append(now)
        del self._frame_times[:-120]
        for request in sorted(self.folder.glob("request-*.json")):
            try:
                data = json.loads(request.read_text())
            except ValueError:
                continue  # still being written
            request.unlink()
            if not data.get("quiet"):
                self.app.woke()  # a test's request is a user's action: draw at full rate
            answer = self._handle(data)
            target = self.folder / request.name.replace("request", "response")
            write_atomically(target, json.dumps(answer).encode())

    def _handle(self, data: dict[str, Any]) -> dict[str, Any]:
        app, c = self.app, self.app.c
        cmd = data.get("cmd")
        if cmd == "state":
            return self._state()
        if cmd == "run":
            return {"refused": c.run()}
        if cmd == "screenshot":
            dpg.output_frame_buffer(file=str(data["path"]))
            return {"ok": True}
        if cmd == "open":
            app.open_file(data["path"])
            return {"ok": True, "status": c.status}
        if cmd == "resize":
            dpg.set_viewport_width(int(data["width"]))
            dpg.set_viewport_height(int(data["height"]))
            return {"ok": True}
        if cmd == "select":
            c.select(data["nodes"])
            return {"ok": True}
        if cmd == "zoom":
            app.canvas.zoom_by(int(data["steps"]))
            return {"ok": True}
        if cmd == "fit":
            app.fit_all()
            return {"ok": True}
        if cmd == "sweep_open":
            app.sweep.open()
            return {"shown": app.sweep.shown, "status": c.status}
        if cmd == "sweep_set":
            dialog = app.sweep
            labels = {target: label for label, target in dialog._labels.items()}
            for index, (target, values) in enumerate(data.get("axes", [])):
                dialog.choose_field(index, labels.get(target, target))
                dpg.set_value(dialog.values[index], values)
                dialog.type_values(index, values)
            if data.get("mode"):
                dialog.choose_mode(data["mode"])
            return {"ok": True, "axes": dialog.session.axes}
        if cmd == "quit":
            app.quit()
            return {"ok": True}
        if cmd == "answer_recovery":
            app.answer_recovery(bool(data.get("restore")))
            return {"ok": True}
        if cmd == "dialog":
            return {"shown": dpg.is_item_shown(app.file_dialog), "purpose": app._file_purpose,
                    "config": {k: v for k, v in dpg.get_item_configuration(app.file_dialog).items()
                               if k in ("default_filename", "default_path", "label")}}
        if cmd == "pick_picture":  # what the "..." button of a picture field does
            app.ask_picture(data["node"], data["field"])
            return {"ok": True}
        if cmd == "file_chosen":
            dpg.configure_item(app.file_dialog, show=False)
            app.on_file_chosen(Path(data["path"]))
            return {"ok": True, "status": c.status}
        return {"error": f"unknown command {cmd!r}"}

    def _sweep_state(self) -> dict[str, Any]:
        dialog = self.app.sweep
        state = dialog.session.state

        def rect(item: Any) -> list[float]:
            return [*dpg.get_item_rect_min(item), *dpg.get_item_rect_size(item)]

        return {"shown": dialog.shown, "status": state.status, "done": state.done, "total": state.total,
                "cost": dpg.get_value(dialog.cost), "error": dpg.get_value(dialog.error),
                "folder": dpg.get_value(dialog.folder_text), "points_bar": dpg.get_value(dialog.points_bar),
                "output_dir": str(state.output_dir) if state.output_dir else None,
                "sheet": str(state.sheet) if state.sheet else None, "sheet_rect": rect(dialog.sheet.item),
                "run_button": rect(dialog.run_button), "sheet_shown": dialog.sheet._shown is not None}

    def _state(self) -> dict[str, Any]:
        app, c, canvas = self.app, self.app.c, self.app.canvas
        view = c.runner.view
        times = self._frame_times
        recent = [t for t in times if t > times[-1] - 2.0] if times else []
        fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0
        return {
            "title": c.title,
            "dirty": c.dirty,
            "status": c.status,
            "status_kind": c.status_kind.value,
            "path": str(c.path) if c.path else None,
            "nodes": {
                nid: {"type": n.type, "title": n.title, "mode": n.mode, "pos": list(n.pos),
                      "values": {k: v for k, v in n.values.items() if isinstance(v, (int, float, str, bool))}}
                for nid, n in c.graph.nodes.items()
            },
            "links": [[l.source, l.output, l.target, l.input] for l in c.graph.iter_links()],
            "selection": sorted(c.selection),
            "run": {"status": view.status, "states": view.node_states, "images": len(view.images),
                    "error": view.error, "steps_previewed": len(view.step_previews),
                    "written": [str(p) for p in view.written]},
            "pins": canvas.pin_screen_positions(),
            "node_rects": {nid: [*dpg.get_item_rect_min(item), *dpg.get_item_rect_size(item)] for nid, item in canvas.nodes.items()},
            "thumb_rects": {nid: [*dpg.get_item_rect_min(t[1]), *dpg.get_item_rect_size(t[1])] for nid, t in canvas.thumbs.items()},
            "canvas_rect": [*canvas.corner(), *canvas.visible_size()],
            "wrapped_boxes": {".".join(dpg.get_item_user_data(item)): {
                "shown": dpg.get_value(item), "rect": [*dpg.get_item_rect_min(item), *dpg.get_item_rect_size(item)]}
                for item in canvas.wrapped},
            "zoom": canvas.view.zoom,
            "settled": not canvas.fit_pending,
            "preview_rect": [*dpg.get_item_rect_min(app.side.result.item), *dpg.get_item_rect_size(app.side.result.item)],
            "result_shown": app.side.result._shown is not None,
            "result_caption": dpg.get_value(app.side.result_caption),
            "palette_filter_rect": [*dpg.get_item_rect_min(app.palette.filter), *dpg.get_item_rect_size(app.palette.filter)],
            "viewport": [dpg.get_viewport_client_width(), dpg.get_viewport_client_height()],
            "recovery_offered": dpg.is_item_shown(app.recovery_window),
            "dialog_shown": dpg.is_item_shown(app.file_dialog),
            "groups": [{"title": g.get("title"), "pos": list(g["pos"]), "size": list(g["size"]),
                        "screen": [*canvas.grid_to_screen(tuple(g["pos"]))]} for g in app.groups.groups()],
            "group_items": len(dpg.get_item_children(app.groups.layer, 2) or []),
            "search": {"shown": app.search.shown, "pos": dpg.get_item_pos(app.search.window),
                       "types": [cls.type for cls in app.search._matches], "accepting": app.search.accepting},
            "sweep": self._sweep_state(),
            "fps": fps,
            "open_seconds": self.open_seconds,
            "logic_ms": 1000 * sum(self.logic_seconds) / max(len(self.logic_seconds), 1),
            "frames": self.frames,
        }
