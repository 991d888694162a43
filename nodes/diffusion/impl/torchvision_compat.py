"""Letting ``import torchvision`` succeed when its compiled operators cannot load.

Why this exists: spandrel (upscale models) imports ``torchvision.transforms`` at import, and
once torchvision is installed, transformers imports it too whenever diffusers is imported.
The only torchvision on PyPI built for a given torch is a CUDA build; beside a CPU torch its
compiled library (``torchvision/_C.so``) does not load. torchvision copes with that for every
operator but two: ``torchvision/_meta_registrations.py`` registers fake kernels for
``torchvision::nms`` and ``torchvision::qnms`` unconditionally, which fails with "operator
torchvision::nms does not exist", so ``import torchvision`` dies and takes diffusers with it.

What it does: :func:`install` puts a finder in front of ``sys.meta_path`` that acts once,
the first time anything imports ``torchvision``. Then it tries to load torchvision's own
compiled library, exactly as torchvision would. If that works (a CPU build, or a CUDA build
beside a CUDA torch, e.g. from the PyTorch index), nothing else happens. If it does not,
it declares the two operators' schemas (no kernels), so the fake-kernel registrations
succeed; torchvision then imports with its compiled operators reported missing
(``torchvision.extension._has_ops()`` is False), as it is designed to run. Nothing nodeflow
uses needs those operators (spandrel's architectures use only torchvision's pure-Python
transforms); calling ``torchvision.ops.nms`` gives torch's "no kernel" error.

:func:`install` imports no torch; it is called by :mod:`nodes.diffusion.impl` (every path
into the pack's models goes through that package) and by the test suite's conftest, which
builds diffusers models directly. Code that imports diffusers before nodeflow's pack should
call it first. Cost: importing torchvision adds about 1 s to the first diffusers import
(measured on our 2-core machine: ``import torch`` 1.0 s, ``import torch, torchvision`` 2.1 s).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from typing import Any

# The two operators torchvision's meta registrations need to exist, with the schemas its
# compiled library declares.
SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)

_library: Any = None  # the torch.library.Library holding our schemas; kept alive while in use
outcome: str = "not needed yet"  # what happened, for tests and bug reports


class _Finder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: seeing the first import of torchvision, prepares torch for it."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname == "torchvision":
            uninstall()
            prepare()
        return None


_FINDER = _Finder()


def install() -> None:
    """Arrange for :func:`prepare` to run before torchvision's first import (idempotent)."""
    if "torchvision" in sys.modules or _FINDER in sys.meta_path:
        return
    sys.meta_path.insert(0, _FINDER)


def uninstall() -> None:
    if _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)


def prepare(ops_library: Path | None = None) -> str:
    """Make torchvision importable; returns what was done. ``ops_library``: torchvision's
    compiled library (found beside the installed package when not given)."""
    global outcome
    import torch

    if _has_schema("torchvision::nms") and _has_schema("torchvision::qnms"):
        outcome = "torchvision's operators were already registered"
        return outcome
    library = ops_library if ops_library is not None else _ops_library()
    if library is None:
        outcome = "torchvision is not installed"
        return outcome
    try:
        torch.ops.load_library(str(library))
    except (OSError, RuntimeError) as error:
        _declare_schemas()
        outcome = f"torchvision's compiled operators do not load here ({type(error).__name__}); their schemas were declared"
        return outcome
    if _has_schema("torchvision::nms"):
        outcome = "torchvision's compiled operators load"
    else:
        # A library that loaded but declared no nms (not torchvision's): torchvision would
        # still fail, so declare the schemas.
        _declare_schemas()
        outcome = f"{library.name} loaded without torchvision's operators; their schemas were declared"
    return outcome


def _declare_schemas() -> None:
    global _library
    import torch

    missing = [schema for schema in SCHEMAS if not _has_schema("torchvision::" + schema.split("(", 1)[0])]
    if not missing:
        return
    if _library is None:
        _library = torch.library.Library("torchvision", "FRAGMENT")
    for schema in missing:
        _library.define(schema)


def _has_schema(name: str) -> bool:
    import torch

    try:
        torch._C._dispatch_find_schema_or_throw(name, "")
    except RuntimeError:
        return False
    return True


def _ops_library() -> Path | None:
    """torchvision's compiled ``_C`` library, located without importing torchvision."""
    try:
        spec = importlib.util.find_spec("torchvision")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            candidate = Path(folder) / f"_C{suffix}"
            if candidate.is_file():
                return candidate
    return Path(next(iter(spec.submodule_search_locations))) / "_C.so"  # loading it fails: schemas declared
