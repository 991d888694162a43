"""The CLIP byte-level BPE tokenizer, built offline from the vocabulary shipped in configs/.

Every Stable Diffusion text encoder (OpenAI CLIP-L, OpenCLIP-H, OpenCLIP-bigG) uses the
same 49408-token vocabulary; only the padding token differs. Single-file checkpoints
carry no tokenizer, so the merges ship with the project (gzipped, ~200 KB) and the
vocabulary is derived from them exactly as CLIP derives it.
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path
from typing import Any

MERGES_FILE = Path(__file__).parents[1] / "configs" / "clip_bpe_merges.txt.gz"
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 77

# Padding: SD 1.x (OpenAI CLIP) pads with the end token; OpenCLIP encoders (SD 2.x,
# SDXL's second encoder) pad with token id 0, which is "!".
PAD_END = EOS
PAD_ZERO = "!"


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for raw bytes, in CLIP's order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


@lru_cache(maxsize=1)
def vocabulary() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """(token -> id, merges) of the CLIP BPE."""
    lines = gzip.decompress(MERGES_FILE.read_bytes()).decode("utf-8").splitlines()
    merges = tuple(tuple(line.split(" ")) for line in lines)
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + [a + b for a, b in merges] + [BOS, EOS]
    return {token: i for i, token in enumerate(tokens)}, merges


def clip_tokenizer(pad_token: str = PAD_END) -> Any:
    """A transformers ``CLIPTokenizer`` equal to the ones shipped with SD models."""
    from transformers import CLIPTokenizer

    vocab, merges = vocabulary()
    return CLIPTokenizer(
        vocab=dict(vocab),
        merges=list(merges),
        pad_token=pad_token,
        model_max_length=MAX_LENGTH,
    )
