"""Small facts about JSON-like values, for checks and for the messages that name them.

One copy, used by the fields, the workflow reader and the migrations alike, so that a
value from a hostile file (a 5,000-digit integer, a huge string) is described the same
safe way everywhere: never by converting it in full.
"""

from __future__ import annotations

import json
from typing import Any

_TYPE_NAMES = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
MAX_SHOWN = 60  # characters of a value quoted in a message


def is_int(value: Any) -> bool:
    """A whole number that is not a bool (JSON has no bool-as-int)."""
    return isinstance(value, int) and not isinstance(value, bool)


def json_type(value: Any) -> str:
    """The JSON name of ``value``'s type, e.g. "a string", for messages."""
    return _TYPE_NAMES.get(type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def show(value: Any, limit: int = MAX_SHOWN) -> str:
    """A short rendering of a bad value for a message: JSON-like for JSON values, a type
    name for objects and lists, and never a full conversion of a huge integer."""
    if isinstance(value, (dict, list)):
        return json_type(value)
    if is_int(value) and value.bit_length() > 128:
        return f"an integer of {len(str(value.bit_length()))}+ digits' magnitude (about {value.bit_length() * 0.30103:.0f} digits)"
    if isinstance(value, str) and len(value) > limit:
        value = value[: limit + 1]
    try:
        text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
    except ValueError:  # e.g. NaN in strict mode never reaches here; belt and braces
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
