"""``gptiny tokenize``: how a text splits into a data directory's or a run's tokens.

The lesson of tokenization made visible: the same text is one token per character with a
character vocabulary, and fewer, longer pieces with a BPE, more of them the larger its
vocabulary. A BPE piece may hold part of a character (its bytes); ``pieces`` shows those bytes
as ``\\xNN``. A character vocabulary cannot encode a character it lacks: that is an error here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gptiny_cli.data import Tokenizer, load_vocab
from gptiny_cli.errors import GptinyError
from gptiny_cli.store.runs import resolve_run


@dataclass(frozen=True)
class Tokenized:
    source: str  # the directory whose tokenizer split the text
    kind: str  # "char" or "bpe"
    vocab_size: int
    ids: list[int]
    pieces: list[str]
    chars: int

    @property
    def chars_per_token(self) -> float:
        return self.chars / max(len(self.ids), 1)

    def to_json(self) -> dict:
        return {"source": self.source, "tokenizer": self.kind, "vocab_size": self.vocab_size,
                "count": len(self.ids), "chars": self.chars, "chars_per_token": self.chars_per_token,
                "tokens": [{"id": i, "piece": p} for i, p in zip(self.ids, self.pieces, strict=True)]}


def tokenizer_of(spec: str, runs_dir: Path) -> tuple[Path, Tokenizer]:
    """The tokenizer of a data directory, or of a run (a directory or ``latest``)."""
    path = resolve_run(spec, runs_dir) if spec == "latest" else Path(spec)
    if not any((path / name).is_file() for name in ("vocab.json", "tokenizer.json")):
        raise GptinyError(f"{spec} holds no tokenizer (vocab.json or tokenizer.json): give a data directory "
                          "written by `gptiny prepare`, a run directory, or `latest`")
    return path, load_vocab(path)


def tokenize(spec: str, text: str, runs_dir: Path = Path("runs")) -> Tokenized:
    directory, vocab = tokenizer_of(spec, runs_dir)
    unknown = vocab.unknown(text)
    if unknown:
        raise GptinyError(f"the text has characters {directory}'s vocabulary lacks: {''.join(unknown)!r}")
    ids = vocab.encode(text)
    return Tokenized(str(directory), vocab.kind, vocab.size, ids, [vocab.pieces[i] for i in ids], len(text))
