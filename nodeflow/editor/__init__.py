"""The desktop editor: a Dear PyGui canvas over the graph model.

``controller`` and ``commands`` hold every editing action without a window (tested
headless); the ``app``/``canvas``/``panels``/``palette`` modules draw them with Dear
PyGui, which is imported only when the window opens.
"""

from __future__ import annotations

from typing import Any


def launch(path: str | None = None, registry: Any = None) -> int:
    """Open the editor window on ``path`` (or the last/default workflow); blocks until
    the window closes and returns the process exit code."""
    from nodeflow.editor.app import run_app

    return run_app(path, registry)


__all__ = ["launch"]
