"""Preparing with ``--tokenizer bpe``: learn the merges on the training split, then encode both splits.

Both passes stream the joined text in chunks. A chunk is cut only where a non-space character is
followed by a space, tab or newline: GPT-2's word splitting never joins the two sides of such a
point into one word, so encoding chunk by chunk gives exactly the tokens of encoding the whole
text at once (a text with no whitespace for many megabytes is cut anyway, the one place a token
may differ). The validation split is encoded on its own, from its first character, as a model
will see it; the merges are learnt from the training split only, so validation stays unseen.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from itertools import groupby
from operator import itemgetter

import numpy as np

from gptiny_cli.bpe import BpeVocab
from gptiny_cli.prepare.encode import Document, SplitWriter, pieces
from gptiny_cli.prepare.splits import SplitPlan
from gptiny_cli.prepare.stream import Progress

_CUT = re.compile(r"\S(?=\s)")
_LOOK_BACK = 1 << 16  # characters searched for a cut at the end of a chunk
_FORCED = 64  # a chunk this many times the usual size is cut even where no cut is safe
_BATCH = 16  # chunks encoded together (tokenizers spreads a batch over threads)


def split_text(documents: list[Document], separator: str, plan: SplitPlan, chunk_bytes: int,
               on_bytes: Progress | None = None, only_train: bool = False) -> Iterator[tuple[int, bytes, str]]:
    """The joined text as (split, utf-8 bytes, text): split 0 up to ``plan.train_chars``, then 1."""
    left = plan.train_chars
    for raw, text in pieces(documents, separator, plan, chunk_bytes, on_bytes):
        if len(text) <= left:
            left -= len(text)
            yield 0, raw, text
            continue
        head, tail = text[:left], text[left:]
        left = 0
        if head:
            yield 0, head.encode("utf-8"), head
        if only_train:
            return
        yield 1, tail.encode("utf-8"), tail


def safe_chunks(texts: Iterator[str], chunk_chars: int) -> Iterator[str]:
    """``texts`` regrouped into chunks of about ``chunk_chars``, each ending at a safe cut."""
    held = ""
    for text in texts:
        held += text
        if len(held) < chunk_chars:
            continue
        cuts = [m.end() for m in _CUT.finditer(held, max(0, len(held) - _LOOK_BACK))]
        end = cuts[-1] if cuts else len(held) if len(held) >= _FORCED * chunk_chars else 0
        if end:
            yield held[:end]
            held = held[end:]
    if held:
        yield held


def learn(documents: list[Document], separator: str, plan: SplitPlan, vocab_size: int, chunk_bytes: int,
          on_bytes: Progress | None = None) -> BpeVocab:
    """A byte-level BPE of ``vocab_size`` tokens learnt from the training split."""
    texts = (text for _, _, text in split_text(documents, separator, plan, chunk_bytes, on_bytes, only_train=True))
    return BpeVocab.train(safe_chunks(texts, chunk_bytes), vocab_size)


def _encode_split(texts: Iterator[str], vocab: BpeVocab, writer: SplitWriter, split: int, chunk_chars: int) -> None:
    batch = []
    for chunk in safe_chunks(texts, chunk_chars):
        batch.append(chunk)
        if len(batch) == _BATCH:
            _write_batch(batch, vocab, writer, split)
    _write_batch(batch, vocab, writer, split)


def _write_batch(batch: list[str], vocab: BpeVocab, writer: SplitWriter, split: int) -> None:
    for ids in vocab.encode_batch(batch):
        writer.add_to(split, np.asarray(ids, dtype=np.int64))
    batch.clear()


def encode_bpe(documents: list[Document], separator: str, plan: SplitPlan, vocab: BpeVocab, writer: SplitWriter,
               chunk_bytes: int, on_bytes: Progress | None = None) -> str:
    """Write both splits' tokens through ``writer``; returns the sha256 of the joined text."""
    digest = hashlib.sha256()

    def seen(raw: bytes, text: str) -> str:
        digest.update(raw)
        return text

    # The training split's pieces all come before the validation split's: one group each.
    for split, group in groupby(split_text(documents, separator, plan, chunk_bytes, on_bytes), key=itemgetter(0)):
        _encode_split((seen(raw, text) for _, raw, text in group), vocab, writer, split, chunk_bytes)
    return digest.hexdigest()
