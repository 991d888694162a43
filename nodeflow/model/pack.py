"""What a node pack contributes, declared in one object.

Every pack, built-in or third-party, ends its package's ``__init__.py`` with a
:class:`Pack` and names it in the ``nodeflow.packs`` entry point group of its
``pyproject.toml``::

    PACK = Pack("mypack", nodes=(Blur, Sharpen), data_types=(KERNEL,))

    [project.entry-points."nodeflow.packs"]
    mypack = "mypack:PACK"

The core finds packs only this way, so it names none of them, and it scans no module:
whatever a pack does not list here does not exist for nodeflow. Importing the pack's
package must stay cheap (no torch at import time): listing and validating nodes imports
every pack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

from nodeflow.model.node import Node
from nodeflow.model.types import DataType

from nodeflow.model.devices import DeviceBackend

if TYPE_CHECKING:  # the importer protocol lives with the file formats, one layer up
    from nodeflow.files.importers import Importer


@dataclass(frozen=True)
class Command:
    """A ``nodeflow NAME ...`` subcommand a pack adds (e.g. ``train-demo``).

    ``main`` receives the arguments after the command's name and returns the exit code;
    it should import what it needs inside, so that listing commands stays cheap.
    """

    name: str
    help: str
    main: Callable[[Sequence[str]], int]


@dataclass(frozen=True)
class Pack:
    """A pack's declaration: its node types, the data types on their links, converters
    from other tools' workflow files, command-line commands, folders of models it
    ships (per model kind, searched after the user's own folders), and what it knows of
    devices (``devices``: memory sizes and moving models, see :mod:`nodeflow.model.devices`)."""

    name: str
    nodes: tuple[type[Node], ...] = ()
    data_types: tuple[DataType, ...] = ()
    importers: tuple["Importer", ...] = ()
    commands: tuple[Command, ...] = ()
    model_folders: Mapping[str, tuple[Path, ...]] = field(default_factory=dict)
    description: str = ""
    devices: DeviceBackend | None = None

    def __post_init__(self) -> None:
        for cls in self.nodes:
            if not (isinstance(cls, type) and issubclass(cls, Node) and cls.type):
                raise TypeError(f"pack {self.name!r}: {cls!r} is not a node type with a type name")
        for data_type in self.data_types:
            if not isinstance(data_type, DataType):
                raise TypeError(f"pack {self.name!r}: data_types holds {data_type!r}, not a DataType")
