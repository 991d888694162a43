"""How many bytes a cached value holds, measured without importing torch.

Recognised by duck typing, recursively through containers:

- torch tensors: the bytes of their storage (a view keeps its whole storage alive),
  each storage counted once;
- torch modules: their parameters and buffers;
- numpy arrays: ``nbytes``; PIL images: width x height x bands x bytes per band;
- ``bytes``/``str`` and other leaves: ``sys.getsizeof``;
- dicts, lists, tuples, sets and dataclasses: the sum of their contents.

Any object is counted once (by id), so values shared between outputs are not
double-counted. Other objects count shallowly: walking an arbitrary object's
attributes (a tokenizer's vocabulary, a registry) would be slow and mostly wrong.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

_MAX_DEPTH = 32
# Bytes per band of PIL's wide modes; every other mode stores one byte per band.
_PIL_WIDE_MODES = {"I": 4, "F": 4, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}


def sizeof(value: Any) -> int:
    """Approximate memory held by ``value`` in bytes (on whichever device it lives)."""
    return _Meter().measure(value, 0)


class _Meter:
    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.storages: set[tuple[str, int]] = set()

    def measure(self, value: Any, depth: int) -> int:
        if value is None or isinstance(value, (bool, int, float)):
            return 0  # small immutables: not worth a budget entry
        if id(value) in self.seen:
            return 0
        self.seen.add(id(value))
        if isinstance(value, (str, bytes, bytearray, memoryview)):
            return _shallow(value)
        if _is_tensor(value):
            return self._tensor(value)
        if _is_module(value):
            return sum(self._tensor(t) for t in (*value.parameters(), *value.buffers()))
        if _is_ndarray(value):
            return int(value.nbytes)
        if _is_pil_image(value):
            width, height = value.size
            return width * height * len(value.getbands()) * _PIL_WIDE_MODES.get(value.mode, 1)
        if depth >= _MAX_DEPTH:
            return _shallow(value)
        depth += 1
        if isinstance(value, dict):
            return _shallow(value) + sum(
                self.measure(k, depth) + self.measure(v, depth) for k, v in value.items()
            )
        if isinstance(value, (list, tuple, set, frozenset)):
            return _shallow(value) + sum(self.measure(item, depth) for item in value)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return _shallow(value) + sum(
                self.measure(getattr(value, f.name, None), depth) for f in dataclasses.fields(value)
            )
        return _shallow(value)

    def _tensor(self, tensor: Any) -> int:
        try:
            storage = tensor.untyped_storage()
            key = (str(tensor.device), storage.data_ptr())
            if key in self.storages:
                return 0
            if key[1]:  # a zero pointer (empty or meta tensor) identifies nothing
                self.storages.add(key)
            return int(storage.nbytes())
        except (AttributeError, RuntimeError, NotImplementedError):
            return int(tensor.element_size() * tensor.nelement())


def _shallow(value: Any) -> int:
    return sys.getsizeof(value, 0)  # 0 for objects whose __sizeof__ misbehaves


def _is_tensor(value: Any) -> bool:
    return hasattr(value, "untyped_storage") and hasattr(value, "element_size")


def _is_module(value: Any) -> bool:
    return callable(getattr(value, "parameters", None)) and callable(getattr(value, "buffers", None))


def _is_ndarray(value: Any) -> bool:
    return hasattr(value, "nbytes") and hasattr(value, "dtype") and hasattr(value, "shape")


def _is_pil_image(value: Any) -> bool:
    return hasattr(value, "getbands") and hasattr(value, "mode") and isinstance(getattr(value, "size", None), tuple)
