"""The one front door for opening a workflow, whatever carries it.

A path, bytes or parsed JSON may hold nodeflow's own document, another tool's (e.g. a
ComfyUI workflow, converted by the importer of the pack that knows its nodes; see
:mod:`nodeflow.files.importers`), or an image (PNG, or WebP with the texts in EXIF)
whose metadata carries either. Every host
(CLI, API, editor, server) opens files here, so every one of them gets the same limits
and the same errors. The flow runs one way: this module reads images and dispatches,
:mod:`~nodeflow.files.importers` converts foreign documents, and
:mod:`~nodeflow.files.workflow` reads native ones; neither of those imports this.
"""

from __future__ import annotations

import os
from typing import Any

from nodeflow.files.importers import convert_foreign, importers
from nodeflow.files.pngmeta import PNG_SIGNATURE, WORKFLOW_KEY, PngMetadataError, read_text_chunks
from nodeflow.files.webpmeta import is_webp, read_exif_texts
from nodeflow.files.workflow import (
    MAX_FILE_BYTES,
    Workflow,
    WorkflowError,
    check_limits,
    is_native,
    native_workflow,
    read_document,
    save_workflow,
)
from nodeflow.model.registry import NodeRegistry


def load_workflow(path: str | os.PathLike[str], registry: NodeRegistry) -> Workflow:
    """Read a workflow file (native, foreign or an image). Raises FileNotFoundError when
    there is no such file, and WorkflowError for anything else that stops it loading."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise
    except OSError as exc:  # a folder, no permission, an I/O error
        raise WorkflowError(f"cannot read the file: {exc.strerror or exc}") from None
    return workflow_from_json(data, registry)


def workflow_from_json(text: str | bytes, registry: NodeRegistry) -> Workflow:
    """A workflow from a file's bytes or text (e.g. from the clipboard); bytes may be an image."""
    if isinstance(text, bytes) and (text.startswith(PNG_SIGNATURE[:4]) or text[:4] == b"RIFF"):  # even a torn one
        return _from_image(text, registry)
    return workflow_from_dict(read_document(text), registry, owned=True)


def workflow_from_dict(data: Any, registry: NodeRegistry, owned: bool = False) -> Workflow:
    """A workflow from parsed JSON, native or foreign; ``data`` is not modified unless ``owned``."""
    if is_native(data):
        return native_workflow(data, registry, owned)
    check_limits(data)  # another tool's document gets the same limits as ours, before conversion
    return native_workflow(convert_foreign(data, registry), registry, owned=True)


def image_texts(data: bytes) -> dict[str, str]:
    """The keyword -> text metadata of a PNG (its text chunks) or a WebP, still or
    animated (its EXIF "key:text" tags, :mod:`nodeflow.files.webpmeta`)."""
    if data[:4] == b"RIFF":
        if not is_webp(data):
            raise PngMetadataError("a RIFF file that is not a WebP image")
        return read_exif_texts(data)
    return read_text_chunks(data)


def _from_image(data: bytes, registry: NodeRegistry) -> Workflow:
    """The workflow an image carries: nodeflow's own chunk, else one an importer reads."""
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
    """``nodeflow import``: read ``source`` (anything :func:`load_workflow` reads, e.g. a
    ComfyUI JSON file or PNG) and write it to ``target`` as a native workflow file."""
    workflow = load_workflow(source, registry)
    save_workflow(target, workflow.graph, workflow.ui, workflow.meta)
    return workflow
