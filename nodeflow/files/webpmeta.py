"""Workflows inside WebP images (still or animated): the text ComfyUI keeps in EXIF.

ComfyUI's WebP savers cannot write PNG-style text chunks, so they put each document in
an EXIF ASCII tag of the first image directory as ``"<key>:<json>"``: ``prompt`` in tag
0x0110 (Model), ``workflow`` in 0x010F (Make), further keys in the tags below that.
:func:`read_exif_texts` gives them back as ``{key: text}``, the same shape as
:func:`nodeflow.files.pngmeta.read_text_chunks`, so the importers treat both alike.

As for PNGs, pixels are never decoded and the file is not trusted: the RIFF chunk walk
is bounded by the data present and the EXIF block by :data:`MAX_EXIF_BYTES`; only the
EXIF block itself is handed to Pillow's EXIF parser.
"""

from __future__ import annotations

import struct

from nodeflow.files.pngmeta import PngMetadataError

MAX_EXIF_BYTES = 64 * 1024 * 1024


class WebpMetadataError(PngMetadataError):
    """A WebP whose metadata cannot be read; the message says why."""


def is_webp(data: bytes) -> bool:
    return len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP"


def exif_block(data: bytes) -> bytes | None:
    """The payload of the WebP's EXIF chunk (TIFF header first), or None without one."""
    if not is_webp(data):
        raise WebpMetadataError("not a WebP image (the RIFF/WEBP header is missing)")
    offset = 12
    while offset + 8 <= len(data):
        kind = data[offset: offset + 4]
        (length,) = struct.unpack_from("<I", data, offset + 4)
        body = data[offset + 8: offset + 8 + length]
        if len(body) < length:
            raise WebpMetadataError(f"the WebP is truncated: chunk {kind!r} at byte {offset} claims {length} bytes")
        if kind == b"EXIF":
            if length > MAX_EXIF_BYTES:
                raise WebpMetadataError(f"the WebP's EXIF block is larger than {MAX_EXIF_BYTES // (1024 * 1024)} MB")
            return body[6:] if body.startswith(b"Exif\x00\x00") else body
        offset += 8 + length + (length & 1)  # chunks are padded to an even length
    return None


def read_exif_texts(data: bytes) -> dict[str, str]:
    """``{key: text}`` of every ``"key:text"`` ASCII tag in the WebP's first EXIF directory."""
    block = exif_block(data)
    if not block:
        return {}
    from PIL import Image

    exif = Image.Exif()
    try:
        exif.load(block)
        entries = dict(exif)
    except Exception as exc:  # Pillow raises many kinds on a malformed block
        raise WebpMetadataError(f"the WebP's EXIF block is malformed ({exc})") from None
    texts: dict[str, str] = {}
    for tag in sorted(entries, reverse=True):  # 0x0110 (prompt) first, then 0x010F (workflow), ...
        value = entries[tag]
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str):
            key, sep, text = value.rstrip("\x00").partition(":")
            if sep and key and " " not in key:
                texts.setdefault(key, text)
    return texts
