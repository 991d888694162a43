"""Replace a file so that a crash at any moment leaves either the old or the new content.

The data goes to a temporary file in the same folder (same file system, so the rename is
atomic), is flushed to disk, then renamed over the target; the folder is synced so the
rename itself survives a power cut. On an ordinary error the temporary file is removed;
only a hard crash can leave one behind, named ``.<name>.<random>.tmp`` beside the target.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path


def write_atomically(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (through a symlink, onto the file it names)."""
    target = Path(os.path.realpath(path))
    folder = target.parent
    temp, fd = _create_temp(folder, target.name)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            _keep_mode(fd, target)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, target)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise
    _sync_folder(folder)


def _create_temp(folder: Path, name: str) -> tuple[Path, int]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        temp = folder / f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            # Mode 0o666 filtered by the umask: the permissions a plain open() would give.
            return temp, os.open(temp, flags, 0o666)
        except FileExistsError:
            continue


def _keep_mode(fd: int, target: Path) -> None:
    """Give the new file the old one's permissions, so saving does not change who may read it."""
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        return
    if hasattr(os, "fchmod"):
        os.fchmod(fd, mode)


def _sync_folder(folder: Path) -> None:
    if not hasattr(os, "O_DIRECTORY"):
        return  # Windows: folders cannot be opened for fsync; the rename is already durable enough
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
