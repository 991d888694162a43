"""The files a client may read (``/view``) and write (uploads): inside three folders, nowhere else.

``/view`` serves from the output, input or temp folder only; uploads go to the input
folder only. A name or subfolder that is absolute, has ``..``, a drive, a NUL, or a
symlink leading out of the folder is refused; the path is resolved before the check, so
nothing outside the folder is ever opened. Uploads must be images (Pillow checks the
data, not only the name) within the upload cap (see :mod:`.guard`).
"""

from __future__ import annotations

import io
from pathlib import Path, PurePosixPath, PureWindowsPath

from .config import ServerConfig

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class FileRefused(ValueError):
    """A file name a client may not use; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def folder_for(config: ServerConfig, kind: str | None) -> Path:
    folders = {"output": config.outputs, "input": config.inputs, "temp": config.temp}
    if (kind or "output") not in folders:
        raise FileRefused(f"type {kind!r} is not one of: {', '.join(folders)}")
    return folders[kind or "output"]


def check_relative(name: str, what: str) -> PurePosixPath:
    """``name`` as a relative path that stays inside its folder, or :class:`FileRefused`."""
    if "\x00" in name:
        raise FileRefused(f"{what} contains a NUL character")
    windows = PureWindowsPath(name)
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or windows.is_absolute() or windows.drive:
        raise FileRefused(f"{what} {name!r} is an absolute path; only names inside the folder are served", 403)
    if ".." in posix.parts:
        raise FileRefused(f"{what} {name!r} contains '..'; only names inside the folder are served", 403)
    return posix


def inside(root: Path, subfolder: str, filename: str) -> Path:
    """``root / subfolder / filename``, after checking that it (symlinks followed) stays in ``root``."""
    if not filename:
        raise FileRefused("filename is required")
    relative = check_relative(subfolder or "", "subfolder") / check_relative(filename, "filename")
    path = root / relative
    real_root = root.resolve()
    real = path.resolve()
    if real != real_root and not real.is_relative_to(real_root):
        raise FileRefused(f"{filename!r} leads outside the folder", 403)
    return path


def view_path(config: ServerConfig, filename: str, subfolder: str = "", kind: str | None = "output") -> Path:
    path = inside(folder_for(config, kind), subfolder, filename)
    if not path.is_file():
        raise FileRefused(f"no file {filename!r} in the {kind or 'output'} folder", 404)
    return path


def save_upload(config: ServerConfig, filename: str, data: bytes, subfolder: str = "", overwrite: bool = False) -> Path:
    """Store an uploaded image in the input folder; an existing different file of the same
    name is kept and the upload gets a numbered name, as ComfyUI does."""
    name = PurePosixPath(filename.replace("\\", "/")).name
    if not name or name != filename.replace("\\", "/").split("/")[-1] or name.startswith("."):
        raise FileRefused(f"filename {filename!r} is not a plain file name")
    if not name.lower().endswith(IMAGE_EXTENSIONS):
        raise FileRefused(f"{name!r} is not an image file ({', '.join(IMAGE_EXTENSIONS)})")
    _check_image(data, name)
    path = inside(config.inputs, subfolder, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite:
        stem, suffix, counter = path.stem, path.suffix, 1
        while path.exists() and path.read_bytes() != data:
            path = path.with_name(f"{stem} ({counter}){suffix}")
            counter += 1
    tmp = path.with_name(f".{path.name}.upload")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


def _check_image(data: bytes, name: str) -> None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as picture:
            picture.verify()
    except Exception as exc:  # Pillow raises many kinds for broken data
        raise FileRefused(f"{name!r} is not a readable image: {exc}") from None
