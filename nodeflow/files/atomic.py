"""Replace a file so that a crash at any moment leaves either the old or the new content.

The data goes to a temporary file in the same folder (same file system, so the rename is
atomic), is flushed to disk, then renamed over the target; the folder is synced so the
rename itself survives a power cut. On an ordinary error the temporary file is removed;
only a hard crash (kill -9, power loss) can leave one behind, named
``.<name>.<pid>.<random>.tmp`` beside the target. The next write of the same name
removes those whose process is gone, so they do not pile up.

With ``replace=False`` (new numbered images) the finished file is hard-linked under its
name instead of renamed, which fails if the name appeared meanwhile: never a torn file
under the final name, never an existing one replaced.
"""

from __future__ import annotations

import glob
import os
import re
import secrets
import stat
import time
from pathlib import Path

from nodeflow.model.errors import NodeflowError

class SaveError(NodeflowError, OSError):
    """A file that could not be written (no such folder, disk full, no permission); the
    message names the file and the reason. An OSError, so callers catching that still do."""


_STALE_SECONDS = 3600  # temporaries without a live owner's pid in their name
_WRITING: set[str] = set()  # this process's temporaries being written now (other threads')


def write_atomically(path: str | os.PathLike[str], data: bytes, replace: bool = True) -> None:
    """Write ``data`` to ``path`` atomically. With ``replace`` (the default) an existing file
    is replaced (through a symlink, the file it names); without, FileExistsError is raised
    if anything (a file, a symlink) has that name. Any other failure is a :class:`SaveError`."""
    try:
        _write(path, data, replace)
    except (FileExistsError, SaveError):
        raise
    except OSError as exc:
        raise SaveError(exc.errno, f"cannot write {os.fspath(path)}: {exc.strerror or exc}") from None


def write_numbered(folder: str | os.PathLike[str], prefix: str, data: bytes, suffix: str = ".png") -> Path:
    """Write ``data`` to the first unused ``prefix_NNNNN<suffix>`` in ``folder`` (one past the
    highest number there), atomically and never over an existing file: the name SaveImage
    gives an image, and the one ``nodeflow run --server`` gives an image it downloads, so a
    run through a server writes the names a local run would. Returns the path written."""
    folder = Path(folder)
    numbered = re.compile(re.escape(prefix) + r"_(\d{5,})" + re.escape(suffix))
    taken = [int(m[1]) for p in folder.glob(glob.escape(prefix) + "_*" + glob.escape(suffix))
             if (m := numbered.fullmatch(p.name))]
    counter = max(taken, default=0) + 1
    while True:
        path = folder / f"{prefix}_{counter:05d}{suffix}"
        try:
            write_atomically(path, data, replace=False)
            return path
        except FileExistsError:
            counter += 1


def _write(path: str | os.PathLike[str], data: bytes, replace: bool) -> None:
    target = Path(os.path.realpath(path)) if replace else Path(os.path.abspath(path))
    folder = target.parent
    _remove_stale(folder, target.name)
    temp, fd = _create_temp(folder, target.name)
    _WRITING.add(temp.name)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if replace:
                _keep_mode(fd, target)
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(temp, target)
        else:
            _link_new(temp, target)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise
    finally:
        _WRITING.discard(temp.name)
    _sync_folder(folder)


def _link_new(temp: Path, target: Path) -> None:
    try:
        os.link(temp, target)  # atomic, and refuses an existing name (even a dangling symlink)
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links: check, then rename (a narrow race)
        if os.path.lexists(target):
            raise FileExistsError(target) from None
        os.replace(temp, target)
        return
    os.unlink(temp)


def _create_temp(folder: Path, name: str) -> tuple[Path, int]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        temp = folder / f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            # Mode 0o666 filtered by the umask: the permissions a plain open() would give.
            return temp, os.open(temp, flags, 0o666)
        except FileExistsError:
            continue


def _remove_stale(folder: Path, name: str) -> None:
    """Remove temporaries of ``name`` left by a process that no longer runs."""
    prefix = f".{name}."
    try:
        entries = [e for e in os.scandir(folder) if e.name.startswith(prefix) and e.name.endswith(".tmp")]
    except OSError:
        return
    for entry in entries:
        middle = entry.name[len(prefix) : -len(".tmp")].split(".")
        if entry.name in _WRITING:
            continue
        try:
            if len(middle) == 2 and middle[0].isdigit():
                if _alive(int(middle[0])):
                    continue
            elif time.time() - entry.stat(follow_symlinks=False).st_mtime < _STALE_SECONDS:
                continue  # an older writer's name: only once surely abandoned
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
        except OSError:
            continue


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # ours, yet not being written now (see _WRITING): a failed earlier write
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's), or cannot tell: leave it
    return True


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
