"""Workflows from elsewhere: converters of other tools' formats.

The front door (:mod:`nodeflow.files.open`) hands over what is not a native document: a
JSON object without ``"format"`` (the importer that recognises it converts it), and the
text chunks of an image that carries no nodeflow workflow (an importer that knows one
of them, e.g. ComfyUI's ``workflow`` / ``prompt``, converts it).

Importers come from node packs, since only a pack knows how another tool's nodes map to
its own: a pack lists them in its :class:`~nodeflow.model.pack.Pack` (``importers=``);
a script may call :func:`register_importer`. An importer is data in, data out: it
returns a native workflow dict and never runs code the document names.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

from nodeflow.files.workflow import WorkflowError
from nodeflow.model.registry import NodeRegistry, default_registry


class Importer(Protocol):
    """Converts one foreign format to a native workflow document."""

    name: str  # e.g. "ComfyUI"
    png_keys: Sequence[str]  # PNG text chunk keywords holding its documents, preferred first

    def sniff(self, data: Any) -> str | None:
        """A description of the format (e.g. "ComfyUI API format") if ``data`` (parsed
        JSON) is one this importer reads, else None. Must not raise."""

    def convert(self, data: Any, registry: NodeRegistry) -> dict[str, Any]:
        """The native workflow dict for ``data``; raises WorkflowError naming every
        part it cannot convert."""


_registered: list[Importer] = []


def register_importer(importer: Importer) -> None:
    """Make ``importer`` available to every load in this process."""
    if importer not in _registered:
        _registered.append(importer)


def importers(registry: NodeRegistry) -> list[Importer]:
    """Importers registered by scripts, then those of the registry's packs, then those of
    every other installed pack: a registry without the pack whose nodes a file needs still
    recognises the file, and says which nodes are missing rather than "not a workflow"."""
    found: list[Importer] = []
    for importer in [*_registered, *registry.importers(), *default_registry().importers()]:
        if importer not in found:
            found.append(importer)
    return found


# ----------------------------------------------------------------------------- loading
def convert_foreign(data: Any, registry: NodeRegistry) -> dict[str, Any]:
    """The native document for parsed JSON ``data`` that has no ``"format"`` key."""
    for importer in importers(registry):
        described = importer.sniff(data)
        if described:
            converted = importer.convert(data, registry)
            meta = converted.setdefault("meta", {})
            meta.setdefault("imported_from", described)
            return converted
    raise WorkflowError("not a nodeflow workflow: the 'format' key is missing (expected 'nodeflow.workflow')")
