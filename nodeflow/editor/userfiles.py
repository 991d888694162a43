"""The editor's small files in the user's config folder: recent workflows and the
crash-recovery copy of unsaved work.

The folder is nodeflow's config folder (``$NODEFLOW_CONFIG_DIR`` if set, which tests
point at a temporary folder, else ``~/.config/nodeflow``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

RECENT_LIMIT = 10


def config_dir() -> Path:
    from nodeflow.host.config import config_dir as nodeflow_config_dir  # one folder for all of nodeflow's settings

    return nodeflow_config_dir()


def write_json_atomic(path: Path, data: Any) -> None:
    """Through nodeflow's one atomic writer (fsynced, folder synced), so a crash never
    leaves half a recovery file, and the recovery copy is as safe as a saved workflow."""
    from nodeflow.files.atomic import write_atomically

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(data, indent=1).encode("utf-8"))


def _read_json(path: Path) -> Any:
    """The strict reader every nodeflow JSON file goes through (no ``NaN``, no ``1e999``,
    no 5,000-digit integers); a file it refuses counts as damaged."""
    from nodeflow.model import jsontext
    from nodeflow.model.errors import NodeflowError

    try:
        return jsontext.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, NodeflowError):
        return None  # missing or damaged: start afresh rather than refuse to open


class RecentFiles:
    def __init__(self, folder: Path):
        self.path = folder / "recent.json"

    def list(self) -> list[str]:
        data = _read_json(self.path)
        return [p for p in data if isinstance(p, str)] if isinstance(data, list) else []

    def add(self, workflow: str | Path) -> list[str]:
        entry = str(Path(workflow).resolve())
        items = [entry] + [p for p in self.list() if p != entry]
        write_json_atomic(self.path, items[:RECENT_LIMIT])
        return items[:RECENT_LIMIT]

    def remove(self, workflow: str | Path) -> None:
        entry = str(Path(workflow).resolve())
        write_json_atomic(self.path, [p for p in self.list() if p != entry])


class Recovery:
    """Unsaved work written every few seconds; removed on a clean exit, so finding it
    at start means the last session ended abnormally."""

    def __init__(self, folder: Path):
        self.path = folder / "recovery.json"

    def save(self, workflow: dict[str, Any], source_path: str | None) -> None:
        write_json_atomic(self.path, {"saved_at": time.time(), "source_path": source_path, "workflow": workflow})

    def load(self) -> dict[str, Any] | None:
        data = _read_json(self.path)
        if isinstance(data, dict) and isinstance(data.get("workflow"), dict):
            return data
        return None

    def exists(self) -> bool:
        return self.load() is not None

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
