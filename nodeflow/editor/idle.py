"""Noticing input while the editor draws nothing.

Dear PyGui reads the mouse and keyboard only inside ``render_dearpygui_frame``, and a
frame of the node editor costs tens of milliseconds of CPU where there is no GPU (Mesa's
software renderer). So an idle editor that drew a few frames a second just to notice the
next click would still use a fifth of a core. On X11 the pointer, its buttons and the
keyboard can be asked for cheaply without drawing (``XQueryPointer``, ``XQueryKeymap``
through ctypes, on a connection of our own); the render loop then sleeps in short
slices and draws again as soon as any of them changes. Elsewhere (Wayland without
XWayland, Windows, macOS) :func:`input_watch` returns None and the loop keeps its
frame cap instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys


class X11InputWatch:
    def __init__(self, lib: ctypes.CDLL, display: int):
        self._x = lib
        self._display = display
        self._root = lib.XDefaultRootWindow(display)
        self._last: tuple = ()

    def changed(self) -> bool:
        """Whether the pointer moved, a button or a key changed since the last call."""
        x = self._x
        root, child = ctypes.c_ulong(), ctypes.c_ulong()
        rx, ry, wx, wy = ctypes.c_int(), ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        mask = ctypes.c_uint()
        x.XQueryPointer(self._display, self._root, ctypes.byref(root), ctypes.byref(child), ctypes.byref(rx),
                        ctypes.byref(ry), ctypes.byref(wx), ctypes.byref(wy), ctypes.byref(mask))
        keys = ctypes.create_string_buffer(32)
        x.XQueryKeymap(self._display, keys)
        now = (rx.value, ry.value, mask.value, keys.raw)
        changed = now != self._last
        self._last = now
        return changed

    def close(self) -> None:
        if self._display:
            self._x.XCloseDisplay(self._display)
            self._display = 0


def input_watch() -> X11InputWatch | None:
    """A watch on the X11 display the window is on, or None where there is none."""
    if not sys.platform.startswith("linux") or not os.environ.get("DISPLAY"):
        return None
    name = ctypes.util.find_library("X11") or "libX11.so.6"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None
    lib.XOpenDisplay.restype = ctypes.c_void_p
    lib.XOpenDisplay.argtypes = [ctypes.c_char_p]
    lib.XDefaultRootWindow.restype = ctypes.c_ulong
    lib.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
    lib.XQueryPointer.argtypes = [ctypes.c_void_p, ctypes.c_ulong] + [ctypes.c_void_p] * 7
    lib.XQueryKeymap.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.XCloseDisplay.argtypes = [ctypes.c_void_p]
    display = lib.XOpenDisplay(None)
    if not display:
        return None
    watch = X11InputWatch(lib, display)
    watch.changed()  # the starting state
    return watch
