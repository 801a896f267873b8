"""The two passes over the inputs: counting characters, then writing tokens straight to the .bin files.

The first pass (``scan``) hashes each document and counts its code points; the vocabulary is
chosen from those counts. The second (``encode``) maps each chunk through a lookup table indexed
by code point and appends the ids to ``train.bin`` or ``val.bin``, counting the pairs the
baselines need as it goes. Neither pass holds more than a chunk of text.
"""

from __future__ import annotations

import hashlib
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
        self._dtype = _NUMPY_DTYPES[dtype]
        self._left = plan.train_chars
        self._files = [open(directory / "train.bin", "wb"), open(directory / "val.bin", "wb")]
        self.counts = [PairCounts(vocab_size), PairCounts(vocab_size)]

    def add(self, ids: np.ndarray) -> None:
        cut = min(self._left, len(ids))
        self._left -= cut
        for split, part in ((0, ids[:cut]), (1, ids[cut:])):
            if len(part):
                part.astype(self._dtype, copy=False).tofile(self._files[split])
                self.counts[split].add(part)

    def close(self) -> None:
        for file in self._files:
            file.close()


def _pieces(documents: list[Document], separator: str, plan: SplitPlan, chunk_bytes: int,
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


def encode(documents: list[Document], separator: str, plan: SplitPlan, table: np.ndarray, writer: SplitWriter,
           chunk_bytes: int, on_bytes: Progress | None = None) -> str:
    """Write every document's tokens through ``writer``; returns the sha256 of the joined text."""
    digest = hashlib.sha256()
    for raw, text in _pieces(documents, separator, plan, chunk_bytes, on_bytes):
        digest.update(raw)
        points = code_points(text)
        # An ASCII chunk indexes the table's first 128 entries only: a smaller table, a faster take.
        ids = np.take(table[:128] if points.dtype == np.uint8 else table, points)
        if len(ids) and ids.min() < 0:
            raise GptinyError("an input changed while it was being prepared (a character appeared that the "
                              "first pass did not see); prepare it again")
        writer.add(ids)
    return digest.hexdigest()
