"""Parsing JSON from a file someone else wrote, so that every oddity is a message, not a traceback.

Python's ``json`` turns an integer literal of more than 4,300 digits into a ``ValueError``
from deep inside the decoder, reads ``1e999`` as infinity and accepts ``NaN``. Every
reader of shared or user files (workflows, the config file, a model folder's JSON) calls
:func:`loads`, which refuses those with one :class:`JSONTextError` that says what and where.
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable

from nodeflow.model.errors import NodeflowError

MAX_INT_DIGITS = 4300  # Python's own int/str conversion limit (sys.get_int_max_str_digits)


class JSONTextError(NodeflowError, ValueError):
    """JSON text that cannot be read; the message says where (line, column) and why."""


def loads(text: str, object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None) -> Any:
    """Parse ``text``; numbers must be finite and integers at most MAX_INT_DIGITS long."""
    try:
        return json.loads(text, object_pairs_hook=object_pairs_hook, parse_int=_int, parse_float=_float,
                          parse_constant=_constant)
    except json.JSONDecodeError as exc:
        raise JSONTextError(f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise JSONTextError("the JSON is nested too deeply") from None


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise JSONTextError(f"a number of {len(text.lstrip('-')):,} digits (the limit is {MAX_INT_DIGITS:,})")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JSONTextError(f"the number {text[:40]} is too large (numbers must be finite)")
    return value


def _constant(name: str) -> Any:
    raise JSONTextError(f"{name} is not valid JSON (numbers must be finite)")
