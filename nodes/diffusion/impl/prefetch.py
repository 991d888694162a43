"""Ask the kernel to start reading a model's files while the loader is still importing.

A cold ``nodeflow run`` spends its first seconds importing torch, diffusers and
transformers before the Checkpoint node opens the file; a checkpoint not read since the
machine started (or pushed out of the page cache since) is then read from disk page by
page as the tensors are copied. :func:`read_ahead`, called with the resolved path before
those imports, hands every weights file to the kernel's readahead
(``posix_fadvise(WILLNEED)``) on a background thread, so the disk works while Python
imports. Nothing is read into this process and nothing is decided from the bytes: the
loader still opens, checks and confines every file itself.

Only regular files are hinted, symlinks are not followed, and a file larger than half of
the memory the system reports available is skipped (reading it ahead would only push
other files out of the cache). Where ``posix_fadvise`` does not exist (macOS, Windows)
this does nothing.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft")
MAX_FOLDER_DEPTH = 2  # a diffusers folder: model_index.json, then unet/, vae/, text_encoder/ ...


def read_ahead(path: Path) -> threading.Thread | None:
    """Start reading ``path`` (a weights file, or a model folder's weights files) into the
    page cache in the background; the thread, or None when there is nothing to do."""
    if not hasattr(os, "posix_fadvise"):
        return None
    thread = threading.Thread(target=_hint_all, args=(path,), name="nodeflow-read-ahead", daemon=True)
    thread.start()
    return thread


def _hint_all(path: Path) -> None:
    budget = _available_bytes() // 2
    for file in _weight_files(path):
        _hint(file, budget)


def _weight_files(path: Path) -> list[Path]:
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return []
    if stat.S_ISREG(mode):
        return [path]
    if not stat.S_ISDIR(mode):
        return []
    found: list[Path] = []
    level = [path]
    for _ in range(MAX_FOLDER_DEPTH):
        deeper = []
        for folder in level:
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for entry in entries:
                if entry.is_symlink():
                    continue
                if entry.is_dir(follow_symlinks=False):
                    deeper.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False) and entry.name.lower().endswith(WEIGHT_SUFFIXES):
                    found.append(Path(entry.path))
        level = deeper
    return found


def _hint(file: Path, budget: int) -> None:
    try:
        fd = os.open(file, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return
    try:
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode) and 0 < info.st_size <= budget:
            os.posix_fadvise(fd, 0, info.st_size, os.POSIX_FADV_WILLNEED)
    except OSError:
        pass
    finally:
        os.close(fd)


def _available_bytes() -> int:
    """MemAvailable from /proc/meminfo; without it, the physical memory."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError, AttributeError):
        return 0
