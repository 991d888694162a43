"""The one family of nodeflow's own errors.

Every error nodeflow raises on purpose derives from :class:`NodeflowError`, so a host
can tell "nodeflow refused this input, with a message for the user" from a bug
(``except NodeflowError`` prints the message; anything else is a traceback worth a
report). Each subclass keeps ``ValueError`` as a second base where it had it, so
callers that caught ``ValueError`` keep working.
"""


class NodeflowError(Exception):
    """An error whose message is written for the user."""


def describe_value(value: object, limit: int = 60) -> str:
    """``value`` shortened for a message. Never fails: an integer too long for Python to
    print (past its 4,300-digit conversion limit) is described by its size instead."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        digits = len(str(abs(value) >> (value.bit_length() - 200))) + int((value.bit_length() - 200) * 0.30103)
        return f"{'-' if value < 0 else ''}a whole number of about {digits:,} digits"
    try:
        text = repr(value)
    except ValueError:  # a container holding such an integer
        text = f"<{type(value).__name__} holding a number too long to print>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
