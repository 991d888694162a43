"""Model files named by content, so a sweep on other machines uses the very same weights.

A run's signatures stamp model files by size and modification time (cheap, and right on
one machine); across machines a copy has another time. The manifest therefore names each
model file the sweep reads (every ``FileChoice`` field of a planned node, resolved in the
host's folders as the nodes resolve it) by its size and a fast digest: BLAKE2b of the
size and of 1 MiB at the start, middle and end of each file (of a folder: of each file
in it, with its relative name). A worker checks the hashes before running a point and
fails it, naming the file and the hash, when its own copy differs or is missing.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

from nodeflow.host.filestamp import stamp
from nodeflow.host.paths import PathRefused, resolve_inside
from nodeflow.model.context import RunSettings
from nodeflow.model.fields import FileChoice
from nodeflow.model.graph import Graph

SAMPLE = 1 << 20  # bytes read at each of three places of a file
_known: dict[tuple[str, str], tuple[int, str]] = {}  # (path, its stamp) -> hash: read once per process


@dataclass(frozen=True)
class ModelFile:
    node_id: str
    node_type: str
    field: str
    value: str  # as the workflow names it
    size: int
    digest: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelFile":
        return cls(**{k: data[k] for k in ("node_id", "node_type", "field", "value", "size", "digest")})

    @property
    def hash(self) -> str:
        return f"{self.size}:{self.digest}"


def find_model(value: str, kind: str, settings: RunSettings) -> Path | None:
    """The file or folder a ``FileChoice`` value names, found as the loaders find it."""
    named = settings.model_names.get(kind, {})
    if value in named:
        return named[value]
    try:
        return resolve_inside(value, settings.folders(kind), settings.trusted_paths)
    except PathRefused:
        return None


def model_files(graph: Graph, node_ids: Iterable[str], settings: RunSettings) -> list[ModelFile]:
    """The model files the nodes ``node_ids`` of ``graph`` name, with their content hashes."""
    found = []
    for node_id in dict.fromkeys(node_ids):
        cls = graph.node_class(node_id)
        if cls is None:
            continue
        node = graph.nodes[node_id]
        for name, declared in cls.widgets().items():
            if not isinstance(declared, FileChoice) or graph.link_into(node_id, name) is not None:
                continue
            value = node.values.get(name, declared.default)
            path = find_model(value, declared.folder, settings) if isinstance(value, str) and value else None
            if path is not None:
                size, digest = content_hash(path)
                found.append(ModelFile(node_id, cls.type, name, value, size, digest))
    return found


def check_models(expected: Iterable[ModelFile], graph: Graph, settings: RunSettings) -> str | None:
    """None when this host has every expected model file by its hash, else what is wrong."""
    for model in expected:
        cls = graph.node_class(model.node_id)
        declared = cls.widgets().get(model.field) if cls is not None else None
        kind = declared.folder if isinstance(declared, FileChoice) else ""
        path = find_model(model.value, kind, settings)
        where = f"node {model.node_id} ({model.node_type}) field {model.field!r}"
        if path is None:
            return f"{where}: model file {model.value!r} (hash {model.hash}) is not on this worker"
        size, digest = content_hash(path)
        if (size, digest) != (model.size, model.digest):
            return (f"{where}: model file {model.value!r} at {path} has hash {size}:{digest}, "
                    f"not the sweep's {model.hash}")
    return None


def content_hash(path: str | os.PathLike[str]) -> tuple[int, str]:
    """(total size, fast digest) of a file or of every file in a folder."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    total = 0
    digest = hashlib.blake2b(digest_size=16)
    for file in files:
        size, part = _file_hash(file)
        total += size
        name = "" if file == path else file.relative_to(path).as_posix()
        digest.update(f"{name}\0{size}\0{part}\n".encode())
    return total, digest.hexdigest()


def _file_hash(file: Path) -> tuple[int, str]:
    info = file.stat()
    key = (str(file), stamp(file))
    known = _known.get(key)
    if known is None:
        digest = hashlib.blake2b(str(info.st_size).encode(), digest_size=16)
        with open(file, "rb") as handle:
            for offset in sorted({0, max(0, info.st_size // 2 - SAMPLE // 2), max(0, info.st_size - SAMPLE)}):
                handle.seek(offset)
                digest.update(handle.read(SAMPLE))
        known = _known[key] = (info.st_size, digest.hexdigest())
    return known
