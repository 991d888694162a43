"""The node canvas: a Dear PyGui node editor that mirrors the graph model.

The model is the source of truth. User gestures (link drags, widget edits, node
drags) become controller calls; the canvas then redraws from the model's change
events. Links are never added to the node editor by its own callbacks, so a refused
or replaced link can never leave the picture out of step with the graph.

Dear PyGui's node editor cannot scale its contents and does not report or set its
panning. So the canvas keeps its own :class:`~nodeflow.editor.layout.View`: nodes are
placed at ``pos * zoom + offset`` and drawn with a font rasterised at that zoom and
widgets of that width; the panning is read off any drawn node (its screen rectangle
minus the position it was given).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import dearpygui.dearpygui as dpg
from PIL import Image

from nodeflow.model.fields import FileChoice, Input, Int, Widget
from nodeflow.model.graph import (
    Link,
    LinkAdded,
    LinkRemoved,
    NodeAdded,
    NodeChanged,
    NodeInstance,
    NodeMoved,
    NodeRemoved,
    ValueChanged,
)
from nodeflow.editor.controller import EditorController
from nodeflow.editor.events import GraphReplaced
from nodeflow.editor.images import fit_rgba
from nodeflow.editor.layout import Rect, View, fit_view, step_zoom
from nodeflow.editor.theme import Themes, canvas_fonts, zoom_theme
from nodeflow.editor.widgets import widget_maker

WIDGET_WIDTH = 170
SIZE_EVERY = 15  # frames between readings of the drawn node sizes (placement uses them)
THUMB = 150  # the side of a picture drawn inside a node, at zoom 1
PICTURE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class Canvas:
    def __init__(self, controller: EditorController, parent: int | str,
                 file_options: Callable[[FileChoice], list[str]] | None = None,
                 pick_file: Callable[[str, str], None] | None = None,
                 input_folder: Callable[[], Path] | None = None, textures: int | None = None):
        self.c = controller
        self.parent = parent
        self.themes = Themes(controller.registry.data_types())
        self.fonts = canvas_fonts()  # zoom level -> font; {} when no scalable font is installed
        self._zoom_themes: dict[float, int] = {}
        self.file_options = file_options or (lambda field: [])
        self._pick_file = pick_file
        self._input_folder = input_folder or (lambda: Path("input"))
        self.textures = textures if textures is not None else dpg.add_texture_registry()
        self.view = View()
        self.pan = (0.0, 0.0)  # the node editor's own panning, as last read off a drawn node
        self.fit_pending = 0  # frames until "fit all" (nodes must be drawn once to be measured)
        self._frames = 0
        self._fit_target: list[str] | None = None
        self._fit_passes = 0
        self.nodes: dict[str, int] = {}  # node id -> dpg node
        self.placed: dict[str, tuple[float, float]] = {}  # node id -> where the canvas put it (drawn units)
        self.attrs: dict[tuple[str, str, str], int] = {}  # (node id, name, "in"/"out") -> dpg attribute
        self.attr_owner: dict[int, tuple[str, str, str]] = {}
        self.widgets: dict[tuple[str, str], int] = {}  # (node id, input name) -> dpg widget
        self.links: dict[Link, int] = {}
        self.thumbs: dict[str, tuple[int, int, Any]] = {}  # node id -> (texture, image item, picture shown)
        self.warnings: dict[str, int] = {}  # node id -> its warning text
        self._advice_key: object = None
        self._zoomed: list[tuple[int, float, float | None]] = []  # (item, width, height) at zoom 1
        self._indents: list[tuple[int, float]] = []
        self._states: dict[str, str] = {}
        self._last_shown_selection: list[str] = []
        self._marked: set[str] = set()  # nodes outlined as selected by the controller
        with dpg.item_handler_registry() as self._commit_on_leave:
            # Leaving a box (click elsewhere, Tab, Enter) settles what was typed into it:
            # a value refused then is put back and the reason shown.
            dpg.add_item_deactivated_handler(callback=lambda s, item: self._commit(item))
        self.editor = self._new_editor()
        controller.subscribe(self._on_model_event)
        self.rebuild()

    def _new_editor(self) -> int:
        editor = dpg.add_node_editor(
            parent=self.parent,
            callback=self._on_link_drag,
            delink_callback=self._on_delink,
            minimap=True,
            minimap_location=dpg.mvNodeMiniMap_Location_BottomRight,
            width=-1,
            height=-1,
        )
        dpg.bind_item_theme(editor, self._zoom_theme())
        return editor

    def _zoom_theme(self) -> int:
        if self.view.zoom not in self._zoom_themes:
            self._zoom_themes[self.view.zoom] = zoom_theme(self.view.zoom)
        return self._zoom_themes[self.view.zoom]

    # ---------------------------------------------------------------- building
    def rebuild(self, fresh: bool = False) -> None:
        """Draw the model anew; ``fresh`` also replaces the node editor itself, which
        forgets its panning and selection (a different file is shown)."""
        if fresh:
            dpg.delete_item(self.editor)
            self.editor = self._new_editor()
            self.pan = (0.0, 0.0)
            self.view = View()
        else:
            dpg.delete_item(self.editor, children_only=True)
        self._advice_key = None
        for table in (self.nodes, self.placed, self.attrs, self.attr_owner, self.widgets, self.links, self.thumbs,
                      self.warnings):
            table.clear()
        self._zoomed.clear(), self._indents.clear()
        self._last_shown_selection = []
        for node in self.c.graph.nodes.values():
            self._add_node(node)
        self._sync_links()

    def scaled(self, width: float) -> int:
        return max(1, int(round(width * self.view.zoom)))

    def follow_zoom(self, item: int, width: float, height: float | None = None) -> int:
        """Keep ``item``'s width (and height) at zoom 1 so zooming can scale it."""
        self._zoomed.append((item, width, height))
        return item

    def _add_node(self, node: NodeInstance) -> None:
        cls = self.c.registry.get(node.type)
        drawn = self.view.drawn(node.pos)
        item = dpg.add_node(label=self._title(node), parent=self.editor, pos=[int(drawn[0]), int(drawn[1])], user_data=node.id)
        self.nodes[node.id] = item
        self.placed[node.id] = (int(drawn[0]), int(drawn[1]))
        self._bind_font(item)  # a font bound to the node editor does not reach its nodes
        if cls is None:
            self._add_missing_type(node, item)
        else:
            for field_decl in cls.inputs.values():
                self._add_input(node, item, field_decl)
            for output in cls.outputs:
                with dpg.node_attribute(parent=item, attribute_type=dpg.mvNode_Attr_Output, shape=dpg.mvNode_PinShape_CircleFilled) as attr:
                    indent = WIDGET_WIDTH - 8 * len(output.name)
                    label = dpg.add_text(f"{output.name}", indent=self.scaled(indent))
                    self._indents.append((label, indent))
                    self.tooltip(label, f"{output.data_type}" + (f": {output.tooltip}" if output.tooltip else ""))
                self._register_attr(attr, node.id, output.name, "out", output.data_type)
            picture = next((f for f in cls.inputs.values() if self.has_file_picker(f)), None)
            if picture is not None:
                self._show_file_picture(node.id, picture.name)
        self._apply_theme(node.id)
        self._sync_widget_states(node.id)

    def _add_input(self, node: NodeInstance, parent: int, field_decl: Input) -> None:
        shape = dpg.mvNode_PinShape_Circle if field_decl.is_widget else dpg.mvNode_PinShape_CircleFilled
        with dpg.node_attribute(parent=parent, attribute_type=dpg.mvNode_Attr_Input, shape=shape) as attr:
            tip = f"{field_decl.name} ({field_decl.data_type})" + (f": {field_decl.tooltip}" if field_decl.tooltip else "")
            if isinstance(field_decl, Widget):
                widget = self._widget(node, field_decl)
                self.widgets[(node.id, field_decl.name)] = widget
                self.tooltip(widget, tip)
            else:
                optional = " (optional)" if field_decl.optional else ""
                label = dpg.add_text(f"{field_decl.name}{optional}")
                self.tooltip(label, tip)
        self._register_attr(attr, node.id, field_decl.name, "in", field_decl.data_type)

    def _widget(self, node: NodeInstance, field_decl: Widget) -> int:
        """One widget per value, made by the maker registered for the field's kind
        (:mod:`nodeflow.editor.widgets`, which a pack can extend)."""
        name = field_decl.name
        value = _shown_value(field_decl, node.values.get(name, field_decl.default))
        common = dict(label=name, width=self.scaled(WIDGET_WIDTH), user_data=(node.id, name), callback=self._on_widget_edit)
        item = widget_maker(type(field_decl))(self, node, field_decl, value, common)
        dpg.bind_item_handler_registry(item, self._commit_on_leave)
        return item

    def has_file_picker(self, field_decl: Input) -> bool:
        """A picture from the input folder: the node shows it, and offers a file picker."""
        return isinstance(field_decl, FileChoice) and field_decl.folder == "input" and any(
            ext in PICTURE_EXTENSIONS for ext in field_decl.extensions)

    def add_option(self, node_id: str, name: str, option: str) -> None:
        """Offer ``option`` in a file field's list (a file just copied into its folder)."""
        widget = self.widgets.get((node_id, name))
        if widget is not None and dpg.get_item_type(widget).endswith("mvCombo"):
            items = list(dpg.get_item_configuration(widget).get("items") or [])
            if option not in items:
                dpg.configure_item(widget, items=[*items, option])

    def pick_file(self, node_id: str, name: str) -> None:
        if self._pick_file is not None:
            self._pick_file(node_id, name)

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
    def tooltip(item: int, text: str) -> None:
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
        self.placed.pop(node_id, None)
        self.thumbs.pop(node_id, None)
        self.warnings.pop(node_id, None)
        if item is not None:
            dpg.delete_item(item)
        alive = lambda entry: dpg.does_item_exist(entry[0])  # noqa: E731
        self._zoomed[:] = filter(alive, self._zoomed)
        self._indents[:] = filter(alive, self._indents)
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
        dpg.bind_item_theme(self.nodes[node_id], self.themes.node(state, node.mode == "bypass", marked, self.view.zoom))

    # ---------------------------------------------------------------- warnings
    def show_advice(self) -> None:
        """Each advised node's warnings (a size far from its model's) in yellow at its
        foot; recomputed only after an edit."""
        key = (self.c.history.revision, id(self.c.graph), len(self.nodes))
        if key == self._advice_key:
            return
        self._advice_key = key
        for node_id in self.c.advised_nodes():
            if node_id not in self.nodes:
                continue
            _, warnings = self.c.advice(node_id)
            text = "\n".join(f"{name}: {message}" for name, message in warnings.items())
            item = self.warnings.get(node_id)
            if item is None and text:
                with dpg.node_attribute(parent=self.nodes[node_id], attribute_type=dpg.mvNode_Attr_Static):
                    item = dpg.add_text(text, color=(235, 190, 80), wrap=self.scaled(WIDGET_WIDTH + 60))
                self.warnings[node_id] = item
            elif item is not None:
                dpg.set_value(item, text)
                dpg.configure_item(item, show=bool(text))

    # ---------------------------------------------------------------- pictures
    def _thumb(self, node_id: str) -> tuple[int, int, Any]:
        """The picture slot inside a node, made on first use."""
        if node_id not in self.thumbs:
            blank = [0.1, 0.1, 0.12, 1.0] * (THUMB * THUMB)
            texture = dpg.add_dynamic_texture(THUMB, THUMB, blank, parent=self.textures)
            with dpg.node_attribute(parent=self.nodes[node_id], attribute_type=dpg.mvNode_Attr_Static):
                image = dpg.add_image(texture, width=self.scaled(THUMB), height=self.scaled(THUMB))
            self.follow_zoom(image, THUMB, THUMB)
            self.thumbs[node_id] = (texture, image, None)
        return self.thumbs[node_id]

    def show_picture(self, node_id: str, picture: Image.Image | None) -> None:
        if node_id not in self.nodes or picture is None:
            return
        texture, image, shown = self._thumb(node_id)
        if shown is not picture:
            dpg.set_value(texture, fit_rgba(picture, THUMB, THUMB))
            self.thumbs[node_id] = (texture, image, picture)

    def show_run_pictures(self, pictures: list[tuple[str, Image.Image]]) -> None:
        """Each node's first picture of the last run, inside the node."""
        first: dict[str, Image.Image] = {}
        for node_id, picture in pictures:
            first.setdefault(node_id, picture)
        for node_id, picture in first.items():
            self.show_picture(node_id, picture)

    def _show_file_picture(self, node_id: str, name: str) -> None:
        value = self.c.graph.nodes[node_id].values.get(name)
        path = self._input_folder() / str(value or "")
        if value and path.is_file():
            try:
                with Image.open(path) as picture:
                    picture.thumbnail((THUMB * 2, THUMB * 2))
                    self.show_picture(node_id, picture.convert("RGB"))
            except OSError:
                pass  # not a picture: the run will say so

    # ------------------------------------------------------------ model events
    def _on_model_event(self, event: Any) -> None:
        if isinstance(event, GraphReplaced):
            self._states.clear()
            self._marked.clear()
            self.rebuild(fresh=True)
            self.request_fit()
        elif isinstance(event, NodeAdded):
            self._add_node(event.node)
        elif isinstance(event, NodeRemoved):
            self._remove_node(event.node.id)
            self._sync_links()
        elif isinstance(event, (LinkAdded, LinkRemoved)):
            self._sync_links()
        elif isinstance(event, ValueChanged):
            self._show_value(event.node.id, event.name)
            cls = self.c.registry.get(event.node.type)
            if cls is not None and self.has_file_picker(cls.inputs.get(event.name)):
                self._show_file_picture(event.node.id, event.name)
        elif isinstance(event, NodeChanged):
            dpg.configure_item(self.nodes[event.node.id], label=self._title(event.node))
            self._apply_theme(event.node.id)
        elif isinstance(event, NodeMoved):
            self._place(event.node.id)

    def show_at(self, node_id: str, pos: tuple[float, float]) -> None:
        """Draw a node at ``pos`` (canvas units) without changing the model (a group drag)."""
        drawn = self.view.drawn(pos)
        target = (int(drawn[0]), int(drawn[1]))
        self.placed[node_id] = target
        dpg.set_item_pos(self.nodes[node_id], list(target))

    def _place(self, node_id: str) -> None:
        drawn = self.view.drawn(self.c.graph.nodes[node_id].pos)
        target = (int(drawn[0]), int(drawn[1]))
        self.placed[node_id] = target
        if tuple(dpg.get_item_pos(self.nodes[node_id])) != target:
            dpg.set_item_pos(self.nodes[node_id], list(target))

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

    # ------------------------------------------------------------ zoom and fit
    def _bind_font(self, item: int) -> None:
        font = self.fonts.get(self.view.zoom)
        if font is not None:
            dpg.bind_item_font(item, font)

    def set_view(self, view: View) -> None:
        """Show the canvas through ``view``: every node placed and every widget sized anew."""
        zoom_changed = view.zoom != self.view.zoom
        self.view = view
        if zoom_changed:
            dpg.bind_item_theme(self.editor, self._zoom_theme())
            for node_id, item in self.nodes.items():
                self._bind_font(item)
                self._apply_theme(node_id)
            for item, width, height in self._zoomed:
                options = {"width": self.scaled(width)}
                if height is not None:
                    options["height"] = self.scaled(height)
                dpg.configure_item(item, **options)
            for item, indent in self._indents:
                dpg.configure_item(item, indent=self.scaled(indent))
        for node_id in self.nodes:
            self._place(node_id)

    def corner(self) -> tuple[float, float]:
        """The canvas's top-left corner on screen (the node editor reports its rectangle
        relative to its window; the window it fills knows where it is)."""
        x, y = dpg.get_item_pos(self.parent)  # the main window fills the viewport from (0, 0)
        return float(x), float(y)

    def _origin(self) -> tuple[float, float]:
        """Where drawn (0, 0) is on screen: the editor's corner plus its panning."""
        ex, ey = self.corner()
        return ex + self.pan[0], ey + self.pan[1]

    def _read_pan(self) -> None:
        for node_id, item in self.nodes.items():
            if not dpg.is_item_visible(item):
                continue
            sx, sy = dpg.get_item_rect_min(item)
            gx, gy = dpg.get_item_pos(item)
            if sx or sy:
                ex, ey = self.corner()
                self.pan = (sx - gx - ex, sy - gy - ey)
                return

    def node_rects(self) -> dict[str, Rect]:
        """Each drawn node's rectangle in canvas units."""
        rects = {}
        for node_id, item in self.nodes.items():
            w, h = dpg.get_item_rect_size(item)
            if w and h:
                x, y = self.c.graph.nodes[node_id].pos
                rects[node_id] = (x, y, w / self.view.zoom, h / self.view.zoom)
        return rects

    def visible_size(self) -> tuple[float, float]:
        w, h = dpg.get_item_rect_size(self.editor)
        return float(w), float(h)

    def fit(self, node_ids: list[str] | None = None) -> bool:
        """Zoom and pan so the given nodes (all when None) fill the visible canvas; False
        while they have not been drawn yet (their size is not known)."""
        rects = self.node_rects()
        chosen = [rects[n] for n in (node_ids if node_ids else list(self.nodes)) if n in rects]
        if not chosen:
            return not self.nodes
        visible = self.visible_size()
        if visible[0] < 50 or visible[1] < 50:
            return False
        fitted = fit_view(chosen, visible, most=1.5 if node_ids else 1.0)
        # fit_view puts the content in drawn units relative to the visible corner; the
        # node editor's panning moves that corner.
        self.set_view(View(fitted.zoom, (fitted.offset[0] - self.pan[0], fitted.offset[1] - self.pan[1])))
        return True

    def request_fit(self, node_ids: list[str] | None = None) -> None:
        """Fit over the next frames: a node's size at a new zoom is known only once it
        is drawn (paddings do not scale exactly), so the fit is measured and refined."""
        self._fit_target, self._fit_passes, self.fit_pending = node_ids, 3, 1

    def zoom_by(self, steps: int, screen_anchor: tuple[float, float] | None = None) -> None:
        """Zoom ``steps`` levels in (or out), keeping the point under ``screen_anchor``
        (default: the middle of the canvas) where it is."""
        zoom = step_zoom(self.view.zoom, steps)
        if zoom == self.view.zoom:
            return
        if screen_anchor is None:
            ex, ey = self.corner()
            w, h = self.visible_size()
            screen_anchor = (ex + w / 2, ey + h / 2)
        ox, oy = self._origin()
        self.set_view(self.view.zoomed(zoom, (screen_anchor[0] - ox, screen_anchor[1] - oy)))

    def each_frame(self) -> None:
        """Per-frame upkeep: learn the panning, finish a pending fit."""
        self._read_pan()
        self._frames += 1
        if self._frames % SIZE_EVERY == 0 or self.fit_pending:
            for node_id, (_, _, w, h) in self.node_rects().items():
                self.c.drawn_sizes[node_id] = (w, h)
        if self.fit_pending:
            self.fit_pending -= 1
            if self.fit_pending == 0:
                before = self.view
                if not self.fit(self._fit_target):
                    self.fit_pending = 1  # not drawn yet: try next frame
                elif self.view != before and self._fit_passes > 1:
                    self._fit_passes -= 1
                    self.fit_pending = 2

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

    def _commit(self, item: int) -> None:
        user_data = dpg.get_item_user_data(item)
        if isinstance(user_data, (tuple, list)) and len(user_data) == 2 and user_data[0] in self.c.graph.nodes:
            self._on_widget_edit(item, dpg.get_value(item), tuple(user_data), settled=True)

    def _on_widget_edit(self, sender: int, value: Any, user_data: tuple[str, str], settled: bool = False) -> None:
        node_id, name = user_data
        cls = self.c.registry.get(self.c.graph.nodes[node_id].type)
        field_decl = cls.inputs.get(name) if cls else None
        if isinstance(field_decl, Int) and isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                if settled:
                    self._show_value(node_id, name)
                return  # half-typed number; keep the model value until it parses
        if self.c.graph.nodes[node_id].values.get(name) == value:
            return
        if not settled and isinstance(field_decl, Widget) and dpg.is_item_active(sender):
            try:
                field_decl.validate(value)
            except Exception:
                return  # on the way to a valid number ("5" of "512" where 8 is the least): wait
        if self.c.set_value(node_id, name, value) is not None:
            self._show_value(node_id, name)  # refused: put the model's value back

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
            if (int(x), int(y)) != self.placed.get(node_id):
                self.placed[node_id] = (int(x), int(y))
                moved[node_id] = self.view.model((float(x), float(y)))
        if moved:
            self.c.move(moved)

    def screen_to_grid(self, x: float, y: float) -> tuple[float, float]:
        """Canvas coordinates (the model's) of a screen point."""
        ox, oy = self._origin()
        return self.view.model((x - ox, y - oy))

    def grid_to_screen(self, pos: tuple[float, float]) -> tuple[float, float]:
        ox, oy = self._origin()
        dx, dy = self.view.drawn(pos)
        return ox + dx, oy + dy

    def visible_centre(self) -> tuple[float, float]:
        ex, ey = self.corner()
        w, h = self.visible_size()
        return self.screen_to_grid(ex + w / 2, ey + h / 2)

    def pin_at(self, x: float, y: float, side: str | None = None) -> tuple[str, str, str] | None:
        """The pin ``(node id, name, side)`` drawn at screen point (x, y), if any."""
        radius = max(6.0, 10.0 * self.view.zoom)
        best = None
        for key, (px, py) in self.pin_screen_positions().items():
            node_id, name, pin_side = key.rsplit(".", 2)
            distance = ((px - x) ** 2 + (py - y) ** 2) ** 0.5
            if (side is None or pin_side == side) and distance <= radius and (best is None or distance < best[0]):
                best = (distance, (node_id, name, pin_side))
        return best[1] if best else None

    def node_hovered(self) -> bool:
        return any(dpg.is_item_hovered(item) for item in self.nodes.values())

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
