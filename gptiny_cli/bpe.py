"""Byte-level BPE: the tokenizer beside characters, trained and applied by Hugging Face ``tokenizers``.

A byte-level BPE starts from the 256 bytes, so every text encodes, and learns merges of the most
frequent neighbouring pieces until it has ``vocab_size`` tokens. Text is first cut into words the
way GPT-2 cuts it (a leading space belongs to the word after it; runs of letters, digits,
punctuation and whitespace apart), and merges never cross those cuts. Each token stands for a
run of bytes, which need not be whole UTF-8 characters: decoding goes through bytes, and a
stream of tokens becomes text through ``data.TextStream``, which holds back half a character.

``tokenizers`` is an optional extra (``pip install 'gptiny[bpe]'``), imported only here. The
tokenizer is saved as the ``tokenizer.json`` that ``tokenizers`` and ``transformers`` read.
This module imports nothing else of ours but ``errors``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path

from gptiny_cli.errors import GptinyError

FILENAME = "tokenizer.json"
MIN_VOCAB = 256  # the bytes themselves


def _library():
    try:
        import tokenizers
    except ImportError:
        raise GptinyError("BPE needs the tokenizers package, an optional extra: pip install 'gptiny[bpe]'") from None
    return tokenizers


def byte_symbols() -> dict[str, int]:
    """The printable stand-in of each byte in a byte-level vocabulary, as GPT-2 chose them.

    Printable Latin-1 bytes stand for themselves; the other 68 (controls, space, and a few) are
    moved up to U+0100 onwards, in byte order, so that no token's text holds a space or a control.
    """
    kept = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    moved = [b for b in range(256) if b not in kept]
    symbols = {chr(b): b for b in kept}
    symbols.update({chr(256 + i): b for i, b in enumerate(moved)})
    return symbols


class BpeVocab:
    """A trained byte-level BPE: the same questions as ``data.Vocab`` answers, for pieces of bytes."""

    kind = "bpe"
    filename = FILENAME

    def __init__(self, tokenizer) -> None:
        self._tokenizer = tokenizer

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> BpeVocab:
        """Learn merges from ``texts`` (any iterable of strings, read once) up to ``vocab_size`` tokens."""
        if vocab_size < MIN_VOCAB:
            raise GptinyError(f"--vocab-size {vocab_size} is too small for byte-level BPE: "
                              f"it needs at least {MIN_VOCAB} (the bytes)")
        if vocab_size > 2**16:
            raise GptinyError(f"--vocab-size {vocab_size} is too large: token files hold up to 65,536 ids")
        lib = _library()
        tokenizer = lib.Tokenizer(lib.models.BPE())
        tokenizer.pre_tokenizer = lib.pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = lib.decoders.ByteLevel()
        trainer = lib.trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False, special_tokens=[],
                                          initial_alphabet=lib.pre_tokenizers.ByteLevel.alphabet())
        tokenizer.train_from_iterator(texts, trainer)
        return cls(tokenizer)

    @classmethod
    def from_json(cls, text: str, where: str) -> BpeVocab:
        lib = _library()
        try:
            raw = json.loads(text)
            tokenizer = lib.Tokenizer.from_str(text)
        except Exception:  # tokenizers raises a plain Exception on a malformed file
            raise GptinyError(f"{where} is not a tokenizer.json that tokenizers can read") from None
        if raw.get("model", {}).get("type") != "BPE" or (raw.get("pre_tokenizer") or {}).get("type") != "ByteLevel":
            raise GptinyError(f"{where} is not a byte-level BPE tokenizer (gptiny prepare --tokenizer bpe writes one)")
        return cls(tokenizer)

    @classmethod
    def load(cls, path: Path) -> BpeVocab:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise GptinyError(f"tokenizer not found: {path}") from None
        return cls.from_json(text, str(path))

    def serialized(self) -> str:
        return self._tokenizer.to_str(pretty=True)

    def identity(self) -> dict:
        """What fixes the meaning of every id (for fingerprints): the tokens and the merges."""
        model = json.loads(self._tokenizer.to_str())["model"]
        return {"tokenizer": "bpe", "vocab": model["vocab"], "merges": model["merges"]}

    @property
    def size(self) -> int:
        return self._tokenizer.get_vocab_size()

    @cached_property
    def token_bytes(self) -> tuple[bytes, ...]:
        """The bytes each id stands for."""
        symbols = byte_symbols()
        by_id = sorted((i, text) for text, i in self._tokenizer.get_vocab().items())
        return tuple(bytes(symbols[ch] for ch in text) for _, text in by_id)

    @cached_property
    def pieces(self) -> tuple[str, ...]:
        """How each token is shown: its text, with bytes that are not whole characters as ``\\xNN``."""
        return tuple(b.decode("utf-8", errors="backslashreplace") for b in self.token_bytes)

    @property
    def start_token(self) -> int:
        """What an empty prompt starts from: the newline byte, as a text starts a line."""
        return self.token_bytes.index(b"\n")

    def unknown(self, text: str) -> list[str]:
        """Characters that cannot be encoded: none, as every character is made of bytes."""
        return []

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tokenizer.encode_batch(texts)]

    def decode(self, tokens: Iterable[int]) -> str:
        return b"".join(self.token_bytes[t] for t in tokens).decode("utf-8", errors="replace")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BpeVocab) and self.identity() == other.identity()

    __hash__ = None
