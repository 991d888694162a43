"""Cheap stamps of files on disk, for ``Node.fingerprint``: a changed file gets a new stamp
without its contents being read."""

from __future__ import annotations

import os
from pathlib import Path

MAX_FOLDER_ENTRIES = 2_000  # a model folder holds a few dozen files; stop early on anything huge


def stamp(path: str | os.PathLike[str]) -> str:
    """Size and modification time of a file, or of every file in a folder (recursively);
    ``"missing"`` when there is nothing there."""
    path = Path(path)
    try:
        if path.is_file():
            info = path.stat()
            return f"{info.st_size}:{info.st_mtime_ns}"
        if path.is_dir():
            parts = []
            for count, child in enumerate(sorted(path.rglob("*"))):
                if count >= MAX_FOLDER_ENTRIES:
                    break
                if child.is_file():
                    info = child.stat()
                    parts.append(f"{child.relative_to(path)}={info.st_size}:{info.st_mtime_ns}")
            return ";".join(parts)
    except OSError:
        pass
    return "missing"
