"""Data types that travel along links.

A data type is one object, declared once by whoever owns the value that travels on it:
its name (upper case by convention, what files and ``nodeflow nodes --json`` show), the
colour a view draws it in, a description, and the Python class of the value. Sockets and
outputs are declared with the object itself (``Socket(LATENT)``), so a misspelt type is
a ``NameError`` when the pack is imported, not a link the editor refuses later. The core
declares only the primitive types behind widgets; packs declare theirs beside their value
classes and list them in their :class:`~nodeflow.model.pack.Pack`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DataType:
    name: str
    color: tuple[int, int, int] = (160, 160, 160)
    description: str = ""
    value: type | tuple[type, ...] | None = None  # what travels on the link; None: not checked

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or self.name != self.name.strip():
            raise ValueError(f"invalid data type name {self.name!r}")
        object.__setattr__(self, "color", tuple(self.color))

    def __str__(self) -> str:
        return self.name


ANY = DataType("*", (200, 200, 200), "Any value")

# The primitive types behind widgets; a widget turned into a socket accepts these.
INT = DataType("INT", (110, 170, 110), "Whole number", int)
FLOAT = DataType("FLOAT", (110, 150, 200), "Real number", float)
STRING = DataType("STRING", (200, 170, 110), "Text", str)
BOOLEAN = DataType("BOOLEAN", (180, 120, 180), "True or false", bool)
PRIMITIVES = (ANY, INT, FLOAT, STRING, BOOLEAN)


def is_compatible(source: str, target: str) -> bool:
    """Whether an output of the data type named ``source`` may feed an input of the one
    named ``target`` (names, as ``Output.data_type`` and ``Input.data_type`` give them)."""
    if source == target or ANY.name in (source, target):
        return True
    # An integer is a valid float, never the other way round.
    return source == INT.name and target == FLOAT.name


def require_data_type(value: Any, where: str) -> DataType:
    """``value`` if it is a :class:`DataType`, else a TypeError that names the fix."""
    if isinstance(value, DataType):
        return value
    if isinstance(value, str):
        raise TypeError(
            f"{where}: the type {value!r} is a string; declare it once as a DataType "
            f"({value} = DataType({value!r}, colour, description, value=ValueClass)) and use that object"
        )
    raise TypeError(f"{where}: {value!r} is not a DataType")
