"""The two passes over the inputs: counting characters, then writing tokens straight to the .bin files.

The first pass (``scan``) hashes each document and counts its code points; the vocabulary is
chosen from those counts. The second (``encode``) maps each chunk through a lookup table indexed
by code point and appends the ids to ``train.bin`` or ``val.bin``, counting the pairs the
baselines need as it goes. Neither pass holds more than a chunk of text.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gptiny_cli.errors import GptinyError
from gptiny_cli.prepare.baselines import PairCounts
from gptiny_cli.prepare.sources import Source
from gptiny_cli.prepare.splits import SplitPlan
from gptiny_cli.prepare.stream import CODE_POINTS, NotUtf8, Progress, code_points, read_text_chunks

_NUMPY_DTYPES = {"uint16": np.dtype("<u2"), "int32": np.dtype("<i4")}


@dataclass(frozen=True)
class Document:
    label: str
    path: Path
    bytes: int
    sha256: str
    chars: int


def _scan_one(source: Source, counts: np.ndarray, chunk_bytes: int, on_bytes: Progress | None) -> Document:
    """Hash and count one document; its counts reach ``counts`` only once it has decoded whole."""
    digest, size, chars, top = hashlib.sha256(), 0, 0, 0
    own = np.zeros(CODE_POINTS, dtype=np.int64)
    for raw, text in read_text_chunks(source.path, chunk_bytes, on_bytes):
        digest.update(raw)
        size += len(raw)
        chars += len(text)
        if text:
            found = np.bincount(code_points(text))
            own[: len(found)] += found
            top = max(top, len(found))
    counts[:top] += own[:top]
    return Document(source.label, source.path, size, digest.hexdigest(), chars)


def scan(sources: list[Source], chunk_bytes: int, skip_bad: bool = False,
         on_bytes: Progress | None = None) -> tuple[list[Document], list[dict], np.ndarray]:
    """Every readable document, those skipped as not UTF-8 (with ``skip_bad``) and the code point counts."""
    counts = np.zeros(CODE_POINTS, dtype=np.int64)
    documents, skipped = [], []
    for source in sources:
        try:
            documents.append(_scan_one(source, counts, chunk_bytes, on_bytes))
        except NotUtf8 as bad:
            if not skip_bad:
                raise GptinyError(f"{bad}; fix or remove it, or pass --skip-bad to leave it out") from None
            skipped.append({"path": source.label, "reason": str(bad)})
        except OSError as err:
            raise GptinyError(f"cannot read {source.label}: {err.strerror}") from None
    return documents, skipped, counts


class SplitWriter:
    """Appends token ids to the train file until ``train_chars`` are written, then to the val file."""

    def __init__(self, directory: Path, plan: SplitPlan, dtype: str, vocab_size: int) -> None:
        self.dtype = _NUMPY_DTYPES[dtype]
        self.vocab_size = vocab_size
        self._left = plan.train_chars
        self._files = [open(directory / "train.bin", "wb"), open(directory / "val.bin", "wb")]
        self.counts = [PairCounts(vocab_size), PairCounts(vocab_size)]

    def add(self, ids: np.ndarray) -> None:
        cut = min(self._left, len(ids))
        self._left -= cut
        self.add_to(0, ids[:cut])
        self.add_to(1, ids[cut:])

    def add_to(self, split: int, ids: np.ndarray) -> None:
        """Append to one split (0 train, 1 val) whatever its length: BPE cuts the text, not the tokens."""
        if len(ids):
            ids.astype(self.dtype, copy=False).tofile(self._files[split])
            self.counts[split].add(ids)

    def close(self) -> None:
        for file in self._files:
            file.flush()
            os.fsync(file.fileno())  # on disk before meta.json, written after them, says they are complete
            file.close()


def pieces(documents: list[Document], separator: str, plan: SplitPlan, chunk_bytes: int,
            on_bytes: Progress | None) -> Iterator[tuple[bytes, str]]:
    """The joined text as (utf-8 bytes, text) pieces: documents and the separators between them."""
    sep_piece = (separator.encode("utf-8"), separator)
    for i, document in enumerate(documents):
        if i and separator and i != plan.skip_separator_before:
            yield sep_piece
        chars = 0
        for raw, text in read_text_chunks(document.path, chunk_bytes, on_bytes):
            chars += len(text)
            yield raw, text
        if chars != document.chars:
            raise GptinyError(f"{document.label} changed while it was being prepared; prepare it again")


class Lookup:
    """Code points to token ids, vectorised: a table indexed by code point.

    A code point the first pass did not see maps to a value above every id. ASCII text whose ids
    all fit in a byte (any sorted vocabulary's) goes through ``bytes.translate`` instead, several
    times faster than indexing.
    """

    def __init__(self, table: np.ndarray, dtype: np.dtype, vocab_size: int) -> None:
        self.vocab_size, self.dtype = vocab_size, dtype
        kind = dtype if vocab_size < np.iinfo(dtype).max else np.dtype(np.int64)
        self._table = np.where(table < 0, np.iinfo(kind).max, table).astype(kind)
        ascii_ids = [int(i) if 0 <= i < 255 else 255 for i in table[:128]]
        fits = all(i < 255 for i, t in zip(ascii_ids, table[:128], strict=True) if t >= 0)
        self._translate = bytes(ascii_ids) + bytes(128) if fits else None

    def __call__(self, text: str) -> np.ndarray:
        if self._translate is not None and text.isascii():
            small = np.frombuffer(text.encode("ascii").translate(self._translate), dtype=np.uint8)
            if len(small) and small.max() == 255:
                self._unseen()
            return small.astype(self.dtype)
        ids = self._table[code_points(text)]
        if len(ids) and ids.max() >= self.vocab_size:
            self._unseen()
        return ids

    @staticmethod
    def _unseen() -> None:
        raise GptinyError("an input changed while it was being prepared (a character appeared that the "
                          "first pass did not see); prepare it again")


def encode(documents: list[Document], separator: str, plan: SplitPlan, table: np.ndarray, writer: SplitWriter,
           chunk_bytes: int, on_bytes: Progress | None = None) -> str:
    """Write every document's tokens through ``writer``; returns the sha256 of the joined text."""
    digest = hashlib.sha256()
    lookup = Lookup(table, writer.dtype, writer.vocab_size)
    for raw, text in pieces(documents, separator, plan, chunk_bytes, on_bytes):
        digest.update(raw)
        writer.add(lookup(text))
    return digest.hexdigest()
