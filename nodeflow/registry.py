"""Where node types are found.

Three sources, in this order: the built-in packs under the ``nodes`` package, installed
plugin packages that declare an entry point in the ``nodeflow.nodes`` group, and, only
when the user enables it, a folder of ``.py`` files. A workflow never causes code to be
loaded: it can only name types that one of these sources already registered.

A pack module is imported and every :class:`Node` subclass defined in it with a
``type`` is registered. An entry point may name a module (same rule) or a callable
returning node classes.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
import sys
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Iterable

from .node import Node

ENTRY_POINT_GROUP = "nodeflow.nodes"
BUILTIN_PACKAGE = "nodes"


class RegistryError(Exception):
    pass


class NodeRegistry:
    def __init__(self) -> None:
        self._types: dict[str, type[Node]] = {}
        self._origin: dict[str, str] = {}
        self.load_errors: list[str] = []

    # -- lookup --
    def __contains__(self, type_name: object) -> bool:
        return type_name in self._types

    def __getitem__(self, type_name: str) -> type[Node]:
        return self._types[type_name]

    def get(self, type_name: str) -> type[Node] | None:
        return self._types.get(type_name)

    def types(self) -> list[type[Node]]:
        return sorted(self._types.values(), key=lambda c: (c.category, c.type))

    def origin(self, type_name: str) -> str:
        return self._origin.get(type_name, "")

    # -- registration --
    def register(self, cls: type[Node], origin: str = "") -> type[Node]:
        if not (inspect.isclass(cls) and issubclass(cls, Node)) or not cls.type:
            raise RegistryError(f"{cls!r} is not a node type with a type name")
        existing = self._types.get(cls.type)
        if existing is not None and existing is not cls:
            raise RegistryError(
                f"node type {cls.type!r} from {origin or cls.__module__} clashes with the one from "
                f"{self._origin.get(cls.type) or existing.__module__}"
            )
        self._types[cls.type] = cls
        self._origin[cls.type] = origin or cls.__module__
        return cls

    def register_module(self, module: ModuleType, origin: str = "") -> list[type[Node]]:
        found = [
            obj
            for obj in vars(module).values()
            if inspect.isclass(obj) and issubclass(obj, Node) and obj.type and obj.__module__ == module.__name__
        ]
        for cls in found:
            self.register(cls, origin or module.__name__)
        return found

    def load_package(self, package: str = BUILTIN_PACKAGE) -> None:
        """Import ``package`` and each of its submodules (recursively) and register their nodes."""
        root = importlib.import_module(package)
        self.register_module(root)
        for info in pkgutil.iter_modules(getattr(root, "__path__", []), prefix=package + "."):
            if info.name.rsplit(".", 1)[-1].startswith("_"):
                continue  # private helpers (implementation modules) are neither packs nor imported here
            if info.ispkg:
                self.load_package(info.name)
            else:
                self.register_module(importlib.import_module(info.name))

    def load_entry_points(self) -> None:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                loaded = ep.load()
                if isinstance(loaded, ModuleType):
                    self.register_module(loaded, f"plugin {ep.name}")
                else:
                    for cls in _as_classes(loaded):
                        self.register(cls, f"plugin {ep.name}")
            except Exception as exc:  # a broken plugin must not take the app down
                self.load_errors.append(f"plugin {ep.name!r} failed to load: {exc}")

    def load_user_folder(self, folder: str | Path) -> None:
        """Load every ``*.py`` in ``folder``; called only when the user enabled it."""
        for path in sorted(Path(folder).glob("*.py")):
            name = f"nodeflow_user_nodes.{path.stem}"
            try:
                spec = importlib.util.spec_from_file_location(name, path)
                assert spec and spec.loader
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                spec.loader.exec_module(module)
                self.register_module(module, f"user folder {path}")
            except Exception as exc:
                self.load_errors.append(f"user node file {path} failed to load: {exc}")


def _as_classes(loaded: object) -> Iterable[type[Node]]:
    if inspect.isclass(loaded):
        return [loaded]  # type: ignore[list-item]
    if callable(loaded):
        return list(loaded())  # type: ignore[call-arg]
    return list(loaded)  # type: ignore[call-overload]


_default: NodeRegistry | None = None


def default_registry(user_folder: str | Path | None = None) -> NodeRegistry:
    """The process-wide registry with built-ins and plugins (and the user folder if given)."""
    global _default
    if _default is None:
        registry = NodeRegistry()
        registry.load_package(BUILTIN_PACKAGE)
        registry.load_entry_points()
        _default = registry
    if user_folder is not None:
        _default.load_user_folder(user_folder)
    return _default
