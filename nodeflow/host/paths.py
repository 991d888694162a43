"""Paths named inside a workflow are untrusted: they resolve only inside allowed folders.

A shared workflow may name ``../../.ssh/id_rsa`` or ``/etc/passwd`` as a model or an
input image. :func:`resolve_inside` looks a name up in the folders configured for its
kind and refuses absolute paths, ``..`` and symlinks whose target lies outside every
allowed folder, unless the user named the path themselves: hosts list such paths (a
``--set`` value, an ``--allow-path`` folder, a file picked in a dialog) in
``RunSettings.trusted_paths`` (built by :mod:`nodeflow.host.settings`).
"""

from __future__ import annotations

import os
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
        if not exists(candidate):
            continue
        if is_within(candidate, [*folders, *trusted]):
            return candidate
        raise PathRefused(
            f"{what} {name!r} in {folder} is a symlink to {_real(candidate)}, outside the configured folders "
            "(add that location as a folder, or --allow-path it, to use it)"
        )
    return None


def _real(path: Path) -> Path:
    try:
        return path.expanduser().resolve()
    except (OSError, RuntimeError):  # a symlink loop: compare as written
        return Path(os.path.abspath(path.expanduser()))
