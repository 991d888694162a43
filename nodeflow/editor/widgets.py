"""Which Dear PyGui widget edits which kind of field, as a table a pack can extend.

A maker is looked up along the field class's MRO, so a subclass (``Seed`` of ``Int``)
gets its own maker when it has one and its base's otherwise, whatever the order of
registration. A pack with a new field kind calls :func:`register_widget` once.

A maker gets the canvas (for ``canvas.scaled`` widths that follow the zoom, and the
callbacks), the node, the field, the value to show and the common options
(label, width, user_data, callback); it adds the widget and returns its item.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Callable

import dearpygui.dearpygui as dpg

from nodeflow.model.fields import Bool, Choice, FileChoice, Float, Int, Seed, String, Widget
from nodeflow.model.hooks import field_options

if TYPE_CHECKING:
    from nodeflow.model.graph import NodeInstance
    from nodeflow.editor.canvas import Canvas

SEED_MAX = 2**64 - 1
INT_LIMIT = 2**31 - 1  # Dear PyGui's int widgets are 32-bit
DICE_WIDTH = 40

WidgetMaker = Callable[["Canvas", "NodeInstance", Widget, Any, dict], int]
_MAKERS: dict[type, WidgetMaker] = {}


def register_widget(field_class: type, maker: WidgetMaker) -> None:
    """Use ``maker`` for fields of ``field_class`` (and its subclasses without their own)."""
    _MAKERS[field_class] = maker


def widget_maker(field_class: type) -> WidgetMaker:
    for klass in field_class.__mro__:
        if klass in _MAKERS:
            return _MAKERS[klass]
    return _text


def _seed(canvas: "Canvas", node: "NodeInstance", field_decl: Widget, value: Any, common: dict) -> int:
    width = common["width"] - canvas.scaled(DICE_WIDTH)
    with dpg.group(horizontal=True):
        widget = dpg.add_input_text(default_value=str(value), decimal=True, on_enter=False, **{**common, "width": width})
        canvas.follow_zoom(widget, width / canvas.view.zoom)
        button = dpg.add_button(label="dice", width=canvas.scaled(DICE_WIDTH), user_data=(node.id, field_decl.name),
                                callback=lambda s, a, u: canvas.c.set_value(u[0], u[1], random.randint(0, SEED_MAX)))
        canvas.follow_zoom(button, DICE_WIDTH)
        canvas.tooltip(button, "pick a new random seed")
    return widget


def _int(canvas: "Canvas", node: "NodeInstance", field_decl: Int, value: Any, common: dict) -> int:  # type: ignore[override]
    lo = max(field_decl.min if field_decl.min is not None else -INT_LIMIT, -INT_LIMIT)
    hi = min(field_decl.max if field_decl.max is not None else INT_LIMIT, INT_LIMIT)
    # A text box with step buttons: click and type, Ctrl+A selects the digits. Not clamped
    # while typing ("5" on the way to "512"); the field's range is checked when it is set.
    item = dpg.add_input_int(default_value=int(value), min_value=lo, max_value=hi,
                             step=max(int(field_decl.step), 1), **common)
    return canvas.follow_zoom(item, _base_width(common, canvas))


def _float(canvas: "Canvas", node: "NodeInstance", field_decl: Float, value: Any, common: dict) -> int:  # type: ignore[override]
    lo = field_decl.min if field_decl.min is not None else -1e30
    hi = field_decl.max if field_decl.max is not None else 1e30
    item = dpg.add_input_double(default_value=float(value), min_value=lo, max_value=hi,
                                step=field_decl.step, format="%.4g", **common)
    return canvas.follow_zoom(item, _base_width(common, canvas))


def _bool(canvas: "Canvas", node: "NodeInstance", field_decl: Widget, value: Any, common: dict) -> int:
    return dpg.add_checkbox(default_value=bool(value), **{k: v for k, v in common.items() if k != "width"})


def _choice(canvas: "Canvas", node: "NodeInstance", field_decl: Choice, value: Any, common: dict) -> int:  # type: ignore[override]
    item = dpg.add_combo(list(field_decl.choices), default_value=str(value), **common)
    return canvas.follow_zoom(item, _base_width(common, canvas))


def _file(canvas: "Canvas", node: "NodeInstance", field_decl: FileChoice, value: Any, common: dict) -> int:  # type: ignore[override]
    cls = canvas.c.registry.get(node.type)
    offered = field_options(cls, field_decl.name, canvas.c.runner.run_options.get("settings"))
    options = list(dict.fromkeys([str(value), *(offered if offered is not None else canvas.file_options(field_decl))]))
    if not canvas.has_file_picker(field_decl):
        item = dpg.add_combo([o for o in options if o], default_value=str(value), **common)
        return canvas.follow_zoom(item, _base_width(common, canvas))
    width = common["width"] - canvas.scaled(DICE_WIDTH)
    with dpg.group(horizontal=True):
        item = dpg.add_combo([o for o in options if o], default_value=str(value), **{**common, "width": width})
        canvas.follow_zoom(item, width / canvas.view.zoom)
        button = dpg.add_button(label="...", width=canvas.scaled(DICE_WIDTH), user_data=(node.id, field_decl.name),
                                callback=lambda s, a, u: canvas.pick_file(u[0], u[1]))
        canvas.follow_zoom(button, DICE_WIDTH)
        canvas.tooltip(button, "choose a file; it is copied into the input folder")
    return item


def _string(canvas: "Canvas", node: "NodeInstance", field_decl: String, value: Any, common: dict) -> int:  # type: ignore[override]
    if field_decl.multiline:
        dpg.add_text(field_decl.name)
        height = 16 * max(1, field_decl.lines)
        width = common["width"] * max(field_decl.width, 0.2)
        item = dpg.add_input_text(default_value=str(value), multiline=True, height=canvas.scaled(height), tab_input=False,
                                  **{**common, "label": "", "width": width})
        canvas.follow_zoom(item, width / canvas.view.zoom, height=height)
        canvas.wrapped.add(item)  # shown with soft line breaks at the box's width (nodeflow.editor.wrapping)
        dpg.set_value(item, canvas.wrap_for(item, str(value)))
        return item
    return _text(canvas, node, field_decl, value, common)


def _text(canvas: "Canvas", node: "NodeInstance", field_decl: Widget, value: Any, common: dict) -> int:
    item = dpg.add_input_text(default_value=str(value), **common)
    return canvas.follow_zoom(item, _base_width(common, canvas))


def _base_width(common: dict, canvas: "Canvas") -> float:
    """The widget's width at zoom 1."""
    return common["width"] / canvas.view.zoom


for _kind, _maker in ((Seed, _seed), (Int, _int), (Float, _float), (Bool, _bool), (Choice, _choice),
                      (FileChoice, _file), (String, _string), (Widget, _text)):
    register_widget(_kind, _maker)  # type: ignore[arg-type]
