"""Cheap stamps of files on disk, for ``Node.fingerprint``: a changed file gets a new stamp
without its contents being read.

Size and modification time alone miss a file replaced by another of the same size whose
modification time was carried over (``cp -p``, ``rsync -t``, an unpacked archive, a
download tool that sets it): the cache would keep serving the old model. The stamp also
holds the inode and the status-change time, which no user tool can set back: replacing or
rewriting a file always changes them. (A ``chmod`` or ``touch`` changes them too, which
only costs one reload.)"""

from __future__ import annotations

import os
from pathlib import Path

MAX_FOLDER_ENTRIES = 2_000  # a model folder holds a few dozen files; stop early on anything huge


def stamp(path: str | os.PathLike[str]) -> str:
    """Size, modification and status-change times and inode of a file, or of every file in
    a folder (recursively); ``"missing"`` when there is nothing there."""
    path = Path(path)
    try:
        if path.is_file():
            return _of(path.stat())
        if path.is_dir():
            parts = []
            for count, child in enumerate(sorted(path.rglob("*"))):
                if count >= MAX_FOLDER_ENTRIES:
                    break
                if child.is_file():
                    parts.append(f"{child.relative_to(path)}={_of(child.stat())}")
            return ";".join(parts)
    except OSError:
        pass
    return "missing"


def _of(info: os.stat_result) -> str:
    return f"{info.st_size}:{info.st_mtime_ns}:{info.st_ctime_ns}:{info.st_ino}"
