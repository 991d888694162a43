"""Side panels: run progress, the result with every picture of the run and a gallery
of this session's files, the live step preview and the strip of per-step previews, the
selected node's properties and its insight plot.

The panel names no node kind: the running node's step previews are titled by its
declared ``preview_label``, plots by what its ``insight`` hook returns.
"""

from __future__ import annotations

from typing import Callable

import os
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import dearpygui.dearpygui as dpg
import numpy as np
from PIL import Image

from nodeflow.model.hooks import Insight, node_insight
from nodeflow.editor.controller import EditorController
from nodeflow.editor.images import fit_rgba
from nodeflow.editor.runner import NODE_CODE_LOCK, RunView

PREVIEW_SIZE = 340
LIVE_SIZE = 164
STRIP_FRAMES, STRIP_THUMB = 6, 56


class ImageSlot:
    """A dynamic texture showing one picture, refreshed only when the picture changes."""

    def __init__(self, registry: int, width: int, height: int, parent: int | str):
        self.width, self.height = width, height
        blank = np.full(width * height * 4, 0.1, dtype=np.float32)
        blank[3::4] = 1.0
        self.texture = dpg.add_dynamic_texture(width, height, blank, parent=registry)
        self.item = dpg.add_image(self.texture, parent=parent)
        # The picture itself, not its id(): a freed picture's id can be reused by the next.
        self._shown: Image.Image | None = None

    def show(self, image: Image.Image | None) -> None:
        if image is None or image is self._shown:
            return
        self._shown = image
        dpg.set_value(self.texture, fit_rgba(image, self.width, self.height))

    def clear(self) -> None:
        if self._shown is not None:
            self._shown = None
            blank = np.full(self.width * self.height * 4, 0.1, dtype=np.float32)
            blank[3::4] = 1.0
            dpg.set_value(self.texture, blank)


def strip_image(frames: list[Image.Image], count: int = STRIP_FRAMES, thumb: int = STRIP_THUMB) -> Image.Image | None:
    """``count`` evenly spaced frames of a run's step previews side by side, last one included."""
    if not frames:
        return None
    picks = sorted({round(i * (len(frames) - 1) / max(count - 1, 1)) for i in range(count)})
    strip = Image.new("RGB", (thumb * count, thumb), (24, 24, 28))
    for slot, index in enumerate(picks):
        strip.paste(frames[index].convert("RGB").resize((thumb, thumb)), (slot * thumb, 0))
    return strip


def _preview_title(cls: type, values: dict) -> str:
    try:  # a pack's display hook must not break the panel
        return str(cls.preview_title(dict(values)))
    except Exception:
        return str(getattr(cls, "preview_label", ""))


def _insight_in_turn(cls: type, values: dict, upstream: dict) -> Insight | None:
    with NODE_CODE_LOCK:
        return node_insight(cls, values, upstream)


def _first_sentence(text: str, limit: int = 110) -> str:
    sentence = text.strip().split(". ")[0].rstrip(".")
    return sentence if len(sentence) <= limit else sentence[: limit - 3] + "..."


def run_summary(view: RunView, label: Callable[[str], str]) -> str:
    """The progress bar's words: the state, which node is working (so a model that loads
    for a minute is named, not hidden behind "0/10 nodes"), nodes done, the step."""
    done = f"{view.finished_nodes}/{len(view.planned)} nodes" if view.planned else ""
    step = f"step {view.step[1]}/{view.step[2]}" if view.step else ""
    if view.status == "running" and view.current:
        parts = [f"running {label(view.current)}", done, step]
    else:
        parts = [view.status, done]
    return "  ".join(p for p in parts if p) + f"  {view.elapsed:.1f} s"


def open_folder(folder: Path) -> None:
    """Show ``folder`` in the system's file manager."""
    if sys.platform.startswith("win"):
        os.startfile(folder)  # type: ignore[attr-defined]
    else:
        subprocess.Popen(["open" if sys.platform == "darwin" else "xdg-open", str(folder)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class SidePanel:
    def __init__(self, controller: EditorController, parent: int | str, textures: int,
                 output_folder: Callable[[], Path] = lambda: Path("output")):
        self.c = controller
        self.output_folder = output_folder
        self._shown_node: str | None = None
        self._shown_values: object = None
        self._strip_len = -1
        self._pictures_shown: object = None
        self._gallery_len = -1
        self.shown_picture: tuple[str, int] | None = None  # (node id, index) of the big picture
        self.shown_file: Path | None = None
        # Insight hooks may import heavy libraries, so they run on a worker thread and
        # the plot appears when ready.
        self._insight_pool = ThreadPoolExecutor(1, thread_name_prefix="nodeflow-insight")
        self._insight_future: Future | None = None
        self._insight: Insight | None = None
        with dpg.group(parent=parent) as column:
            self.column = column
            dpg.add_text("Run")
            self.progress = dpg.add_progress_bar(default_value=0.0, width=PREVIEW_SIZE, overlay="idle")
            self.run_text = dpg.add_text("", wrap=PREVIEW_SIZE, color=(240, 110, 100))
            dpg.add_separator()
            dpg.add_text("Result")
            self.result = ImageSlot(textures, PREVIEW_SIZE, PREVIEW_SIZE, column)
            self.result_caption = dpg.add_text("press Run (Ctrl+Enter) to make an image", wrap=PREVIEW_SIZE)
            # Every picture of the run, and every file this session wrote.
            self.picture_choice = dpg.add_combo([], width=PREVIEW_SIZE, label="", show=False, callback=self._on_pick_picture)
            with dpg.group(horizontal=True):
                self.file_choice = dpg.add_combo([], width=PREVIEW_SIZE - 170, label="", callback=self._on_pick_file,
                                                 default_value="", show=False)
                self.open_button = dpg.add_button(label="Open folder", callback=self._open_folder)
                self.copy_button = dpg.add_button(label="Copy path", callback=self._copy_path, show=False)
            dpg.add_separator()
            with dpg.group(horizontal=True):
                with dpg.group():
                    self.live_title = dpg.add_text("Live preview", wrap=LIVE_SIZE)
                    self.live = ImageSlot(textures, LIVE_SIZE, LIVE_SIZE, dpg.last_container())
                with dpg.group():
                    dpg.add_text("Selected node")
                    self.title_input = dpg.add_input_text(width=LIVE_SIZE, hint="title", on_enter=True, callback=self._on_rename)
                    self.node_text = dpg.add_text("", wrap=LIVE_SIZE)
            self.strip_title = dpg.add_text("Step previews (last run)")
            self.strip = ImageSlot(textures, STRIP_FRAMES * STRIP_THUMB, STRIP_THUMB, column)
            dpg.add_separator()
            with dpg.plot(label="", height=170, width=PREVIEW_SIZE, no_menus=True, show=False) as self.plot:
                self.x_axis = dpg.add_plot_axis(dpg.mvXAxis, label="")
                self.y_axis = dpg.add_plot_axis(dpg.mvYAxis, label="")
            self.plot_choice = dpg.add_radio_button([], horizontal=True, callback=lambda: self._draw_plot())
            self.insight_text = dpg.add_text("select a node that explains its settings (e.g. a sampler)", wrap=PREVIEW_SIZE)

    # ------------------------------------------------------------------ run
    def show_run(self, view: RunView) -> None:
        dpg.set_value(self.progress, view.fraction)
        dpg.configure_item(self.progress, overlay=run_summary(view, self.c.label))
        dpg.set_value(self.run_text, view.error or "")
        self.live.show(view.live_preview)
        if view.step and view.live_preview is not None:
            node = self.c.graph.nodes.get(view.step[0])
            cls = self.c.registry.get(node.type) if node is not None else None
            what = _preview_title(cls, node.values) if cls is not None else ""
            what = what or "step preview"
            dpg.set_value(self.live_title, f"Live: {what}")
        if len(view.step_previews) != self._strip_len:
            self._strip_len = len(view.step_previews)
            self.strip.show(strip_image(view.step_previews))
        pictures = (id(view), len(view.images), view.status)
        if pictures != self._pictures_shown:
            self._pictures_shown = pictures
            self._show_pictures(view)
        if len(self.c.written) != self._gallery_len:
            self._gallery_len = len(self.c.written)
            self._show_gallery()

    def _show_pictures(self, view: RunView) -> None:
        labels = [f"{i + 1}: {img.width}x{img.height} from {self.c.label(nid)}" for i, (nid, img) in enumerate(view.images)]
        dpg.configure_item(self.picture_choice, items=labels, show=len(labels) > 1)
        if view.images:
            self._show_picture(view, 0)
            if len(labels) > 1:
                dpg.set_value(self.picture_choice, labels[0])
        elif view.status == "running" and self.result._shown is not None:
            dpg.set_value(self.result_caption, "running... (the picture above is from the previous run)")
        elif view.status == "idle":
            self.result.clear()
            self.shown_picture = None
            dpg.set_value(self.result_caption, "press Run (Ctrl+Enter) to make an image")

    def _show_picture(self, view: RunView, index: int) -> None:
        node_id, image = view.images[index]
        self.result.show(image)
        self.shown_picture, self.shown_file = (node_id, index), None
        more = f" (picture {index + 1} of {len(view.images)}: choose below)" if len(view.images) > 1 else ""
        dpg.set_value(self.result_caption, f"{image.width}x{image.height} from {self.c.label(node_id)}{more}")

    def _on_pick_picture(self, sender: int, label: str) -> None:
        view = self.c.runner.view
        index = int(label.split(":", 1)[0]) - 1
        if 0 <= index < len(view.images):
            self._show_picture(view, index)

    def _show_gallery(self) -> None:
        files = [str(p) for p in reversed(self.c.written)]  # newest first
        dpg.configure_item(self.file_choice, items=files, show=bool(files))
        dpg.configure_item(self.copy_button, show=bool(files))
        if files:
            dpg.set_value(self.file_choice, files[0])

    def _on_pick_file(self, sender: int, name: str) -> None:
        path = Path(name)
        try:
            with Image.open(path) as picture:
                picture.load()
                self.result.show(picture.convert("RGB"))
        except OSError as exc:
            self.c.complain(f"could not show {path}: {exc}")
            return
        self.shown_file = path
        dpg.set_value(self.result_caption, f"{path}")

    def chosen_file(self) -> Path | None:
        value = dpg.get_value(self.file_choice)
        return Path(value) if value else None

    def _open_folder(self) -> None:
        chosen = self.chosen_file()
        folder = chosen.parent if chosen else Path(self.output_folder())
        folder.mkdir(parents=True, exist_ok=True)
        try:
            open_folder(folder.resolve())
            self.c.say(f"opened the folder {folder.resolve()}")
        except OSError as exc:
            self.c.complain(f"could not open {folder}: {exc}")

    def _copy_path(self) -> None:
        chosen = self.chosen_file()
        if chosen is not None:
            dpg.set_clipboard_text(str(chosen.resolve()))
            self.c.say(f"copied {chosen.resolve()}")

    # -------------------------------------------------------- selected node
    def show_selection(self) -> None:
        self._collect_insight()
        selected = sorted(self.c.selection)
        node_id = selected[0] if len(selected) == 1 else None
        node = self.c.graph.nodes.get(node_id) if node_id else None
        # the revision too: a change upstream (another checkpoint) changes what the plot shows
        values = (node.title, node.mode, dict(node.values), self.c.history.revision) if node else None
        if node_id == self._shown_node and values == self._shown_values:
            return
        self._shown_node, self._shown_values = node_id, values
        cls = self.c.registry.get(node.type) if node else None
        if node is None:
            dpg.set_value(self.title_input, "")
            dpg.set_value(self.node_text, f"{len(selected)} nodes selected" if selected else "")
        else:
            dpg.set_value(self.title_input, node.title)
            dpg.set_value(self.node_text, f"{node.type} #{node.id}\n{_first_sentence(cls.description) if cls else 'not installed'}")
        if cls is not None and callable(getattr(cls, "insight", None)):
            upstream = self.c.upstream_facts(node.id)
            self._insight_future = self._insight_pool.submit(_insight_in_turn, cls, dict(node.values), upstream)
            busy = self.c.runner.running
            dpg.set_value(self.insight_text, "computing after the run..." if busy else "computing...")
        else:
            self._insight_future = None
            self._show_insight(None)

    def _collect_insight(self) -> None:
        future = self._insight_future
        if future is not None and future.done():
            self._insight_future = None
            self._show_insight(future.result())

    def _show_insight(self, insight: Insight | None) -> None:
        self._insight = insight
        plots = insight.plots if insight else ()
        dpg.configure_item(self.plot_choice, items=[p.y_label or p.title for p in plots] if len(plots) > 1 else [])
        if plots:
            dpg.set_value(self.plot_choice, plots[0].y_label or plots[0].title)
        if insight is None:
            text = "select a node that explains its settings (e.g. a sampler)"
        else:
            text = insight.error or "\n".join(insight.notes)
        dpg.set_value(self.insight_text, text)
        self._draw_plot()

    def _draw_plot(self) -> None:
        dpg.delete_item(self.y_axis, children_only=True)
        plots = self._insight.plots if self._insight else ()
        dpg.configure_item(self.plot, show=bool(plots))
        if not plots:
            return
        chosen = dpg.get_value(self.plot_choice)
        plot = next((p for p in plots if (p.y_label or p.title) == chosen), plots[0])
        dpg.configure_item(self.plot, label=plot.title)
        dpg.configure_item(self.x_axis, label=plot.x_label)
        dpg.configure_item(self.y_axis, label=plot.y_label)
        for series in plot.series:
            dpg.add_line_series(list(series.x), list(series.y), label=series.label, parent=self.y_axis)
        dpg.fit_axis_data(self.x_axis)
        dpg.fit_axis_data(self.y_axis)

    def _on_rename(self, sender: int, title: str) -> None:
        if self._shown_node in self.c.graph.nodes:
            self.c.rename(self._shown_node, title)
