"""A ``.safetensors`` file memory-mapped: its tensors are views of the file's pages.

Reading a 2 GB checkpoint with ``safetensors.torch.load_file`` copies every byte into
anonymous memory before the loader converts it (fp16 to fp32, say), so the file's bytes
and the model's both sit in RAM at the peak. Here the tensors point into a private
(copy-on-write) mapping of the file; the loader copies each into the model's dtype and
device and then :meth:`MappedFile.release` gives that tensor's pages back (they stay in
the page cache, not in this process), so the peak is about the model alone.

The header is untrusted: every entry's dtype, shape and byte range is checked against
the file before any view is made (:class:`CheckpointError` naming the file otherwise).
Views are for loading only: a model must copy them (a file truncated under a live view
would fault), which the loaders do.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
from pathlib import Path
from typing import Any

import torch

from nodes.diffusion.impl.ldm import CheckpointError

MAX_HEADER_BYTES = 100 * 1024**2  # safetensors' own limit
_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
for _name, _attr in (("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2")):
    if hasattr(torch, _attr):
        _DTYPES[_name] = getattr(torch, _attr)
_PAGE = mmap.PAGESIZE


class MappedFile:
    """The tensors of one ``.safetensors`` file, as views of a private mapping of ``fd``."""

    def __init__(self, fd: int, name: str):
        self.name = name
        size = os.fstat(fd).st_size
        if size < 8:
            raise CheckpointError(f"{name} is not a readable .safetensors file (too short)")
        self._map = mmap.mmap(fd, 0, access=mmap.ACCESS_COPY)
        self._size = size
        (header_len,) = struct.unpack("<Q", self._map[:8])
        if header_len > min(MAX_HEADER_BYTES, size - 8):
            raise CheckpointError(f"{name} is not a readable .safetensors file (header length {header_len:,})")
        try:
            header = json.loads(self._map[8 : 8 + header_len])
        except (UnicodeDecodeError, ValueError):
            raise CheckpointError(f"{name} is not a readable .safetensors file (its header is not JSON)") from None
        if not isinstance(header, dict):
            raise CheckpointError(f"{name} is not a readable .safetensors file (its header is not an object)")
        self._start = 8 + header_len
        self._base = torch.frombuffer(self._map, dtype=torch.uint8, count=1).data_ptr() if size else 0
        self.tensors: dict[str, torch.Tensor] = {}
        for key, entry in header.items():
            if key == "__metadata__":
                continue
            self.tensors[key] = self._view(key, entry)

    def _view(self, key: str, entry: Any) -> torch.Tensor:
        bad = f"tensor {key[:120]!r} is malformed"
        if not isinstance(entry, dict):
            raise CheckpointError(bad)
        dtype = _DTYPES.get(entry.get("dtype"))
        shape, offsets = entry.get("shape"), entry.get("data_offsets")
        if dtype is None:
            raise CheckpointError(f"{bad} (unsupported dtype {str(entry.get('dtype'))[:20]!r})")
        if not (isinstance(shape, list) and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)):
            raise CheckpointError(f"{bad} (shape)")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise CheckpointError(f"{bad} (data_offsets)")
        begin, end = offsets
        count = math.prod(shape)
        if not (0 <= begin <= end and self._start + end <= self._size and end - begin == count * dtype.itemsize):
            raise CheckpointError(f"{bad} (its bytes do not fit the file or its shape)")
        if count == 0:
            return torch.empty(shape, dtype=dtype)
        flat = torch.frombuffer(self._map, dtype=dtype, count=count, offset=self._start + begin)
        return flat.view(shape)

    def holds(self, tensor: torch.Tensor) -> bool:
        """Is ``tensor`` a view of this file's pages?"""
        try:
            pointer = tensor.data_ptr()
        except (RuntimeError, AttributeError):
            return False
        return tensor.device.type == "cpu" and self._base <= pointer < self._base + self._size

    def release(self, tensor: torch.Tensor) -> None:
        """Drop ``tensor``'s pages from this process (read again from the file if touched)."""
        if self._map.closed or not self.holds(tensor):
            return
        storage = tensor.untyped_storage()  # the whole entry, whatever view of it this is
        start = storage.data_ptr() - self._base
        end = start + storage.nbytes()
        start -= start % _PAGE
        end = min(self._size, end)
        if end > start and hasattr(mmap, "MADV_DONTNEED"):
            self._map.madvise(mmap.MADV_DONTNEED, start, end - start)

    def release_all(self) -> None:
        if not self._map.closed and hasattr(mmap, "MADV_DONTNEED"):
            self._map.madvise(mmap.MADV_DONTNEED, 0, self._size)


def adopt(tensor: torch.Tensor, device: str, dtype: torch.dtype | None, source: MappedFile | None) -> torch.Tensor:
    """``tensor`` on ``device`` in ``dtype`` (floating point only), never a view of ``source``,
    whose pages for it are then released."""
    target = dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype
    if source is None or not source.holds(tensor):
        return tensor.to(device=device, dtype=target)
    copied = tensor.to(device=device, dtype=target, copy=True)
    source.release(tensor)
    return copied


def map_file(fd: int, path: Path) -> MappedFile:
    try:
        return MappedFile(fd, path.name)
    except (OSError, ValueError, OverflowError) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(f"{path.name} is not a readable .safetensors file ({type(error).__name__})") from None
