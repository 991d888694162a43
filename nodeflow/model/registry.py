"""Where node types come from.

Two sources: installed packs, each a :class:`~nodeflow.model.pack.Pack` named in the
``nodeflow.packs`` entry point group (the built-in diffusion and bundled-model packs come
in exactly like a third-party one), and, only when the user enables it, a folder of
``.py`` files whose :class:`Node` subclasses are registered. A workflow never causes
code to be loaded: it can only name types that one of these sources already registered.

The registry is an instance (tests build their own); :func:`default_registry` is the
process-wide one with every installed pack.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from nodeflow.model.devices import DeviceBackend, HostMemory
from nodeflow.model.node import Node
from nodeflow.model.pack import Command, Pack
from nodeflow.model.types import DataType

if TYPE_CHECKING:
    from nodeflow.files.importers import Importer

ENTRY_POINT_GROUP = "nodeflow.packs"


class RegistryError(Exception):
    pass


class NodeRegistry:
    def __init__(self) -> None:
        self._types: dict[str, type[Node]] = {}
        self._origin: dict[str, str] = {}
        self._data_types: dict[str, DataType] = {}
        self.packs: list[Pack] = []
        self.load_errors: list[str] = []
        from nodeflow.model.builtin import BUILTIN_NODES

        for cls in BUILTIN_NODES:
            self.register(cls, "nodeflow")

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

    def data_types(self) -> dict[str, DataType]:
        """Every data type on a registered node's sockets and outputs, by name."""
        return dict(self._data_types)

    def importers(self) -> list["Importer"]:
        return [importer for pack in self.packs for importer in pack.importers]

    def commands(self) -> dict[str, Command]:
        return {command.name: command for pack in self.packs for command in pack.commands}

    def device_backend(self) -> DeviceBackend:
        """The first installed pack's device backend, or :class:`HostMemory` (RAM, no offloading)."""
        return next((pack.devices for pack in self.packs if pack.devices is not None), None) or HostMemory()

    def model_folders(self, kind: str) -> list[Path]:
        """Folders of models the packs ship for ``kind``, searched after the user's own."""
        return [Path(folder) for pack in self.packs for folder in pack.model_folders.get(kind, ())]

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
        for data_type in cls.data_types():
            self._add_data_type(data_type, f"node type {cls.type}")
        self._types[cls.type] = cls
        self._origin[cls.type] = origin or cls.__module__
        return cls

    def register_pack(self, pack: Pack) -> Pack:
        """Register everything ``pack`` declares; a clash leaves the registry unchanged."""
        if any(existing.name == pack.name for existing in self.packs):
            raise RegistryError(f"a pack named {pack.name!r} is registered already")
        snapshot = (dict(self._types), dict(self._origin), dict(self._data_types))
        try:
            for data_type in pack.data_types:
                self._add_data_type(data_type, f"pack {pack.name}")
            for cls in pack.nodes:
                self.register(cls, f"pack {pack.name}")
        except RegistryError:
            self._types, self._origin, self._data_types = snapshot
            raise
        self.packs.append(pack)
        return pack

    def _add_data_type(self, data_type: DataType, origin: str) -> None:
        existing = self._data_types.get(data_type.name)
        if existing is not None and existing != data_type:
            raise RegistryError(f"data type {data_type.name!r} from {origin} differs from the one registered before")
        self._data_types[data_type.name] = data_type

    def load_packs(self) -> None:
        """Register every pack in the ``nodeflow.packs`` entry point group."""
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
            try:
                pack = ep.load()
                if not isinstance(pack, Pack):
                    raise RegistryError(f"{ep.value} is a {type(pack).__name__}, not a nodeflow Pack")
                self.register_pack(pack)
            except Exception as exc:  # a broken plugin must not take the app down
                self.load_errors.append(f"pack {ep.name!r} ({ep.value}) failed to load: {exc}")

    def register_module(self, module: ModuleType, origin: str = "") -> list[type[Node]]:
        """Register the node types a module defines (the user folder's files)."""
        found = [
            obj
            for obj in vars(module).values()
            if inspect.isclass(obj) and issubclass(obj, Node) and obj.type and obj.__module__ == module.__name__
        ]
        for cls in found:
            self.register(cls, origin or module.__name__)
        return found

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


_default: NodeRegistry | None = None


def default_registry(user_folder: str | Path | None = None) -> NodeRegistry:
    """The process-wide registry with every installed pack (and the user folder if given)."""
    global _default
    if _default is None:
        registry = NodeRegistry()
        registry.load_packs()
        _default = registry
    if user_folder is not None:
        _default.load_user_folder(user_folder)
    return _default
