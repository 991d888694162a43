"""Side panels: run progress, result and live previews, the per-step x0 strip, the
selected node's properties and its insight plot."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import dearpygui.dearpygui as dpg
import numpy as np
from PIL import Image

from nodeflow.model.hooks import Insight, node_insight
from nodeflow.editor.controller import EditorController
from nodeflow.editor.images import fit_rgba
from nodeflow.editor.runner import LIBRARY_LOCK, RunView

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


def strip_image(frames: list[Image.Image], count: int = STRIP_FRAMES, thumb: int = STRIP_THUMB) -> Image.Image | None:
    """``count`` evenly spaced frames of a run's x0 estimates side by side, last one included."""
    if not frames:
        return None
    picks = sorted({round(i * (len(frames) - 1) / max(count - 1, 1)) for i in range(count)})
    strip = Image.new("RGB", (thumb * count, thumb), (24, 24, 28))
    for slot, index in enumerate(picks):
        strip.paste(frames[index].convert("RGB").resize((thumb, thumb)), (slot * thumb, 0))
    return strip


def _insight_in_turn(cls: type, values: dict) -> Insight | None:
    with LIBRARY_LOCK:
        return node_insight(cls, values)


def _first_sentence(text: str, limit: int = 110) -> str:
    sentence = text.strip().split(". ")[0].rstrip(".")
    return sentence if len(sentence) <= limit else sentence[: limit - 3] + "..."


class SidePanel:
    def __init__(self, controller: EditorController, parent: int | str, textures: int):
        self.c = controller
        self._shown_node: str | None = None
        self._shown_values: object = None
        self._strip_len = -1
        # Insight hooks may import heavy libraries (a sampler's schedule needs diffusers),
        # so they run on a worker thread and the plot appears when ready.
        self._insight_pool = ThreadPoolExecutor(1, thread_name_prefix="nodeflow-insight")
        self._insight_future: Future | None = None
        self._insight: Insight | None = None
        with dpg.group(parent=parent) as column:
            dpg.add_text("Run")
            self.progress = dpg.add_progress_bar(default_value=0.0, width=PREVIEW_SIZE, overlay="idle")
            self.run_text = dpg.add_text("", wrap=PREVIEW_SIZE)
            dpg.add_separator()
            dpg.add_text("Result")
            self.result = ImageSlot(textures, PREVIEW_SIZE, PREVIEW_SIZE, column)
            self.result_caption = dpg.add_text("press Run (Ctrl+Enter) to make an image", wrap=PREVIEW_SIZE)
            dpg.add_separator()
            with dpg.group(horizontal=True):
                with dpg.group():
                    dpg.add_text("Live preview (x0)")
                    self.live = ImageSlot(textures, LIVE_SIZE, LIVE_SIZE, dpg.last_container())
                with dpg.group():
                    dpg.add_text("Selected node")
                    self.title_input = dpg.add_input_text(width=LIVE_SIZE, hint="title", on_enter=True, callback=self._on_rename)
                    self.node_text = dpg.add_text("", wrap=LIVE_SIZE)
            dpg.add_text("x0 estimate per step (last run)")
            self.strip = ImageSlot(textures, STRIP_FRAMES * STRIP_THUMB, STRIP_THUMB, column)
            dpg.add_separator()
            with dpg.plot(label="Noise schedule", height=170, width=PREVIEW_SIZE, no_menus=True) as self.plot:
                self.x_axis = dpg.add_plot_axis(dpg.mvXAxis, label="step")
                self.y_axis = dpg.add_plot_axis(dpg.mvYAxis, label="")
            self.plot_choice = dpg.add_radio_button([], horizontal=True, callback=lambda: self._draw_plot())
            self.insight_text = dpg.add_text("select a node that explains its settings (e.g. a sampler)", wrap=PREVIEW_SIZE)

    # ------------------------------------------------------------------ run
    def show_run(self, view: RunView) -> None:
        dpg.set_value(self.progress, view.fraction)
        step = f"  step {view.step[1]}/{view.step[2]}" if view.step else ""
        done = f"{view.finished_nodes}/{len(view.planned)} nodes" if view.planned else ""
        dpg.configure_item(self.progress, overlay=f"{view.status}  {done}{step}  {view.elapsed:.1f} s")
        dpg.set_value(self.run_text, view.error or "")
        self.live.show(view.live_preview)
        if len(view.x0_strip) != self._strip_len:
            self._strip_len = len(view.x0_strip)
            self.strip.show(strip_image(view.x0_strip))
        if view.images:
            node_id, image = view.images[0]
            self.result.show(image)
            more = f" (+{len(view.images) - 1} more)" if len(view.images) > 1 else ""
            dpg.set_value(self.result_caption, f"{image.width}x{image.height} from node #{node_id}{more}")

    # -------------------------------------------------------- selected node
    def show_selection(self) -> None:
        self._collect_insight()
        selected = sorted(self.c.selection)
        node_id = selected[0] if len(selected) == 1 else None
        node = self.c.graph.nodes.get(node_id) if node_id else None
        values = (node.title, node.mode, dict(node.values)) if node else None
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
            self._insight_future = self._insight_pool.submit(_insight_in_turn, cls, dict(node.values))
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
        if not plots:
            dpg.configure_item(self.plot, label="Noise schedule")
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
