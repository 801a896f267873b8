"""Choosing the vocabulary of a data directory from the characters a corpus holds.

By default it is the sorted set of the corpus's characters. ``--vocab FILE|RUN`` starts from an
existing vocabulary (a ``vocab.json``, or a run directory holding one; a BPE run's tokenizer is
taken as it is, see ``corpus.py``) so that new text encodes
with the ids a trained model knows; characters it lacks are an error, or with ``--extend`` are
appended after the existing ones, so every old id keeps its meaning. ``--min-count N`` maps the
characters seen fewer than N times to one replacement character.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gptiny_cli.bpe import FILENAME as BPE_FILENAME
from gptiny_cli.bpe import BpeVocab
from gptiny_cli.data import Tokenizer, Vocab
from gptiny_cli.errors import GptinyError, listing
from gptiny_cli.prepare.stream import CODE_POINTS

DEFAULT_REPLACEMENT = "\ufffd"  # U+FFFD REPLACEMENT CHARACTER, made for exactly this
_SHOWN = 20  # characters named in an error before "and N more"


@dataclass
class VocabPlan:
    """The vocabulary, and a table from every code point to its token id (-1: not in the corpus)."""

    vocab: Vocab
    table: np.ndarray
    added: list[str] = field(default_factory=list)  # appended to a --vocab by --extend
    replaced: dict[str, int] = field(default_factory=dict)  # rare character -> occurrences


def load_base(spec: str) -> Tokenizer:
    """The tokenizer named by ``--vocab``: a vocab.json or tokenizer.json file, or a run (or data)
    directory holding one."""
    path = Path(spec)
    if path.is_dir() and (path / BPE_FILENAME).is_file():
        return BpeVocab.load(path / BPE_FILENAME)
    if path.is_dir():
        path = path / "vocab.json"
    if not path.is_file():
        raise GptinyError(f"--vocab {spec}: no vocabulary there (give a vocab.json, a tokenizer.json or a run "
                          "directory)")
    return BpeVocab.load(path) if path.name == BPE_FILENAME else Vocab.load(path)


def _rare(seen: dict[str, int], min_count: int, keep: set[str]) -> dict[str, int]:
    if min_count <= 1:
        return {}
    return {ch: n for ch, n in seen.items() if n < min_count and ch not in keep}


def plan_vocabulary(counts: np.ndarray, base: Vocab | None = None, extend: bool = False,
                    min_count: int = 1, replacement: str = DEFAULT_REPLACEMENT) -> VocabPlan:
    """The vocabulary for a corpus whose code points occur ``counts`` times (indexed by code point)."""
    if min_count < 1:
        raise GptinyError(f"--min-count {min_count} is invalid: must be at least 1")
    if len(replacement) != 1:
        raise GptinyError(f"the replacement character must be a single character, not {replacement!r}")
    seen = {chr(int(cp)): int(counts[cp]) for cp in np.flatnonzero(counts)}
    known = set(base.chars) if base else set()
    rare = _rare(seen, min_count, known | {replacement})
    wanted = sorted((set(seen) - set(rare)) | ({replacement} if rare else set()))
    if base is None:
        vocab, added = Vocab(tuple(wanted)), []
    else:
        added = [ch for ch in wanted if ch not in known]
        if added and not extend:
            named = listing([repr(ch) for ch in added], _SHOWN)
            raise GptinyError(f"{len(added)} characters are not in the --vocab vocabulary: {named}; "
                              "add --extend to append them (existing ids keep their meaning)")
        vocab = Vocab(base.chars + tuple(added))
    table = np.full(CODE_POINTS, -1, dtype=np.int32)
    for i, ch in enumerate(vocab.chars):
        table[ord(ch)] = i
    for ch in rare:
        table[ord(ch)] = table[ord(replacement)]
    return VocabPlan(vocab, table, added, dict(sorted(rare.items(), key=lambda kv: (-kv[1], kv[0]))))
