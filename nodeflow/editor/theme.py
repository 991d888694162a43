"""Colours and Dear PyGui themes of the canvas, made once and shared by every item."""

from __future__ import annotations

import dearpygui.dearpygui as dpg

from typing import Mapping

from nodeflow.model.types import PRIMITIVES, DataType

# Title bar colour of a node by its run state (see runner.NODE_STATES).
STATE_COLORS: dict[str, tuple[int, int, int]] = {
    "idle": (62, 66, 78),
    "queued": (120, 104, 40),
    "running": (40, 110, 190),
    "cached": (70, 90, 110),
    "done": (46, 130, 70),
    "error": (180, 50, 50),
}
BYPASS_ALPHA = 90
CANVAS_BACKGROUND = (24, 25, 30)  # bypassed nodes are drawn see-through


def _lift(rgb: tuple[int, int, int], amount: int) -> tuple[int, ...]:
    return tuple(min(255, c + amount) for c in rgb)


class Themes:
    def __init__(self, data_types: Mapping[str, DataType] | None = None) -> None:
        self._types = {t.name: t for t in PRIMITIVES} | dict(data_types or {})
        self._node: dict[tuple[str, bool, bool, float], int] = {}
        self._pin: dict[str, int] = {}
        self._link: dict[str, int] = {}

    def node(self, state: str, bypassed: bool, selected: bool = False, zoom: float = 1.0) -> int:
        """Title bar by run state, see-through when bypassed, a bright outline when
        selected (Dear PyGui cannot select nodes itself, e.g. after Select all); the
        spacing inside the node at ``zoom`` (a node's own theme is the one whose style
        its widgets take, so the zoom's paddings live here, not on the canvas)."""
        key = (state, bypassed, selected, zoom)
        if key not in self._node:
            r, g, b = STATE_COLORS.get(state, STATE_COLORS["idle"])
            alpha = BYPASS_ALPHA if bypassed else 255
            with dpg.theme() as theme, dpg.theme_component(dpg.mvAll):
                nodes = dpg.mvThemeCat_Nodes
                dpg.add_theme_color(dpg.mvNodeCol_TitleBar, (r, g, b, alpha), category=nodes)
                dpg.add_theme_color(dpg.mvNodeCol_TitleBarHovered, (*_lift((r, g, b), 20), alpha), category=nodes)
                dpg.add_theme_color(dpg.mvNodeCol_TitleBarSelected, (*_lift((r, g, b), 35), alpha), category=nodes)
                dpg.add_theme_color(dpg.mvNodeCol_NodeBackground, (38, 40, 46, 110 if bypassed else 245), category=nodes)
                dpg.add_theme_color(dpg.mvNodeCol_NodeBackgroundHovered, (46, 48, 56, 120 if bypassed else 250), category=nodes)
                dpg.add_theme_color(dpg.mvNodeCol_NodeBackgroundSelected, (54, 56, 66, 130 if bypassed else 255), category=nodes)
                if selected:
                    dpg.add_theme_color(dpg.mvNodeCol_NodeOutline, (255, 200, 80, 255), category=nodes)
                    dpg.add_theme_style(dpg.mvNodeStyleVar_NodeBorderThickness, 2.5, category=nodes)
                if bypassed:
                    dpg.add_theme_color(dpg.mvThemeCol_Text, (200, 200, 200, 110))
                dpg.add_theme_style(dpg.mvNodeStyleVar_NodePadding, 8 * zoom, 8 * zoom, category=nodes)
                dpg.add_theme_style(dpg.mvNodeStyleVar_NodeCornerRounding, 6 * zoom, category=nodes)
                dpg.add_theme_style(dpg.mvStyleVar_FramePadding, 6 * zoom, 3 * zoom)
                dpg.add_theme_style(dpg.mvStyleVar_ItemSpacing, 8 * zoom, 4 * zoom)
                dpg.add_theme_style(dpg.mvStyleVar_ItemInnerSpacing, 4 * zoom, 4 * zoom)
            self._node[key] = theme
        return self._node[key]

    def _color(self, type_name: str) -> tuple[int, int, int]:
        known = self._types.get(type_name)
        return known.color if known is not None else (160, 160, 160)

    def pin(self, type_name: str) -> int:
        if type_name not in self._pin:
            r, g, b = self._color(type_name)
            with dpg.theme() as theme, dpg.theme_component(dpg.mvAll):
                dpg.add_theme_color(dpg.mvNodeCol_Pin, (r, g, b, 255), category=dpg.mvThemeCat_Nodes)
                dpg.add_theme_color(dpg.mvNodeCol_PinHovered, (*_lift((r, g, b), 50), 255), category=dpg.mvThemeCat_Nodes)
            self._pin[type_name] = theme
        return self._pin[type_name]

    def link(self, type_name: str) -> int:
        if type_name not in self._link:
            r, g, b = self._color(type_name)
            with dpg.theme() as theme, dpg.theme_component(dpg.mvAll):
                dpg.add_theme_color(dpg.mvNodeCol_Link, (r, g, b, 220), category=dpg.mvThemeCat_Nodes)
                dpg.add_theme_color(dpg.mvNodeCol_LinkHovered, (255, 255, 255, 255), category=dpg.mvThemeCat_Nodes)
            self._link[type_name] = theme
        return self._link[type_name]


def zoom_theme(zoom: float) -> int:
    """The node editor's spacing at ``zoom`` (paddings, pins, links, grid), so a node
    zoomed out shrinks as a whole, not just its text."""
    nodes = dpg.mvThemeCat_Nodes
    with dpg.theme() as theme, dpg.theme_component(dpg.mvAll):
        dpg.add_theme_style(dpg.mvNodeStyleVar_NodePadding, 8 * zoom, 8 * zoom, category=nodes)
        dpg.add_theme_style(dpg.mvNodeStyleVar_PinCircleRadius, max(2.0, 5 * zoom), category=nodes)
        dpg.add_theme_style(dpg.mvNodeStyleVar_LinkThickness, max(1.0, 3 * zoom), category=nodes)
        dpg.add_theme_style(dpg.mvNodeStyleVar_GridSpacing, 32 * zoom, category=nodes)
        dpg.add_theme_style(dpg.mvNodeStyleVar_NodeCornerRounding, 6 * zoom, category=nodes)
        dpg.add_theme_style(dpg.mvStyleVar_FramePadding, 6 * zoom, 3 * zoom)
        dpg.add_theme_style(dpg.mvStyleVar_ItemSpacing, 8 * zoom, 4 * zoom)
        dpg.add_theme_style(dpg.mvStyleVar_ItemInnerSpacing, 4 * zoom, 4 * zoom)
    return theme


def global_theme() -> int:
    """A calm dark look with rounder corners than Dear PyGui's default."""
    with dpg.theme() as theme:
        with dpg.theme_component(dpg.mvAll):
            dpg.add_theme_style(dpg.mvStyleVar_FrameRounding, 4)
            dpg.add_theme_style(dpg.mvStyleVar_WindowRounding, 4)
            dpg.add_theme_style(dpg.mvStyleVar_FramePadding, 6, 3)
            dpg.add_theme_color(dpg.mvThemeCol_WindowBg, (28, 29, 34))
            dpg.add_theme_color(dpg.mvThemeCol_ChildBg, (32, 33, 39))
            dpg.add_theme_color(dpg.mvNodeCol_GridBackground, CANVAS_BACKGROUND, category=dpg.mvThemeCat_Nodes)
            dpg.add_theme_color(dpg.mvNodeCol_GridLine, (40, 42, 50), category=dpg.mvThemeCat_Nodes)
            dpg.add_theme_style(dpg.mvNodeStyleVar_NodeCornerRounding, 6, category=dpg.mvThemeCat_Nodes)
            dpg.add_theme_style(dpg.mvNodeStyleVar_LinkThickness, 3, category=dpg.mvThemeCat_Nodes)
            dpg.add_theme_style(dpg.mvNodeStyleVar_PinCircleRadius, 5, category=dpg.mvThemeCat_Nodes)
    return theme


# Fonts drawn at each zoom level (Dear PyGui rasterises a font at one size; scaling a
# raster blurs it). Looked for among the usual places; without one the canvas zooms
# positions and widths but keeps Dear PyGui's built-in font.
FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/Library/Fonts/Arial.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "C:/Windows/Fonts/segoeui.ttf",
    "C:/Windows/Fonts/arial.ttf",
)
CANVAS_FONT_PX = 14.0  # at zoom 1


def canvas_fonts() -> dict[float, int]:
    """A font per zoom level of :data:`nodeflow.editor.layout.ZOOM_LEVELS`."""
    import os

    from nodeflow.editor.layout import ZOOM_LEVELS

    path = os.environ.get("NODEFLOW_EDITOR_FONT") or next((p for p in FONT_CANDIDATES if os.path.isfile(p)), None)
    if path is None:
        return {}
    fonts = {}
    with dpg.font_registry():
        for zoom in ZOOM_LEVELS:
            fonts[zoom] = dpg.add_font(path, max(4, round(CANVAS_FONT_PX * zoom)))
    return fonts
