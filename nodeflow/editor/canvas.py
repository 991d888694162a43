"""The node canvas: a Dear PyGui node editor that mirrors the graph model.

The model is the source of truth. User gestures (link drags, widget edits, node
drags) become controller calls; the canvas then redraws from the model's change
events. Links are never added to the node editor by its own callbacks, so a refused
or replaced link can never leave the picture out of step with the graph.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable

import dearpygui.dearpygui as dpg

from nodeflow.model.fields import Bool, Choice, FileChoice, Float, Input, Int, Seed, String, Widget
from nodeflow.model.graph import Link, NodeInstance
from nodeflow.model.hooks import field_options
from nodeflow.editor.controller import EditorController
from nodeflow.editor.theme import Themes

WIDGET_WIDTH = 170
SEED_MAX = 2**64 - 1


class Canvas:
    def __init__(self, controller: EditorController, parent: int | str, file_options: Callable[[FileChoice], list[str]] | None = None):
        self.c = controller
        self.themes = Themes(controller.registry.data_types())
        self.file_options = file_options or (lambda field: [])
        self.editor = dpg.add_node_editor(
            parent=parent,
            callback=self._on_link_drag,
            delink_callback=self._on_delink,
            minimap=True,
            minimap_location=dpg.mvNodeMiniMap_Location_BottomRight,
            width=-1,
            height=-1,
        )
        self.nodes: dict[str, int] = {}  # node id -> dpg node
        self.attrs: dict[tuple[str, str, str], int] = {}  # (node id, name, "in"/"out") -> dpg attribute
        self.attr_owner: dict[int, tuple[str, str, str]] = {}
        self.widgets: dict[tuple[str, str], int] = {}  # (node id, input name) -> dpg widget
        self.links: dict[Link, int] = {}
        self._states: dict[str, str] = {}
        self._last_shown_selection: list[str] = []
        self._marked: set[str] = set()  # nodes outlined as selected by the controller
        controller.subscribe(self._on_model_event)
        self.rebuild()

    # ---------------------------------------------------------------- building
    def rebuild(self) -> None:
        dpg.delete_item(self.editor, children_only=True)
        self.nodes.clear(), self.attrs.clear(), self.attr_owner.clear(), self.widgets.clear(), self.links.clear()
        for node in self.c.graph.nodes.values():
            self._add_node(node)
        self._sync_links()

    def _add_node(self, node: NodeInstance) -> None:
        cls = self.c.registry.get(node.type)
        item = dpg.add_node(label=self._title(node), parent=self.editor, pos=[int(node.pos[0]), int(node.pos[1])], user_data=node.id)
        self.nodes[node.id] = item
        if cls is None:
            self._add_missing_type(node, item)
        else:
            for field_decl in cls.inputs.values():
                self._add_input(node, item, field_decl)
            for output in cls.outputs:
                with dpg.node_attribute(parent=item, attribute_type=dpg.mvNode_Attr_Output, shape=dpg.mvNode_PinShape_CircleFilled) as attr:
                    label = dpg.add_text(f"{output.name}", indent=WIDGET_WIDTH - 8 * len(output.name))
                    self._tooltip(label, f"{output.type}" + (f": {output.tooltip}" if output.tooltip else ""))
                self._register_attr(attr, node.id, output.name, "out", output.data_type)
        self._apply_theme(node.id)
        self._sync_widget_states(node.id)

    def _add_input(self, node: NodeInstance, parent: int, field_decl: Input) -> None:
        shape = dpg.mvNode_PinShape_Circle if field_decl.is_widget else dpg.mvNode_PinShape_CircleFilled
        with dpg.node_attribute(parent=parent, attribute_type=dpg.mvNode_Attr_Input, shape=shape) as attr:
            tip = f"{field_decl.name} ({field_decl.data_type})" + (f": {field_decl.tooltip}" if field_decl.tooltip else "")
            if isinstance(field_decl, Widget):
                widget = self._widget(node, field_decl)
                self.widgets[(node.id, field_decl.name)] = widget
                self._tooltip(widget, tip)
            else:
                optional = " (optional)" if field_decl.optional else ""
                label = dpg.add_text(f"{field_decl.name}{optional}")
                self._tooltip(label, tip)
        self._register_attr(attr, node.id, field_decl.name, "in", field_decl.data_type)

    def _widget(self, node: NodeInstance, field_decl: Widget) -> int:
        """One widget per value, chosen by the field's kind and ranges."""
        name = field_decl.name
        value = _shown_value(field_decl, node.values.get(name, field_decl.default))
        callback = self._on_widget_edit
        common = dict(label=name, width=WIDGET_WIDTH, user_data=(node.id, name), callback=callback)
        if isinstance(field_decl, Seed):
            with dpg.group(horizontal=True):
                widget = dpg.add_input_text(default_value=str(value), decimal=True, on_enter=False, **{**common, "width": WIDGET_WIDTH - 34})
                button = dpg.add_button(label="dice", width=34, callback=self._on_randomize, user_data=(node.id, name))
                self._tooltip(button, "pick a new random seed")
            return widget
        if isinstance(field_decl, Int):
            lo = field_decl.min if field_decl.min is not None else -(2**31)
            hi = field_decl.max if field_decl.max is not None else 2**31 - 1
            lo, hi = max(lo, -(2**31)), min(hi, 2**31 - 1)
            return dpg.add_drag_int(default_value=int(value), min_value=lo, max_value=hi, clamped=True, speed=max(field_decl.step, 1) * 0.25, **common)
        if isinstance(field_decl, Float):
            if field_decl.min is not None and field_decl.max is not None and field_decl.max - field_decl.min <= 100:
                return dpg.add_slider_double(default_value=float(value), min_value=field_decl.min, max_value=field_decl.max, format="%.3g", **common)
            lo = field_decl.min if field_decl.min is not None else -1e30
            hi = field_decl.max if field_decl.max is not None else 1e30
            return dpg.add_drag_double(default_value=float(value), min_value=lo, max_value=hi, clamped=True, speed=field_decl.step, format="%.4g", **common)
        if isinstance(field_decl, Bool):
            return dpg.add_checkbox(default_value=bool(value), **{k: v for k, v in common.items() if k != "width"})
        if isinstance(field_decl, Choice):
            return dpg.add_combo(list(field_decl.choices), default_value=str(value), **common)
        if isinstance(field_decl, FileChoice):
            cls = self.c.registry.get(node.type)
            offered = field_options(cls, name, self.c.runner.run_options.get("settings"))
            options = list(dict.fromkeys([str(value), *(offered if offered is not None else self.file_options(field_decl))]))
            return dpg.add_combo([o for o in options if o], default_value=str(value), **common)
        if isinstance(field_decl, String) and field_decl.multiline:
            dpg.add_text(name)
            return dpg.add_input_text(default_value=str(value), multiline=True, height=64, tab_input=False, **{**common, "label": ""})
        return dpg.add_input_text(default_value=str(value), **common)

    def _add_missing_type(self, node: NodeInstance, parent: int) -> None:
        """A node whose type is not installed keeps its links: one pin per linked name."""
        with dpg.node_attribute(parent=parent, attribute_type=dpg.mvNode_Attr_Static):
            dpg.add_text(f"type {node.type!r} is not installed", color=(240, 120, 120))
        names_in = sorted({l.input for l in self.c.graph.links_into(node.id)})
        names_out = sorted({l.output for l in self.c.graph.links_from(node.id)})
        for name in names_in:
            with dpg.node_attribute(parent=parent, attribute_type=dpg.mvNode_Attr_Input) as attr:
                dpg.add_text(name)
            self._register_attr(attr, node.id, name, "in", "*")
        for name in names_out:
            with dpg.node_attribute(parent=parent, attribute_type=dpg.mvNode_Attr_Output) as attr:
                dpg.add_text(name)
            self._register_attr(attr, node.id, name, "out", "*")

    def _register_attr(self, attr: int, node_id: str, name: str, side: str, type_name: str) -> None:
        self.attrs[(node_id, name, side)] = attr
        self.attr_owner[attr] = (node_id, name, side)
        dpg.bind_item_theme(attr, self.themes.pin(type_name))

    @staticmethod
    def _tooltip(item: int, text: str) -> None:
        if text:
            with dpg.tooltip(item):
                dpg.add_text(text, wrap=320)

    def _title(self, node: NodeInstance) -> str:
        cls = self.c.registry.get(node.type)
        name = node.title or (cls.display_name if cls else node.type)
        return f"{name}  #{node.id}" + ("  (bypassed)" if node.mode == "bypass" else "")

    def _remove_node(self, node_id: str) -> None:
        for link in [l for l in self.links if node_id in (l.source, l.target)]:
            dpg.delete_item(self.links.pop(link))
        item = self.nodes.pop(node_id, None)
        if item is not None:
            dpg.delete_item(item)
        for key in [k for k in self.attrs if k[0] == node_id]:
            self.attr_owner.pop(self.attrs.pop(key), None)
        for key in [k for k in self.widgets if k[0] == node_id]:
            del self.widgets[key]

    def _sync_links(self) -> None:
        wanted = set(self.c.graph.iter_links())
        for link in [l for l in self.links if l not in wanted]:
            dpg.delete_item(self.links.pop(link))
        for link in wanted - set(self.links):
            start = self.attrs.get((link.source, link.output, "out"))
            end = self.attrs.get((link.target, link.input, "in"))
            if start is None or end is None:
                continue  # an endpoint the node type does not declare: the validator reports it
            item = dpg.add_node_link(start, end, parent=self.editor)
            out_type = self._output_type(link)
            dpg.bind_item_theme(item, self.themes.link(out_type))
            self.links[link] = item
        for node_id in self.nodes:
            self._sync_widget_states(node_id)

    def _output_type(self, link: Link) -> str:
        cls = self.c.registry.get(self.c.graph.nodes[link.source].type)
        out = cls.output(link.output) if cls else None
        return out.data_type if out else "*"

    def _sync_widget_states(self, node_id: str) -> None:
        """A widget fed by a link shows that the link wins."""
        for (nid, name), widget in self.widgets.items():
            if nid == node_id:
                linked = self.c.graph.link_into(node_id, name) is not None
                dpg.configure_item(widget, enabled=not linked)

    def _apply_theme(self, node_id: str) -> None:
        node = self.c.graph.nodes[node_id]
        state = self._states.get(node_id, "idle")
        marked = node_id in self._marked
        dpg.bind_item_theme(self.nodes[node_id], self.themes.node(state, node.mode == "bypass", marked))

    # ------------------------------------------------------------ model events
    def _on_model_event(self, event: str, details: dict[str, Any]) -> None:
        if event == "graph_replaced":
            self._states.clear()
            self._marked.clear()
            self.rebuild()
        elif event == "node_added":
            self._add_node(details["node"])
        elif event == "node_removed":
            self._remove_node(details["node"].id)
            self._sync_links()
        elif event in ("link_added", "link_removed"):
            self._sync_links()
        elif event == "value_changed":
            self._show_value(details["node"].id, details["name"])
        elif event == "node_changed":
            node = details["node"]
            dpg.configure_item(self.nodes[node.id], label=self._title(node))
            self._apply_theme(node.id)
        elif event == "node_moved":
            node = details["node"]
            item = self.nodes[node.id]
            if tuple(dpg.get_item_pos(item)) != (int(node.pos[0]), int(node.pos[1])):
                dpg.set_item_pos(item, [int(node.pos[0]), int(node.pos[1])])

    def _show_value(self, node_id: str, name: str) -> None:
        widget = self.widgets.get((node_id, name))
        if widget is None:
            return
        value = self.c.graph.nodes[node_id].values.get(name)
        shown = str(value) if dpg.get_item_type(widget).endswith("mvInputText") else value
        if dpg.get_value(widget) != shown:
            dpg.set_value(widget, shown)

    def show_states(self, states: dict[str, str]) -> None:
        """Colour title bars by run state; only nodes whose state changed are touched."""
        for node_id in self.nodes:
            state = states.get(node_id, "idle")
            if self._states.get(node_id, "idle") != state:
                self._states[node_id] = state
                self._apply_theme(node_id)

    def show_selection(self, selection: set[str]) -> None:
        """Outline the controller's selection (it may differ from the on-screen one)."""
        if selection == self._marked:
            return
        changed = selection ^ self._marked
        self._marked = set(selection)
        for node_id in changed:
            if node_id in self.nodes:
                self._apply_theme(node_id)

    # ------------------------------------------------------------ user gestures
    def _on_link_drag(self, sender: int, app_data: tuple[int, int]) -> None:
        first, second = (self.attr_owner.get(dpg.get_alias_id(a) if isinstance(a, str) else a) for a in app_data)
        if first is None or second is None:
            return
        out_end, in_end = (first, second) if first[2] == "out" else (second, first)
        self.c.connect(out_end[0], out_end[1], in_end[0], in_end[1])

    def _on_delink(self, sender: int, link_item: int) -> None:
        link = next((l for l, item in self.links.items() if item == link_item), None)
        if link is not None:
            self.c.disconnect(link.target, link.input)

    def _on_widget_edit(self, sender: int, value: Any, user_data: tuple[str, str]) -> None:
        node_id, name = user_data
        cls = self.c.registry.get(self.c.graph.nodes[node_id].type)
        field_decl = cls.inputs.get(name) if cls else None
        if isinstance(field_decl, Int) and isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                return  # half-typed number; keep the model value until it parses
        if self.c.set_value(node_id, name, value) is not None:
            self._show_value(node_id, name)  # refused: put the model's value back

    def _on_randomize(self, sender: int, app_data: Any, user_data: tuple[str, str]) -> None:
        node_id, name = user_data
        self.c.set_value(node_id, name, random.randint(0, SEED_MAX))

    # ---------------------------------------------------------- polled each frame
    def selected_node_ids(self) -> list[str]:
        return [dpg.get_item_user_data(item) for item in dpg.get_selected_nodes(self.editor)]

    def sync_from_view(self) -> None:
        """Read what only the node editor knows: selection and node positions after a drag."""
        # Dear PyGui can read the node editor's selection but not set it, so a
        # selection made by the controller (select all, paste) stays until the user
        # changes the one on screen.
        shown = self.selected_node_ids()
        if shown != self._last_shown_selection:
            self._last_shown_selection = shown
            self.c.select(shown)
        moved = {}
        for node_id, item in self.nodes.items():
            x, y = dpg.get_item_pos(item)
            node = self.c.graph.nodes[node_id]
            if (int(node.pos[0]), int(node.pos[1])) != (int(x), int(y)):
                moved[node_id] = (float(x), float(y))
        if moved:
            self.c.move(moved)

    def screen_to_grid(self, x: float, y: float) -> tuple[float, float]:
        """Canvas coordinates of a screen point, panning included (Dear PyGui does not
        report the panning, but any drawn node shows it: screen = grid + offset)."""
        for node_id, item in self.nodes.items():
            sx, sy = dpg.get_item_rect_min(item)
            gx, gy = dpg.get_item_pos(item)
            if sx or sy:
                return (x - (sx - gx), y - (sy - gy))
        ex, ey = dpg.get_item_rect_min(self.editor)
        return (x - ex, y - ey)

    def pin_screen_positions(self) -> dict[str, list[float]]:
        """Where each pin is on screen, ``"node.name.in|out" -> [x, y]`` (for tests and hooks)."""
        result = {}
        for (node_id, name, side), attr in self.attrs.items():
            node_item = self.nodes[node_id]
            nx0, _ = dpg.get_item_rect_min(node_item)
            nw, _ = dpg.get_item_rect_size(node_item)
            # Attributes have no rectangle of their own; their first item does.
            content = dpg.get_item_children(attr, 1)[0]
            _, ay = dpg.get_item_rect_min(content)
            _, ah = dpg.get_item_rect_size(content)
            x = nx0 if side == "in" else nx0 + nw
            result[f"{node_id}.{name}.{side}"] = [x, ay + ah / 2]
        return result


def _shown_value(field_decl: Widget, value: Any) -> Any:
    """The value a widget can display; a file's invalid value (kept in the model for
    the validator to report) shows as the default instead of breaking the canvas."""
    try:
        return field_decl.validate(value)
    except Exception:
        return field_decl.default


def list_files(folders: list[Path], extensions: tuple[str, ...]) -> list[str]:
    """Files under ``folders`` with one of ``extensions``, as paths relative to their folder."""
    found: list[str] = []
    for folder in folders:
        if folder.is_dir():
            for path in sorted(folder.rglob("*")):
                if path.is_file() and (not extensions or path.suffix.lower() in extensions):
                    found.append(path.relative_to(folder).as_posix())
    return found
