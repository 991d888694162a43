"""Data types that travel along links.

A data type is a name (upper case by convention) plus what a view needs to draw
it. The core knows only the primitive value types; node packs register their own
(LATENT, MODEL, ...) with :func:`register_data_type`, so the core stays free of
diffusion knowledge.
"""

from __future__ import annotations

from dataclasses import dataclass

ANY = "*"


@dataclass(frozen=True)
class DataType:
    name: str
    color: tuple[int, int, int] = (160, 160, 160)
    description: str = ""


_DATA_TYPES: dict[str, DataType] = {}


def register_data_type(name: str, color: tuple[int, int, int] = (160, 160, 160), description: str = "") -> DataType:
    """Declare a link data type; re-registering the same name returns the first declaration."""
    if not name or name != name.strip():
        raise ValueError(f"invalid data type name {name!r}")
    existing = _DATA_TYPES.get(name)
    if existing is not None:
        return existing
    data_type = DataType(name, tuple(color), description)
    _DATA_TYPES[name] = data_type
    return data_type


def data_type(name: str) -> DataType:
    """The declaration of ``name``; unknown names get a neutral grey entry (never an error)."""
    return _DATA_TYPES.get(name) or DataType(name)


def data_types() -> dict[str, DataType]:
    return dict(_DATA_TYPES)


def is_compatible(source: str, target: str) -> bool:
    """Whether an output of type ``source`` may feed an input of type ``target``."""
    if source == target or ANY in (source, target):
        return True
    # An integer is a valid float, never the other way round.
    return source == "INT" and target == "FLOAT"


# The primitive types behind widgets; a widget turned into a socket accepts these.
INT = register_data_type("INT", (110, 170, 110), "Whole number")
FLOAT = register_data_type("FLOAT", (110, 150, 200), "Real number")
STRING = register_data_type("STRING", (200, 170, 110), "Text")
BOOLEAN = register_data_type("BOOLEAN", (180, 120, 180), "True or false")
