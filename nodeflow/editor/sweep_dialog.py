"""The Sweep window (Run > Sweep the selected nodes...): one or two fields of the selected
nodes, their values, product or zip, the cost before running, progress over points and
steps while it runs, and the contact sheet with its folder when done.

Everything it shows comes from :class:`~nodeflow.editor.sweeping.SweepSession` and the
run's view; the buttons call the session (Run) and the controller (Stop, as Esc does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import dearpygui.dearpygui as dpg

from nodeflow.editor.controller import EditorController
from nodeflow.editor.panels import ImageSlot, open_folder
from nodeflow.editor.sweeping import MAX_AXES, SweepSession

WIDTH = 560
SHEET_SIZE = 520
NONE = "(none)"
MODES = ("product: every combination", "zip: the i-th value of each")
ERROR_COLOUR = (240, 110, 100)


class SweepDialog:
    def __init__(self, controller: EditorController, textures: int,
                 show_folder: Callable[[Path], None] = open_folder):
        self.c = controller
        self.session = SweepSession(controller)
        self.show_folder = show_folder
        self._labels: dict[str, str] = {}  # combo label -> NODE.FIELD
        self._sheet_shown: Any = None
        with dpg.window(label="Sweep", show=False, width=WIDTH + 24, height=SHEET_SIZE + 330, no_collapse=True,
                        pos=(300, 60)) as self.window:
            self.nodes_text = dpg.add_text("", wrap=WIDTH, color=(170, 175, 190))
            self.fields: list[int] = []
            self.values: list[int] = []
            for index in range(MAX_AXES):
                with dpg.group(horizontal=True):
                    self.fields.append(dpg.add_combo([], width=280, label="", user_data=index,
                                                     callback=lambda s, a, u: self.choose_field(u, a)))
                    self.values.append(dpg.add_input_text(width=WIDTH - 290, hint="1..4   0.5..2:0.5   4,6,8   @file.txt",
                                                          user_data=index,
                                                          callback=lambda s, a, u: self.type_values(u, a)))
            self.mode = dpg.add_radio_button(list(MODES), default_value=MODES[0], horizontal=True,
                                             callback=lambda s, a: self.choose_mode("zip" if a == MODES[1] else "product"))
            self.cost = dpg.add_text("", wrap=WIDTH)
            self.error = dpg.add_text("", wrap=WIDTH, color=ERROR_COLOUR)
            with dpg.group(horizontal=True):
                self.run_button = dpg.add_button(label="Run sweep", callback=lambda: self.run())
                self.stop_button = dpg.add_button(label="Stop (Esc)", callback=lambda: self.session.stop())
                dpg.add_button(label="Close", callback=lambda: self.close())
            self.points_bar = dpg.add_progress_bar(default_value=0.0, width=WIDTH, overlay="points")
            self.steps_bar = dpg.add_progress_bar(default_value=0.0, width=WIDTH, overlay="steps")
            with dpg.group(horizontal=True):
                self.open_button = dpg.add_button(label="Open folder", show=False,
                                                  callback=lambda: self._open_folder())
                self.folder_text = dpg.add_text("", wrap=WIDTH - 110)
            self.sheet = ImageSlot(textures, SHEET_SIZE, SHEET_SIZE, self.window)

    # ------------------------------------------------------------ user actions
    @property
    def shown(self) -> bool:
        return bool(dpg.is_item_shown(self.window))

    def text_inputs(self) -> list[int]:
        return list(self.values)

    def open(self) -> None:
        """Vary the nodes selected now; without a selection the status bar says what to do."""
        why = self.session.take_selection() if not self.session.running else None
        if why is not None:
            self.c.complain(why)
            return
        self._labels = {label: target for target, label in self.session.choices().items()}
        names = ", ".join(self.c.label(n) for n in self.session.nodes)
        dpg.set_value(self.nodes_text, f"Vary one or two fields of {names}")
        items = list(self._labels)
        for index, combo in enumerate(self.fields):
            dpg.configure_item(combo, items=items if index == 0 else [NONE, *items])
        self._show_axes()
        dpg.configure_item(self.window, show=True)
        dpg.focus_item(self.window)
        self.refresh()

    def close(self) -> None:
        dpg.configure_item(self.window, show=False)

    def choose_field(self, index: int, label: str) -> None:
        self.session.set_axis(index, self._labels.get(label))
        self._show_axes()
        self.refresh()

    def type_values(self, index: int, text: str) -> None:
        if index < len(self.session.axes):
            self.session.set_axis(index, self.session.axes[index][0], text)
        self.refresh()

    def choose_mode(self, mode: str) -> None:
        self.session.mode = mode
        self.refresh()

    def run(self) -> None:
        refused = self.session.start()
        dpg.set_value(self.error, refused or "")
        if refused is None:
            self._sheet_shown = None
            self.sheet.clear()
            dpg.set_value(self.folder_text, f"into {self.session.state.output_dir}")
            dpg.configure_item(self.open_button, show=False)

    def _open_folder(self) -> None:
        folder = self.session.state.output_dir
        if folder is not None and folder.is_dir():
            self.show_folder(folder)

    # ------------------------------------------------------------ showing
    def _show_axes(self) -> None:
        by_target = {target: label for label, target in self._labels.items()}
        for index, (combo, box) in enumerate(zip(self.fields, self.values)):
            axis = self.session.axes[index] if index < len(self.session.axes) else None
            dpg.set_value(combo, by_target.get(axis[0], NONE) if axis else NONE)
            dpg.set_value(box, axis[1] if axis else "")
            dpg.configure_item(box, enabled=axis is not None)

    def refresh(self) -> None:
        """The cost of the sweep as chosen, or why it cannot run (naming node and field)."""
        sweep = self.session.plan()
        if isinstance(sweep, str):
            dpg.set_value(self.cost, "")
            dpg.set_value(self.error, sweep)
        else:
            dpg.set_value(self.cost, self.session.cost_text(sweep))
            dpg.set_value(self.error, "")

    def each_frame(self) -> None:
        """Call once a frame, after the controller's poll."""
        if not self.session.poll() and not self.session.running:
            return
        state = self.session.state
        total = max(state.total, 1)
        dpg.set_value(self.points_bar, state.done / total)
        dpg.configure_item(self.points_bar, overlay=f"points {state.done} / {state.total}"
                           + (f", {len(state.failed)} failed" if state.failed else ""))
        step = self.c.runner.view.step if self.session.running else None
        dpg.set_value(self.steps_bar, step[1] / step[2] if step and step[2] else 0.0)
        dpg.configure_item(self.steps_bar, overlay=f"steps {step[1]} / {step[2]} ({self.c.label(step[0])})"
                           if step else "steps")
        if not self.session.running:
            if state.status == "error":
                dpg.set_value(self.error, f"sweep failed: {state.error}")
            where = f"{state.status}: {state.done} of {state.total} point(s) in {state.output_dir}"
            dpg.set_value(self.folder_text, where + (f"\nsheet: {state.sheet.name}" if state.sheet else ""))
            dpg.configure_item(self.open_button, show=state.output_dir is not None and state.output_dir.is_dir())
            if state.sheet_image is not None and state.sheet_image is not self._sheet_shown:
                self._sheet_shown = state.sheet_image
                self.sheet.show(state.sheet_image)
