"""The node search that opens at the cursor: on a double click on empty canvas, and
after an output is clicked or a link dragged from it ends on nothing (Dear PyGui sends
no event for that: the window notices the press on an output pin and the release away
from any pin). Then the list holds only node types that accept the output's type, and
the chosen node comes already linked."""

from __future__ import annotations

from typing import Callable

import dearpygui.dearpygui as dpg

from nodeflow.editor.controller import EditorController, search_node_types

LIST_LIMIT = 40
WIDTH, HEIGHT = 300, 330


class SearchPopup:
    def __init__(self, controller: EditorController, choose: Callable[[str], None]):
        self.c = controller
        self.choose = choose
        self.accepting: str | None = None  # the data type the new node must take
        self._matches: list[type] = []
        self._focus_next = False
        with dpg.window(popup=True, show=False, no_title_bar=True, width=WIDTH, height=HEIGHT) as self.window:
            self.title = dpg.add_text("Add node", color=(140, 150, 170))
            self.query = dpg.add_input_text(width=-1, hint="type to search, Enter adds", callback=self._refilter)
            self.list = dpg.add_child_window(height=-1, border=False)

    @property
    def shown(self) -> bool:
        return dpg.is_item_shown(self.window)

    def open_at(self, pos: list[float], accepting: str | None = None, what: str = "") -> None:
        self.accepting = accepting
        dpg.set_value(self.title, f"Add a node that takes {what}" if accepting else "Add node")
        dpg.set_value(self.query, "")
        self._refilter()
        dpg.configure_item(self.window, pos=[int(pos[0]), int(pos[1])], show=True)
        self._focus_next = True

    def close(self) -> None:
        dpg.configure_item(self.window, show=False)

    def each_frame(self) -> None:
        if self._focus_next and self.shown:
            self._focus_next = False
            dpg.focus_item(self.query)  # only once the window is drawn

    def _refilter(self, *_: object) -> None:
        matches = search_node_types(self.c.registry, dpg.get_value(self.query))
        if self.accepting is not None:
            allowed = set(self.c.types_accepting(self.accepting))
            matches = [cls for cls in matches if cls in allowed]
        self._matches = matches
        dpg.delete_item(self.list, children_only=True)
        for cls in matches[:LIST_LIMIT]:
            dpg.add_selectable(label=f"{cls.display_name}  ({cls.category})", parent=self.list, user_data=cls.type,
                               callback=lambda s, a, u: self._chosen(u))
        if not matches:
            dpg.add_text("no node type matches", parent=self.list, color=(170, 120, 120))

    def on_enter(self) -> bool:
        """Enter in the search box adds the best match."""
        if not self.shown or not self._matches:
            return False
        self._chosen(self._matches[0].type)
        return True

    def _chosen(self, type_name: str) -> None:
        self.close()
        self.choose(type_name)
