"""Where the shipped example workflows are, and which files Save may overwrite.

The examples live in the repository's ``workflows/`` folder; an installed nodeflow
has them under ``<prefix>/share/nodeflow/workflows`` (pyproject's data-files). Both are
looked for, so the editor finds its default workflow from a checkout, an editable
install or a wheel, and starts on an empty graph when there is none.

Save writes nodeflow's format, so it must not overwrite a file in another format (a
ComfyUI workflow, a PNG) nor a shipped example: those open without a save target and
Save asks where to write, like Save As.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DEFAULT_NAME = "default.json"
NATIVE_PROBE_BYTES = 64 * 1024 * 1024


def shipped_folders() -> list[Path]:
    candidates = [
        Path(__file__).resolve().parents[2] / "workflows",  # a checkout or an editable install
        Path(sys.prefix) / "share" / "nodeflow" / "workflows",  # a wheel's data files
    ]
    return [folder for folder in candidates if folder.is_dir()]


def default_workflow() -> Path | None:
    """The workflow a first start opens, or None when no examples are installed."""
    for folder in shipped_folders():
        if (folder / DEFAULT_NAME).is_file():
            return folder / DEFAULT_NAME
    return None


def is_shipped(path: str | Path) -> bool:
    resolved = Path(path).resolve()
    return any(resolved.is_relative_to(folder.resolve()) for folder in shipped_folders())


def is_native_workflow_file(path: str | Path) -> bool:
    """Whether ``path`` holds nodeflow's own JSON format (which Save writes back)."""
    path = Path(path)
    if path.suffix.lower() != ".json":
        return False
    try:
        with open(path, "rb") as handle:
            data = json.loads(handle.read(NATIVE_PROBE_BYTES).decode("utf-8-sig"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "format" in data


def may_overwrite(path: str | Path) -> bool:
    """Whether Save may write nodeflow's format over the file ``path`` was opened from."""
    return is_native_workflow_file(path) and not is_shipped(path)
