"""Sweeps: one workflow run at many values of its fields, planned against the cache.

``axes`` parses what varies, ``plan`` costs the sweep from the engine's signatures and
orders the points, ``worker`` runs one point (here or in a Ray actor), ``runner``
drives a sweep and writes the files, ``manifest`` records it for resuming, ``sheet``
draws the contact sheet, ``models`` names model files by content, ``command`` is
``nodeflow sweep`` and ``ray_backend`` the optional scale-out (imported only when asked for).

The names below are loaded on first use, so building the CLI's parser (which imports
``nodeflow.sweep.command``) costs nothing.
"""

from importlib import import_module
from typing import Any

_WHERE = {
    "Axis": "axes", "Point": "axes", "SweepError": "axes", "axes_from_mapping": "axes", "make_axis": "axes",
    "parse_axis": "axes", "points": "axes", "SweepPlan": "plan", "plan_sweep": "plan",
    "LocalBackend": "runner", "Sweep": "runner", "SweepResult": "runner",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'nodeflow.sweep' has no attribute {name!r}")
    return getattr(import_module(f"nodeflow.sweep.{_WHERE[name]}"), name)
