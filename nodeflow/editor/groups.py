"""Groups: titled frames around a set of nodes (the file's ``ui.groups``, e.g. from a
ComfyUI import), following zoom and panning, moved with their nodes by dragging the
title.

Dear PyGui's node editor cannot draw anything under its nodes, nor can anything be
drawn between it and the window (a see-through canvas shows black under Xvfb's
renderer, and the primary window cannot be see-through). So a frame is drawn on the
viewport's front layer as an outline with a title strip above its nodes, not filled:
it frames them without covering them. It steps aside while a menu or dialog is open.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dearpygui.dearpygui as dpg

from nodeflow.editor.commands import Command, Compound, Move

if TYPE_CHECKING:
    from nodeflow.editor.canvas import Canvas

TITLE_HEIGHT = 28.0  # canvas units
DEFAULT_COLOR = (80, 110, 150)


def group_color(group: dict[str, Any]) -> tuple[int, int, int]:
    text = group.get("color")
    if isinstance(text, str) and text.startswith("#") and len(text) in (4, 7):
        digits = text[1:] if len(text) == 7 else "".join(c * 2 for c in text[1:])
        try:
            return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)
        except ValueError:
            pass
    return DEFAULT_COLOR


def group_rect(group: dict[str, Any]) -> tuple[float, float, float, float] | None:
    try:
        (x, y), (w, h) = group["pos"], group["size"]
        return float(x), float(y), float(w), float(h)
    except (KeyError, TypeError, ValueError):
        return None


def members(group: dict[str, Any], positions: dict[str, tuple[float, float]]) -> list[str]:
    """The nodes whose top-left corner lies inside the group's frame."""
    rect = group_rect(group)
    if rect is None:
        return []
    x, y, w, h = rect
    return [nid for nid, (px, py) in positions.items() if x <= px <= x + w and y <= py <= y + h]


class MoveGroup(Command):
    """Move a group's frame (its nodes move by a :class:`Move` beside it)."""

    label = "move group"

    def __init__(self, group: dict[str, Any], delta: tuple[float, float]):
        self.group, self.delta = group, delta

    def do(self, graph: Any) -> None:
        x, y = self.group["pos"]
        self.group["pos"] = [x + self.delta[0], y + self.delta[1]]

    def undo(self, graph: Any) -> None:
        x, y = self.group["pos"]
        self.group["pos"] = [x - self.delta[0], y - self.delta[1]]


class GroupLayer:
    def __init__(self, canvas: "Canvas", hidden: Any = lambda: False):
        self.canvas = canvas
        self.hidden = hidden
        self.layer = dpg.add_viewport_drawlist(front=True)
        self._drawn: object = None
        self._drag: tuple[dict[str, Any], list[str], tuple[float, float], tuple[float, float]] | None = None

    def groups(self) -> list[dict[str, Any]]:
        found = self.canvas.c.ui.get("groups")
        return [g for g in found if isinstance(g, dict) and group_rect(g)] if isinstance(found, list) else []

    def each_frame(self) -> None:
        """Redraw when the view, the panning or a group moved."""
        canvas = self.canvas
        key = (canvas.view, canvas.pan, canvas.corner(), canvas.visible_size(),
               [(tuple(g["pos"]), tuple(g["size"]), g.get("title")) for g in self.groups()], self._drag is not None,
               self.hidden())
        if key == self._drawn:
            return
        self._drawn = key
        dpg.delete_item(self.layer, children_only=True)
        if self.hidden():
            return
        cx, cy = canvas.corner()
        cw, ch = canvas.visible_size()
        for group in self.groups():
            x, y, w, h = group_rect(group)  # type: ignore[misc]
            x0, y0 = canvas.grid_to_screen((x, y))
            x1, y1 = canvas.grid_to_screen((x + w, y + h))
            clipped = (max(x0, cx), max(y0, cy), min(x1, cx + cw), min(y1, cy + ch))
            if clipped[0] >= clipped[2] or clipped[1] >= clipped[3]:
                continue
            r, g, b = group_color(group)
            dpg.draw_rectangle(clipped[:2], clipped[2:], color=(r, g, b, 220), thickness=2, rounding=4, parent=self.layer)
            title_bottom = min(y0 + TITLE_HEIGHT * canvas.view.zoom, clipped[3])
            if title_bottom > clipped[1]:
                dpg.draw_rectangle(clipped[:2], (clipped[2], title_bottom), fill=(r, g, b, 150), color=(0, 0, 0, 0),
                                   rounding=4, parent=self.layer)
            if y0 >= cy and x0 >= cx:
                dpg.draw_text((x0 + 8, y0 + 4), str(group.get("title") or "group"), color=(235, 235, 240),
                              size=max(8, 16 * canvas.view.zoom), parent=self.layer)

    # --------------------------------------------------------------- dragging
    def title_at(self, screen: tuple[float, float]) -> dict[str, Any] | None:
        gx, gy = self.canvas.screen_to_grid(*screen)
        for group in reversed(self.groups()):
            x, y, w, _ = group_rect(group)  # type: ignore[misc]
            if x <= gx <= x + w and y <= gy <= y + TITLE_HEIGHT:
                return group
        return None

    def press(self, screen: tuple[float, float]) -> bool:
        """Start dragging the group whose title is under ``screen``; True if there is one."""
        group = self.title_at(screen)
        if group is None:
            return False
        positions = {nid: n.pos for nid, n in self.canvas.c.graph.nodes.items()}
        inside = members(group, positions)
        self._drag = (group, inside, self.canvas.screen_to_grid(*screen), tuple(group["pos"]))
        return True

    def drag(self, screen: tuple[float, float]) -> None:
        """Follow the mouse: the frame and its nodes on screen (the model changes on release)."""
        if self._drag is None:
            return
        group, inside, start, origin = self._drag
        gx, gy = self.canvas.screen_to_grid(*screen)
        dx, dy = gx - start[0], gy - start[1]
        group["pos"] = [origin[0] + dx, origin[1] + dy]
        for node_id in inside:
            x, y = self.canvas.c.graph.nodes[node_id].pos
            self.canvas.show_at(node_id, (x + dx, y + dy))

    def release(self, screen: tuple[float, float]) -> None:
        if self._drag is None:
            return
        group, inside, start, origin = self._drag
        self._drag = None
        gx, gy = self.canvas.screen_to_grid(*screen)
        dx, dy = gx - start[0], gy - start[1]
        group["pos"] = list(origin)
        if abs(dx) < 0.5 and abs(dy) < 0.5:
            return
        c = self.canvas.c
        moves = {nid: (c.graph.nodes[nid].pos[0] + dx, c.graph.nodes[nid].pos[1] + dy) for nid in inside}
        c.execute(Compound([MoveGroup(group, (dx, dy)), *([Move(moves)] if moves else [])], label="move group"))

    @property
    def dragging(self) -> bool:
        return self._drag is not None
