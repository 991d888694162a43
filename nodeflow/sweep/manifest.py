"""The sweep's record on disk: ``sweep.json`` beside the images, rewritten after each point.

For each point it holds the values set, the files written (relative to the output
folder), the signature of every node (from the plan), which nodes ran, the time and
the worker. It is written atomically after every point, so a sweep stopped by Ctrl+C,
a crash or a power cut is resumed from it: a point whose entry has the same
signatures and whose files are all still there is not run again.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from nodeflow.files.atomic import write_atomically
from nodeflow.sweep.axes import Point
from nodeflow.sweep.plan import PointPlan

MANIFEST_NAME = "sweep.json"
FORMAT = "nodeflow.sweep"


class Manifest:
    def __init__(self, folder: Path, header: dict[str, Any]):
        self.folder = Path(folder)
        self.path = self.folder / MANIFEST_NAME
        self.header = header
        self.entries: dict[str, dict[str, Any]] = {}  # point key -> entry
        self._previous = self._read_previous()

    def _read_previous(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            return {}
        return {e["key"]: e for e in data.get("points", []) if isinstance(e, dict) and "key" in e}

    def done(self, planned: PointPlan) -> dict[str, Any] | None:
        """The earlier entry for this point, if it is complete and still valid."""
        entry = self._previous.get(planned.point.key)
        if not entry or entry.get("status") != "ok" or entry.get("signatures") != planned.signatures:
            return None
        if not entry.get("files") or not all((self.folder / name).is_file() for name in entry["files"]):
            return None
        return entry

    def record(self, entry: dict[str, Any]) -> None:
        self.entries[entry["key"]] = entry
        self.save()

    def save(self, **extra: Any) -> None:
        self.header.update(extra)
        points = sorted(self.entries.values(), key=lambda e: e["index"])
        document = {"format": FORMAT, "version": 1, **self.header, "points": points}
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path, json.dumps(document, indent=1, default=str).encode())


def file_names(point: Point, names: list[str]) -> list[str]:
    """Where a point's files go: ``0007_seed-8.png`` (``_1``, ``_2`` ... for more than one)."""
    stem = f"{point.index:04d}_{slug(point)}"
    out = []
    for i, name in enumerate(names):
        suffix = Path(name).suffix or ".bin"
        out.append(f"{stem}{'' if i == 0 else f'_{i}'}{suffix}")
    return out


def slug(point: Point) -> str:
    text = "_".join(f"{field}-{value}" for _, field, value in point.overrides)
    return re.sub(r"[^A-Za-z0-9.\-_]+", "-", text).strip("-")[:60] or "point"
