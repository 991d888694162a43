"""Paths named inside a workflow are untrusted: they resolve only inside allowed folders.

A shared workflow may name ``../../.ssh/id_rsa`` or ``/etc/passwd`` as a model or an
input image. :func:`resolve_inside` looks a name up in the folders configured for its
kind and refuses absolute paths, ``..`` and symlinks whose target lies outside every
allowed folder, unless the user named the path themselves: hosts list such paths (a
``--set`` value, an ``--allow-path`` folder, a file picked in a dialog) in
``RunSettings.trusted_paths`` (built by :mod:`nodeflow.host.settings`).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Callable, Iterable, Sequence

from nodeflow.model.errors import NodeflowError

class PathRefused(NodeflowError, ValueError):
    """A path a workflow may not name; the message says why and how to allow it."""


def is_within(path: Path, roots: Iterable[Path]) -> bool:
    """Whether ``path``, with every symlink followed, is one of ``roots`` or inside one."""
    real = _real(path)
    return any(real == (root_real := _real(root)) or real.is_relative_to(root_real) for root in roots)


def resolve_inside(
    name: str,
    folders: Sequence[Path],
    trusted: Sequence[Path] = (),
    exists: Callable[[Path], bool] = Path.exists,
    what: str = "path",
) -> Path | None:
    """The first ``folder / name`` that ``exists``, or None when there is none.

    Raises :class:`PathRefused` for an absolute name, one with ``..``, or one that is a
    symlink leading out of the folders, unless it lies in one of the ``trusted`` paths.
    """
    trusted = [Path(p).expanduser() for p in trusted]
    if "\x00" in name:
        raise PathRefused(f"{what} {name!r} contains a NUL character")
    path = Path(name).expanduser()
    if path.is_absolute() or PureWindowsPath(name).is_absolute() or PureWindowsPath(name).drive:
        if trusted and is_within(path, trusted):
            return path if exists(path) else None
        raise PathRefused(
            f"{what} {name!r} is an absolute path; a workflow may only name files inside the configured "
            "folders (give the path yourself, e.g. with --set or --allow-path, to use it)"
        )
    if ".." in PurePosixPath(name).parts or ".." in PureWindowsPath(name).parts:
        candidates = [folder / path for folder in folders]
        if trusted and any(exists(c) and is_within(c, trusted) for c in candidates):
            return next(c for c in candidates if exists(c) and is_within(c, trusted))
        raise PathRefused(f"{what} {name!r} contains '..'; a workflow may not leave the configured folders")
    for folder in folders:
        candidate = folder / path
        # Where a name leads is checked before whether it exists, so that the answer never
        # tells a workflow whether some file outside the folders exists.
        if not os.path.lexists(candidate):
            continue
        if not is_within(candidate, [*folders, *trusted]):
            raise PathRefused(
                f"{what} {name!r} in {folder} is a symlink that leads outside the configured folders "
                "(add the location it leads to as a folder, or --allow-path it, to use it)"
            )
        if exists(candidate):
            return candidate
    return None


def open_inside(path: Path, roots: Sequence[Path], what: str = "file") -> int:
    """A read-only descriptor for ``path``, which must be a regular file that lies, with every
    symlink followed, inside one of ``roots``. Raises :class:`PathRefused` otherwise and
    FileNotFoundError when there is no such file inside.

    The check holds for the file actually opened, not just for the name: the path is
    resolved once, then opened one component at a time from the root with ``O_NOFOLLOW``,
    so a symlink swapped in after the check is refused rather than followed; and
    ``O_NONBLOCK`` plus the ``fstat`` check mean a FIFO or device is refused, never waited on.
    Read from the descriptor (or :func:`descriptor_path`), never by the name again."""
    real = _real(path)
    root = next((r for r in map(_real, roots) if real == r or real.is_relative_to(r)), None)
    if root is None:
        raise PathRefused(f"{what} {path.name!r} is outside the allowed folders")
    if not hasattr(os, "O_NOFOLLOW") or os.open not in os.supports_dir_fd:  # Windows: check, open, compare
        return _open_and_compare(real, what)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        for part in real.relative_to(root).parts:
            inner = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = inner
        _require_regular(fd, path, what)
        os.set_blocking(fd, True)
        return fd
    except BaseException as error:
        os.close(fd)
        if isinstance(error, OSError) and error.errno in (errno.ELOOP, errno.ENOTDIR):
            raise PathRefused(f"{what} {path.name!r} changed while it was being opened (a symlink was swapped in)") from None
        raise


def descriptor_path(fd: int, fallback: Path) -> str:
    """A name that opens exactly the file behind ``fd`` (``/proc/self/fd/N`` on Linux), for
    libraries that take only a path; elsewhere ``fallback``."""
    proc = f"/proc/self/fd/{fd}"
    return proc if os.path.exists(proc) else str(fallback)


def read_inside(path: Path, roots: Sequence[Path], limit: int, what: str = "file") -> bytes:
    """The bytes of ``path`` (see :func:`open_inside`), refusing a file over ``limit`` bytes."""
    fd = open_inside(path, roots, what)
    with os.fdopen(fd, "rb") as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise PathRefused(f"{what} {path.name!r} is larger than the limit of {limit:,} bytes")
    return data


def _require_regular(fd: int, path: Path, what: str) -> None:
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        raise PathRefused(f"{what} {path.name!r} is not a regular file (a folder, FIFO or device is never read)")


def _open_and_compare(real: Path, what: str) -> int:
    before = os.stat(real)
    fd = os.open(real, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    after = os.fstat(fd)
    if (before.st_dev, before.st_ino) != (after.st_dev, after.st_ino):
        os.close(fd)
        raise PathRefused(f"{what} {real.name!r} changed while it was being opened")
    try:
        _require_regular(fd, real, what)
    except PathRefused:
        os.close(fd)
        raise
    return fd


def _real(path: Path) -> Path:
    try:
        return path.expanduser().resolve()
    except (OSError, RuntimeError):  # a symlink loop: compare as written
        return Path(os.path.abspath(path.expanduser()))
