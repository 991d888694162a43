"""What stops a graph from running, and where: :class:`Problem` and its codes.

Found by validation before a run, by the loader while reading a file, and by the
executor when a plan cannot be built; shown by the CLI (text or ``--json``), the
editor's markers and the API alike. A problem names the node, its type and the field,
so every host can point at the right socket.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, Iterable

from nodeflow.model.errors import NodeflowError


class ProblemCode(StrEnum):
    """Why a graph cannot run (a ``str``: JSON output shows the value)."""

    UNKNOWN_NODE_TYPE = "unknown_node_type"  # the node's type is not installed
    MISSING_INPUT = "missing_input"  # a required socket has no link (or its link brings nothing)
    TYPE_MISMATCH = "type_mismatch"  # a link's data types do not fit, or it names a port the node lacks
    INVALID_VALUE = "invalid_value"  # a value the widget refuses, an unknown field or mode
    CYCLE = "cycle"  # the links form a loop (the message names its nodes)
    NO_OUTPUT_NODE = "no_output_node"  # nothing would be run (or a requested output does not exist)
    MISSING_FILE = "missing_file"  # a file a node names is not in any folder searched
    INVALID_GRAPH = "invalid_graph"  # the plan could not be built although validation passed
    OVER_MEMORY_BUDGET = "over_memory_budget"  # the plan's estimated peak memory cannot fit the device
    # Found while loading a file (see nodeflow.files.workflow).
    DANGLING_LINK = "dangling_link"
    NEWER_NODE_VERSION = "newer_node_version"
    MIGRATION_FAILED = "migration_failed"


@dataclass(frozen=True)
class Problem:
    """One reason a graph cannot run. ``message`` says what, the other fields say where."""

    code: ProblemCode
    message: str
    node_id: str | None = None
    node_type: str | None = None
    field: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {key: (str(value) if key == "code" else value) for key, value in asdict(self).items()}

    def __str__(self) -> str:
        where = []
        if self.node_id is not None:
            where.append(f"node {self.node_id}" + (f" ({self.node_type})" if self.node_type else ""))
        if self.field is not None:
            where.append(f'field "{self.field}"')
        return f"{' '.join(where)}: {self.message}" if where else self.message


class ValidationError(NodeflowError):
    """Raised by :func:`nodeflow.model.validation.check` when a graph is not runnable."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"the workflow cannot run, {len(self.problems)} problem(s):\n{lines}")


def node_order_key(node_id: str) -> tuple[int, int, str]:
    """Sort key for node ids: "2" before "10", numeric ids before others. Compares
    digit strings by length, then text, so a 5,000-digit id costs no int conversion."""
    digits = node_id.isascii() and node_id.isdigit()
    stripped = node_id.lstrip("0") or "0"
    return (0, len(stripped), stripped + "\0" + node_id) if digits else (1, 0, node_id)
