"""Adding nodes: a searchable palette (type to filter, Enter places the first match)
and a right-click menu of node types by category."""

from __future__ import annotations

from itertools import groupby
from typing import Callable

import dearpygui.dearpygui as dpg

from nodeflow.editor.controller import EditorController, search_node_types

LIST_LIMIT = 60
PALETTE_WIDTH = 220

Placer = Callable[[str], None]


def _summary(cls: type) -> str:
    text = (cls.description or "").strip()
    return text.splitlines()[0] if text else ""


class Palette:
    def __init__(self, controller: EditorController, parent: int | str, place: Placer):
        self.c = controller
        self.place = place
        self._matches: list[type] = []
        self._filter_was_active = False
        with dpg.group(parent=parent):
            dpg.add_text("Add node")
            self.filter = dpg.add_input_text(hint="search (Ctrl+F), Enter adds", width=PALETTE_WIDTH, callback=self._refilter)
            self.list = dpg.add_child_window(width=PALETTE_WIDTH, height=-1, border=False)
        self._refilter()

    def focus(self) -> None:
        dpg.focus_item(self.filter)

    def _refilter(self, *_: object) -> None:
        self._matches = search_node_types(self.c.registry, dpg.get_value(self.filter))
        dpg.delete_item(self.list, children_only=True)
        for category, group in groupby(self._matches[:LIST_LIMIT], key=lambda cls: cls.category):
            dpg.add_text(category, parent=self.list, color=(140, 150, 170))
            for cls in group:
                item = dpg.add_selectable(label=f"  {cls.display_name}", parent=self.list, user_data=cls.type,
                                          callback=lambda s, a, u: self.place(u))
                if _summary(cls):
                    with dpg.tooltip(item):
                        dpg.add_text(_summary(cls), wrap=300)

    def track_focus(self) -> None:
        """Called each frame: Enter deactivates the text box, so remember it was active."""
        self._filter_was_active = dpg.is_item_active(self.filter)

    def on_enter(self) -> bool:
        """Place the best match if the user pressed Enter in the search box."""
        if not (self._filter_was_active or dpg.is_item_active(self.filter)) or not self._matches:
            return False
        self.place(self._matches[0].type)
        return True


class ContextMenu:
    """Right-click on the canvas: node types grouped by category."""

    def __init__(self, controller: EditorController, place: Placer):
        self.c = controller
        self.place = place
        with dpg.window(popup=True, show=False, no_title_bar=True, autosize=True) as self.window:
            dpg.add_text("Add node", color=(140, 150, 170))
            for category, group in groupby(controller.registry.types(), key=lambda cls: cls.category):
                with dpg.menu(label=category):
                    for cls in group:
                        dpg.add_menu_item(label=cls.display_name, user_data=cls.type, callback=self._chosen)

    def open_at(self, pos: list[float]) -> None:
        dpg.configure_item(self.window, pos=pos, show=True)

    def _chosen(self, sender: int, app_data: object, type_name: str) -> None:
        dpg.configure_item(self.window, show=False)
        self.place(type_name)
