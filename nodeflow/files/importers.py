"""Workflows from elsewhere: other tools' formats and images that carry a workflow.

:func:`nodeflow.files.workflow.load_workflow` hands over what is not a native document:

- a PNG or WebP image (a WebP's texts are EXIF tags, :mod:`nodeflow.files.webpmeta`): its ``nodeflow`` text chunk is the workflow itself; failing that, an
  importer that knows one of its chunks (e.g. ComfyUI's ``workflow`` / ``prompt``)
  converts it;
- a JSON object without ``"format"``: the importer that recognises it converts it.

Importers come from node packs, since only a pack knows how another tool's nodes map to
its own: a pack lists them in its :class:`~nodeflow.model.pack.Pack` (``importers=``);
a script may call :func:`register_importer`. An importer is data in, data out: it
returns a native workflow dict and never runs code the document names.
"""

from __future__ import annotations

import os
from typing import Any, Protocol, Sequence

from nodeflow.files.pngmeta import WORKFLOW_KEY, PngMetadataError, read_text_chunks
from nodeflow.files.webpmeta import is_webp, read_exif_texts
from nodeflow.model.registry import NodeRegistry, default_registry
from nodeflow.files.workflow import Workflow, WorkflowError, save_workflow, workflow_from_json

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


def image_texts(data: bytes) -> dict[str, str]:
    """The keyword -> text metadata of a PNG (text chunks) or a WebP (EXIF "key:text" tags)."""
    if is_webp(data):
        return read_exif_texts(data)
    if data[:4] == b"RIFF":
        raise PngMetadataError("a RIFF file that is not a WebP image")
    return read_text_chunks(data)


def workflow_from_image(data: bytes, registry: NodeRegistry) -> Workflow:
    """The workflow an image (PNG or WebP, still or animated) carries: nodeflow's own
    chunk, else one an importer reads."""
    try:
        texts = image_texts(data)
    except PngMetadataError as exc:
        raise WorkflowError(f"cannot read the image's metadata: {exc}") from None
    if WORKFLOW_KEY in texts:
        return workflow_from_json(texts[WORKFLOW_KEY], registry)
    first_error: WorkflowError | None = None
    for importer in importers(registry):
        for key in importer.png_keys:
            if key not in texts:
                continue
            try:  # the same checks as a file: limits, duplicate keys, then the importer
                workflow = workflow_from_json(texts[key], registry)
            except WorkflowError as exc:  # e.g. a "workflow" with editor-only custom nodes: try "prompt"
                first_error = first_error or WorkflowError(f"the image's {key!r} metadata: {exc}")
                continue
            if first_error is not None:  # say why the preferred chunk (with positions) was not used
                workflow.meta.setdefault("import_note", str(first_error))
            return workflow
    if first_error is not None:
        raise first_error
    known = ", ".join(sorted(texts)) or "none"
    raise WorkflowError(f"the image carries no workflow (its text chunks: {known})")




def convert_file(source: str | os.PathLike[str], target: str | os.PathLike[str], registry: NodeRegistry) -> Workflow:
    """``nodeflow import``: read ``source`` (any format load_workflow reads, e.g. a ComfyUI
    JSON file or PNG) and write it to ``target`` as a native workflow file."""
    from nodeflow.files.workflow import load_workflow

    workflow = load_workflow(source, registry)
    save_workflow(target, workflow.graph, workflow.ui, workflow.meta)
    return workflow

