"""The one family of nodeflow's own errors.

Every error nodeflow raises on purpose derives from :class:`NodeflowError`, so a host
can tell "nodeflow refused this input, with a message for the user" from a bug
(``except NodeflowError`` prints the message; anything else is a traceback worth a
report). Each subclass keeps ``ValueError`` as a second base where it had it, so
callers that caught ``ValueError`` keep working.
"""


class NodeflowError(Exception):
    """An error whose message is written for the user."""

