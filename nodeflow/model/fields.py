"""Declared inputs and outputs of a node.

Each field is declared once, as a class attribute of a :class:`~nodeflow.model.node.Node`;
the editor (which widget to draw), the validator (what values are legal), the JSON
Schema and the CLI's node listing all read these objects.

A *socket* input only receives values along a link. A *widget* input holds a literal
value edited by the user; every widget can also be fed by a link of its
``data_type`` ("converted to a socket"), in which case the link wins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

from nodeflow.model.errors import NodeflowError
from nodeflow.model.types import BOOLEAN, FLOAT, INT, STRING, DataType, require_data_type
from nodeflow.model.values import is_int, show

_MISSING: Any = object()


class FieldError(NodeflowError, ValueError):
    """A value that a field refuses; the message is written for the user."""


@dataclass(eq=False, kw_only=True)
class Input:
    """Base of every declared input. ``name`` is filled in from the attribute name."""

    tooltip: str = ""
    optional: bool = False
    name: str = field(default="", init=False)
    kind: ClassVar[str] = "input"

    def __set_name__(self, owner: type, name: str) -> None:
        if self.name:  # the same object assigned in a second class (or twice in one)
            raise TypeError(
                f"{owner.__name__}.{name}: this field object is already the input {self.name!r} of another "
                "declaration; give each node its own field (a function that returns a fresh one)"
            )
        self.name = name

    @property
    def is_widget(self) -> bool:
        return False

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description, used by ``nodeflow nodes --json`` and the docs."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "type": self.data_type}
        if self.tooltip:
            out["tooltip"] = self.tooltip
        if self.optional:
            out["optional"] = True
        return out

    # The name of the DataType a link into this input must carry (read on every link check,
    # so a plain attribute: a class attribute for widgets, set per socket in its __init__).
    data_type: ClassVar[str] = ""


@dataclass(eq=False)
class Socket(Input):
    """An input fed only by a link, e.g. ``latent = Socket(LATENT)``."""

    type: DataType = None  # type: ignore[assignment]
    kind: ClassVar[str] = "socket"

    def __init__(self, type: DataType, tooltip: str = "", optional: bool = False):
        super().__init__(tooltip=tooltip, optional=optional)
        self.type = require_data_type(type, "Socket")
        self.data_type = self.type.name  # type: ignore[misc]


@dataclass(eq=False)
class Widget(Input):
    """An input with a literal value. Subclasses define the value's rules.

    ``affects_result=False`` marks a field that only chooses what is *shown* while the
    node runs (e.g. which view the live step preview draws): ``run`` still receives it,
    but it is left out of the node's signature, so changing it never re-runs the node or
    anything downstream, and never writes another copy of a saved image."""

    default: Any = None
    affects_result: bool = field(default=True, kw_only=True)

    @property
    def is_widget(self) -> bool:
        return True

    def validate(self, value: Any) -> Any:
        """Return ``value`` in canonical form, or raise :class:`FieldError`."""
        raise NotImplementedError

    def json_schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["default"] = self.default
        if not self.affects_result:
            out["affects_result"] = False
        return out




@dataclass(eq=False)
class Int(Widget):
    default: int = 0
    min: int | None = None
    max: int | None = None
    step: int = 1
    kind: ClassVar[str] = "int"

    data_type: ClassVar[str] = INT.name

    def validate(self, value: Any) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not is_int(value):
            raise FieldError(f"expected a whole number, got {show(value)}")
        if self.min is not None and value < self.min:
            raise FieldError(f"{show(value)} is below the minimum {self.min}")
        if self.max is not None and value > self.max:
            raise FieldError(f"{show(value)} is above the maximum {self.max}")
        return value

    def json_schema(self) -> dict[str, Any]:
        return _bounded({"type": "integer"}, self.min, self.max)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "min": self.min, "max": self.max, "step": self.step}


@dataclass(eq=False)
class Seed(Int):
    """A random seed: 0 .. 2**64-1; the editor adds a randomize button."""

    default: int = 0
    min: int | None = 0
    max: int | None = 2**64 - 1
    kind: ClassVar[str] = "seed"


@dataclass(eq=False)
class Float(Widget):
    default: float = 0.0
    min: float | None = None
    max: float | None = None
    step: float = 0.01
    kind: ClassVar[str] = "float"

    data_type: ClassVar[str] = FLOAT.name

    def validate(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FieldError(f"expected a number, got {show(value)}")
        try:
            value = float(value)
        except OverflowError:  # an integer past float range, e.g. 10**400
            raise FieldError(f"expected a finite number, got {show(value)}") from None
        if not math.isfinite(value):
            raise FieldError(f"expected a finite number, got {value}")
        if self.min is not None and value < self.min:
            raise FieldError(f"{value:g} is below the minimum {self.min:g}")
        if self.max is not None and value > self.max:
            raise FieldError(f"{value:g} is above the maximum {self.max:g}")
        return value

    def json_schema(self) -> dict[str, Any]:
        return _bounded({"type": "number"}, self.min, self.max)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "min": self.min, "max": self.max, "step": self.step}


@dataclass(eq=False)
class String(Widget):
    default: str = ""
    multiline: bool = False
    max_length: int = 100_000
    # How big a view shows a multi-line box: ``lines`` of text, ``width`` times the usual
    # widget width (a Note's text is longer than a prompt).
    lines: int = 4
    width: float = 1.0
    kind: ClassVar[str] = "string"

    data_type: ClassVar[str] = STRING.name

    def validate(self, value: Any) -> str:
        if not isinstance(value, str):
            raise FieldError(f"expected text, got {show(value)}")
        if len(value) > self.max_length:
            raise FieldError(f"text of {len(value)} characters is longer than the limit {self.max_length}")
        return value

    def json_schema(self) -> dict[str, Any]:
        return {"type": "string", "maxLength": self.max_length}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "multiline": self.multiline}


@dataclass(eq=False)
class Bool(Widget):
    default: bool = False
    kind: ClassVar[str] = "bool"

    data_type: ClassVar[str] = BOOLEAN.name

    def validate(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise FieldError(f"expected true or false, got {show(value)}")
        return value

    def json_schema(self) -> dict[str, Any]:
        return {"type": "boolean"}


@dataclass(eq=False)
class Choice(Widget):
    """One of a fixed list of strings, e.g. a sampler name."""

    choices: Sequence[str] = ()
    kind: ClassVar[str] = "choice"

    def __init__(self, choices: Sequence[str], default: str = _MISSING, tooltip: str = "", optional: bool = False,
                 affects_result: bool = True):
        super().__init__(tooltip=tooltip, optional=optional, affects_result=affects_result)
        self.choices = tuple(choices)
        self.default = default
        if not self.choices:
            raise ValueError("a Choice needs at least one choice")
        if self.default is _MISSING:
            self.default = self.choices[0]
        if self.default not in self.choices:
            raise ValueError(f"default {self.default!r} is not one of the choices")

    data_type: ClassVar[str] = STRING.name

    def validate(self, value: Any) -> str:
        if value not in self.choices:
            raise FieldError(f"{show(value)} is not one of: {', '.join(self.choices)}")
        return value

    def json_schema(self) -> dict[str, Any]:
        return {"enum": list(self.choices)}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "choices": list(self.choices)}


@dataclass(eq=False)
class FileChoice(Widget):
    """A file picked from a folder kind the host knows (e.g. ``"checkpoints"``).

    The value is a path relative to one of that kind's folders; which files exist is
    a question for the run context, not for the declaration, so validation here only
    checks the shape of the value.
    """

    folder: str = ""
    extensions: Sequence[str] = ()
    default: str = ""
    kind: ClassVar[str] = "file"

    data_type: ClassVar[str] = STRING.name

    def validate(self, value: Any) -> str:
        if not isinstance(value, str):
            raise FieldError(f"expected a file name, got {show(value)}")
        if len(value) > 4096:
            raise FieldError("file name is longer than 4096 characters")
        if "\x00" in value:
            raise FieldError("file name contains a NUL character")
        return value

    def json_schema(self) -> dict[str, Any]:
        return {"type": "string", "maxLength": 4096}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "folder": self.folder, "extensions": list(self.extensions)}


@dataclass(frozen=True)
class Output:
    """A named, typed output, e.g. ``Output("latent", LATENT)``."""

    name: str
    type: DataType
    tooltip: str = ""
    data_type: str = field(init=False, compare=False, repr=False)  # the type's name, read on every link check

    def __post_init__(self) -> None:
        require_data_type(self.type, f"Output {self.name!r}")
        object.__setattr__(self, "data_type", self.type.name)

    def describe(self) -> dict[str, Any]:
        out = {"name": self.name, "type": self.type.name}
        if self.tooltip:
            out["tooltip"] = self.tooltip
        return out


def _bounded(schema: dict[str, Any], lo: Any, hi: Any) -> dict[str, Any]:
    if lo is not None:
        schema["minimum"] = lo
    if hi is not None:
        schema["maximum"] = hi
    return schema
