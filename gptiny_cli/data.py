"""The corpus: a character vocabulary, the prepared token files, and batches drawn from them.

A data directory (written by ``gptiny prepare``, see ``prepare/``) holds:
    vocab.json   the sorted characters of the corpus, or, with ``--tokenizer bpe``,
    tokenizer.json  a byte-level BPE (``bpe.py``)
    train.bin    training tokens, little-endian unsigned integers
    val.bin      validation tokens, the last ``val_fraction`` of the corpus
    meta.json    sizes, token dtype and sha256; also its sources and baselines (older ones lack them)
Training memory-maps the .bin files instead of reading them into Python lists.
"""

from __future__ import annotations

import codecs
import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from gptiny_cli.bpe import FILENAME as BPE_FILENAME
from gptiny_cli.bpe import BpeVocab
from gptiny_cli.errors import GptinyError

# Token files are always little-endian so a data directory travels between machines.
_TOKEN_DTYPES = {"uint16": (torch.uint16, 2), "int32": (torch.int32, 4)}


@dataclass(frozen=True)
class Vocab:
    """A character-level tokenizer: token i is the i-th character in sorted order."""

    kind = "char"
    filename = "vocab.json"
    chars: tuple[str, ...]

    @classmethod
    def from_text(cls, text: str) -> Vocab:
        return cls(tuple(sorted(set(text))))

    @property
    def size(self) -> int:
        return len(self.chars)

    @property
    def pieces(self) -> tuple[str, ...]:
        """How each token is shown: its character."""
        return self.chars

    @cached_property
    def token_bytes(self) -> tuple[bytes, ...]:
        return tuple(ch.encode("utf-8") for ch in self.chars)

    @property
    def start_token(self) -> int:
        """What an empty prompt starts from: the newline, as a text starts a line, else token 0."""
        return self.chars.index("\n") if "\n" in self.chars else 0

    def unknown(self, text: str) -> list[str]:
        """Characters of ``text`` that the vocabulary lacks, each once, in order of appearance."""
        known = set(self.chars)
        return list(dict.fromkeys(ch for ch in text if ch not in known))

    def encode(self, text: str) -> list[int]:
        index = {ch: i for i, ch in enumerate(self.chars)}
        missing = self.unknown(text)
        if missing:
            raise GptinyError(f"characters not in the vocabulary: {''.join(missing)!r}")
        return [index[ch] for ch in text]

    def decode(self, tokens: list[int]) -> str:
        return "".join(self.chars[t] for t in tokens)

    def to_json(self) -> dict:
        return {"chars": list(self.chars)}

    def serialized(self) -> str:
        return json.dumps(self.to_json(), ensure_ascii=False, indent=2) + "\n"

    def identity(self) -> list[str]:
        """What fixes the meaning of every id (for fingerprints): the characters in order."""
        return list(self.chars)

    @classmethod
    def load(cls, path: Path) -> Vocab:
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
            chars = raw["chars"]
        except FileNotFoundError:
            raise GptinyError(f"vocabulary not found: {path}") from None
        except (ValueError, KeyError, TypeError):
            raise GptinyError(f"{path} is not a gptiny vocabulary (expected {{\"chars\": [...]}})") from None
        if not all(isinstance(c, str) and len(c) == 1 for c in chars) or len(set(chars)) != len(chars):
            raise GptinyError(f"{path}: 'chars' must list distinct single characters")
        return cls(tuple(chars))


Tokenizer = Vocab | BpeVocab


def load_vocab(directory: Path) -> Tokenizer:
    """The tokenizer of a data or run directory: its tokenizer.json (BPE) or its vocab.json (characters)."""
    directory = Path(directory)
    if (directory / BPE_FILENAME).is_file():
        return BpeVocab.load(directory / BPE_FILENAME)
    return Vocab.load(directory / "vocab.json")


class TextStream:
    """Token ids in, text out, holding back the bytes of a character that is not complete yet.

    A BPE token may end inside a UTF-8 character (a CJK character or an emoji is 3 or 4 bytes);
    printing each token's own text would show replacement marks where the next token completes it.
    """

    def __init__(self, token_bytes: tuple[bytes, ...]) -> None:
        self._bytes = token_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token: int) -> str:
        return self._decoder.decode(self._bytes[token])

    def flush(self) -> str:
        """What is held back, at the end of a stream (an incomplete character becomes U+FFFD)."""
        return self._decoder.decode(b"", final=True)


@dataclass(frozen=True)
class TargetText:
    """How much text a split's predicted tokens (every one but the first) hold, to put a loss per
    token into bits per character and per byte, the units in which any two tokenizers compare."""

    tokens: int
    chars: int
    bytes: int

    @classmethod
    def of_counts(cls, vocab: Tokenizer, counts: list[int]) -> TargetText:
        """From how often each id is predicted; a character is a byte that does not continue one."""
        sizes = [(len(b), sum(1 for x in b if x & 0xC0 != 0x80)) for b in vocab.token_bytes]
        return cls(sum(counts), sum(n * c for n, (_, c) in zip(counts, sizes, strict=True)),
                   sum(n * b for n, (b, _) in zip(counts, sizes, strict=True)))

    @classmethod
    def of_corpus(cls, corpus: Corpus) -> TargetText:
        """The validation split's: recorded by ``gptiny prepare``, or counted (older data directories)."""
        known = corpus.meta.get("val_targets")
        if isinstance(known, dict) and {"tokens", "chars", "bytes"} <= known.keys():
            return cls(int(known["tokens"]), int(known["chars"]), int(known["bytes"]))
        counts = torch.zeros(corpus.vocab.size, dtype=torch.int64)
        for start in range(1, len(corpus.val), 1 << 22):
            counts += torch.bincount(corpus.val[start : start + (1 << 22)].long(), minlength=corpus.vocab.size)
        return cls.of_counts(corpus.vocab, counts.tolist())

    def to_json(self) -> dict:
        return {"tokens": self.tokens, "chars": self.chars, "bytes": self.bytes}


def token_dtype(vocab_size: int) -> str:
    """The narrowest token file format that holds every id of a vocabulary this size."""
    return "uint16" if vocab_size <= 2**16 else "int32"


@dataclass
class Corpus:
    """A prepared data directory, its splits memory-mapped as integer tensors."""

    directory: Path
    vocab: Tokenizer
    meta: dict
    train: torch.Tensor
    val: torch.Tensor


def _map_tokens(path: Path, count: int, dtype: str) -> torch.Tensor:
    torch_dtype, width = _TOKEN_DTYPES[dtype]
    if not path.is_file() or path.stat().st_size != count * width:
        raise GptinyError(f"{path} is missing or truncated; run `gptiny prepare` again")
    return torch.from_file(str(path), shared=False, size=count, dtype=torch_dtype)


def load_corpus(directory: Path) -> Corpus:
    directory = Path(directory)
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        raise GptinyError(
            f"no prepared data at {directory} (meta.json missing); run `gptiny prepare INPUT "
            f"--out {directory}` or set data.path"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        dtype, n_train, n_val = meta["token_dtype"], int(meta["train_tokens"]), int(meta["val_tokens"])
    except (ValueError, KeyError, TypeError):
        raise GptinyError(f"{meta_path} is damaged; run `gptiny prepare` again") from None
    if dtype not in _TOKEN_DTYPES:
        raise GptinyError(f"{meta_path}: unknown token_dtype {dtype!r}")
    vocab = load_vocab(directory)
    train = _map_tokens(directory / "train.bin", n_train, dtype)
    val = _map_tokens(directory / "val.bin", n_val, dtype)
    return Corpus(directory, vocab, meta, train, val)


def step_seed(seed: int, step: int, index: int, stream: str) -> int:
    """A 64-bit seed for one ``stream`` ("batch", "dropout") of micro-batch ``index`` of a step.

    Every random draw of a training step is a function of (seed, step, micro-batch index) and
    of nothing that came before. So the micro-batch with global index g (rank × grad_accum +
    micro-step) is the same whichever process draws it: one process accumulating 2
    micro-batches trains on exactly the data two processes with 1 each do, and a resumed run,
    on any number of processes, continues with exactly the batches it would have drawn.
    """
    digest = hashlib.blake2b(f"{seed}:{step}:{index}:{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def get_windows(tokens: torch.Tensor, batch_size: int, block_size: int, generator: torch.Generator) -> torch.Tensor:
    """Random windows of ``block_size + 1`` tokens (B, T+1): inputs are [:, :-1], targets [:, 1:].

    One tensor, so that training copies one block to the GPU and slices it there.
    """
    starts = torch.randint(len(tokens) - block_size, (batch_size,), generator=generator)
    index = starts[:, None] + torch.arange(block_size + 1)  # (B, T+1)
    return tokens[index].long()


def get_batch(
    tokens: torch.Tensor, batch_size: int, block_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows of ``block_size`` tokens and the same windows shifted by one."""
    window = get_windows(tokens, batch_size, block_size, generator)
    return window[:, :-1], window[:, 1:]


def sequential_windows(tokens: torch.Tensor, batch_size: int, block_size: int):
    """Every token of a split once, as consecutive windows (for a deterministic full evaluation).

    Yields (B, T+1) windows, inputs ``[:, :-1]`` and targets ``[:, 1:]`` (so one copy to a device
    carries both); the last window is shorter when the split does not divide evenly.
    """
    n_targets = len(tokens) - 1
    starts = list(range(0, n_targets, block_size))
    full = [s for s in starts if s + block_size <= n_targets]
    for i in range(0, len(full), batch_size):
        index = torch.tensor(full[i : i + batch_size])[:, None] + torch.arange(block_size + 1)
        yield tokens[index].long()
    rest = [s for s in starts if s + block_size > n_targets]
    for start in rest:
        yield tokens[start:].long()[None, :]
