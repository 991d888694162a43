"""Workflows inside PNG images: text chunks written with a saved image, read back to reopen it.

A saved image carries two text chunks: ``nodeflow`` holds the whole workflow document
(compressed UTF-8 JSON), so opening the image restores the graph exactly, and
``parameters`` holds a short human-readable summary (prompt, seed, steps...) in the
layout image viewers already show. Other tools use other keywords (ComfyUI: ``prompt``
and ``workflow``); :mod:`nodeflow.files.importers` decides what to do with them.

Reading never decodes pixels and never trusts the file: chunk lengths are bounded by
the data actually present, compressed text is inflated only up to a limit (a zip bomb
stops there), and anything malformed raises :class:`PngMetadataError` with a message
saying what. Pillow is used only for writing, and only inside :func:`png_info`.
"""

from __future__ import annotations

import struct
import zlib
from collections import deque
from typing import Any, Iterator, Mapping

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
WORKFLOW_KEY = "nodeflow"
PARAMETERS_KEY = "parameters"

MAX_TEXT_BYTES = 50 * 1024 * 1024  # per chunk, after decompression (the workflow file limit)
MAX_TOTAL_TEXT_BYTES = 100 * 1024 * 1024
_TEXT_TYPES = (b"tEXt", b"zTXt", b"iTXt")


class PngMetadataError(ValueError):
    """A PNG whose metadata cannot be read; the message says why."""


def is_png(data: bytes) -> bool:
    return data[:8] == PNG_SIGNATURE


def read_text_chunks(data: bytes, max_text_bytes: int = MAX_TEXT_BYTES) -> dict[str, str]:
    """Every text chunk of the PNG in ``data``: keyword -> text (the first chunk wins
    when a keyword repeats). Chunks with a bad checksum are skipped, as viewers do."""
    if not is_png(data):
        raise PngMetadataError("not a PNG image (the PNG signature is missing)")
    texts: dict[str, str] = {}
    total = 0
    for kind, body in _chunks(data):
        if kind not in _TEXT_TYPES:
            continue
        keyword, text = _decode_text(kind, body, max_text_bytes)
        total += len(text)
        if total > MAX_TOTAL_TEXT_BYTES:
            raise PngMetadataError(f"the image's text chunks exceed {MAX_TOTAL_TEXT_BYTES // (1024 * 1024)} MB")
        texts.setdefault(keyword, text)
    return texts


def _chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(type, data) of each chunk with a correct CRC, up to IEND."""
    offset = len(PNG_SIGNATURE)
    while True:
        if offset + 8 > len(data):
            raise PngMetadataError(f"the PNG is truncated (a chunk header at byte {offset} is incomplete)")
        (length,) = struct.unpack_from(">I", data, offset)
        kind = data[offset + 4 : offset + 8]
        end = offset + 8 + length
        if end + 4 > len(data):
            raise PngMetadataError(
                f"the PNG is truncated or corrupt: chunk {kind!r} at byte {offset} claims {length} bytes"
            )
        body = data[offset + 8 : end]
        (crc,) = struct.unpack_from(">I", data, end)
        if zlib.crc32(kind + body) == crc:
            yield kind, body
        if kind == b"IEND":
            return
        offset = end + 4


def _decode_text(kind: bytes, body: bytes, limit: int) -> tuple[str, str]:
    keyword_bytes, sep, rest = body.partition(b"\x00")
    if not sep or not 1 <= len(keyword_bytes) <= 79:
        raise PngMetadataError(f"a {kind.decode()} chunk has no valid keyword")
    keyword = keyword_bytes.decode("latin-1")
    if kind == b"tEXt":
        return keyword, _limited(rest, limit, keyword).decode("latin-1")
    if kind == b"zTXt":
        if not rest or rest[0] != 0:
            raise PngMetadataError(f"text chunk {keyword!r} uses an unknown compression method")
        return keyword, _inflate(rest[1:], limit, keyword).decode("latin-1")
    # iTXt: compression flag, method, language tag \0, translated keyword \0, UTF-8 text
    if len(rest) < 2:
        raise PngMetadataError(f"text chunk {keyword!r} is truncated")
    compressed, method = rest[0], rest[1]
    _language, sep1, rest = rest[2:].partition(b"\x00")
    _translated, sep2, text = rest.partition(b"\x00")
    if not (sep1 and sep2):
        raise PngMetadataError(f"text chunk {keyword!r} is truncated")
    if compressed:
        if method != 0:
            raise PngMetadataError(f"text chunk {keyword!r} uses an unknown compression method")
        text = _inflate(text, limit, keyword)
    try:
        return keyword, _limited(text, limit, keyword).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PngMetadataError(f"text chunk {keyword!r} is not UTF-8 (bad byte at offset {exc.start})") from None


def _inflate(data: bytes, limit: int, keyword: str) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise PngMetadataError(f"text chunk {keyword!r} is corrupt ({exc})") from None
    _limited(out, limit, keyword)
    if not inflater.eof:
        raise PngMetadataError(f"text chunk {keyword!r} is truncated")
    return out


def _limited(data: bytes, limit: int, keyword: str) -> bytes:
    if len(data) > limit:
        raise PngMetadataError(f"text chunk {keyword!r} is larger than the limit of {limit // (1024 * 1024)} MB")
    return data


# ----------------------------------------------------------------------------- writing
def png_info(texts: Mapping[str, str]) -> Any:
    """A Pillow ``PngInfo`` holding ``texts`` (keyword -> text): Latin-1 text that is short
    goes in plain tEXt chunks (what every viewer shows), the rest in UTF-8 iTXt chunks,
    compressed unless Pillow would refuse to inflate it (over ``MAX_TEXT_CHUNK``, 1 MB),
    so that the image still opens everywhere."""
    from PIL.PngImagePlugin import MAX_TEXT_CHUNK, PngInfo

    info = PngInfo()
    for keyword, text in texts.items():
        if len(text) < 4096 and _is_latin1(text):
            info.add_text(keyword, text)
        else:
            info.add_itxt(keyword, text, zip=len(text.encode("utf-8")) <= MAX_TEXT_CHUNK)
    return info


def _is_latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


# ------------------------------------------------------------------ reading a document
class DocumentView:
    """Read-only queries over a native workflow document (the dict a PNG carries), for
    summaries written next to an image: which node feeds an input, what lies upstream."""

    def __init__(self, document: Mapping[str, Any]):
        nodes = document.get("nodes")
        nodes = nodes if isinstance(nodes, list) else []
        self.nodes: dict[str, Mapping[str, Any]] = {
            n["id"]: n for n in nodes if isinstance(n, Mapping) and isinstance(n.get("id"), str)
        }
        self._sources: dict[tuple[str, str], str] = {}
        links = document.get("links")
        for link in links if isinstance(links, list) else []:
            try:
                self._sources[(link["to"]["node"], link["to"]["input"])] = link["from"]["node"]
            except (KeyError, TypeError):
                continue

    def source(self, node_id: str, input_name: str) -> Mapping[str, Any] | None:
        """The node linked into ``node_id.input_name``, if any."""
        return self.nodes.get(self._sources.get((node_id, input_name), ""))

    def upstream(self, node_id: str) -> Iterator[Mapping[str, Any]]:
        """``node_id`` and every node it depends on, nearest first (breadth-first)."""
        inputs: dict[str, list[str]] = {}
        for (target, _), source in self._sources.items():
            inputs.setdefault(target, []).append(source)
        seen, queue = {node_id}, deque([node_id])
        while queue:
            current = queue.popleft()
            if current in self.nodes:
                yield self.nodes[current]
            for source in sorted(inputs.get(current, ())):
                if source not in seen:
                    seen.add(source)
                    queue.append(source)

    def first_upstream(self, node_id: str, types: tuple[str, ...]) -> Mapping[str, Any] | None:
        return next((n for n in self.upstream(node_id) if n.get("type") in types), None)
