"""A word-level CLIP tokenizer for the bundled model's tiny vocabulary, built offline.

transformers' ``CLIPTokenizer`` is byte-level BPE: it splits text into words, then merges
characters by rank. Emitting, for every word, the merges that rebuild it left to right
gives a vocabulary where each known word is one token, loadable by the stock class.
"""

from __future__ import annotations

import json
from pathlib import Path

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"  # also padding and unknown, as in Stable Diffusion 1.x
MAX_LENGTH = 77  # the SD convention, so every prompt pipeline pads the same way


def _symbols(word: str) -> list[str]:
    return list(word[:-1]) + [word[-1] + "</w>"]


def _bpe(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Greedy lowest-rank merging, as the tokenizer does it."""
    while len(symbols) > 1:
        pairs = [(ranks.get(p, 1 << 30), i) for i, p in enumerate(zip(symbols, symbols[1:]))]
        rank, i = min(pairs)
        if rank == 1 << 30:
            break
        symbols = symbols[:i] + [symbols[i] + symbols[i + 1]] + symbols[i + 2 :]
    return symbols


def build_vocab(words: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and merge list in which each of ``words`` is a single token.

    New merges are appended (lowest priority), so they never change how earlier words merge.
    """
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    tokens: list[str] = []
    for word in words:
        for symbol in _symbols(word):
            if symbol not in tokens:
                tokens.append(symbol)
        while len(parts := _bpe(_symbols(word), ranks)) > 1:
            pair = (parts[0], parts[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            if pair[0] + pair[1] not in tokens:
                tokens.append(pair[0] + pair[1])
    tokens += [BOS, EOS]
    return {token: i for i, token in enumerate(tokens)}, merges


def save_tokenizer(folder: str | Path, words: list[str]) -> None:
    """Write vocab.json, merges.txt and the configs ``CLIPTokenizer.from_pretrained`` reads."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_vocab(words)
    (folder / "vocab.json").write_text(json.dumps(vocab, indent=1) + "\n")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MAX_LENGTH,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": EOS,
        "do_lower_case": True,
        "clean_up_tokenization_spaces": False,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


def load_tokenizer(folder: str | Path):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
