"""Writing a data directory: read UTF-8 inputs, choose their vocabulary, encode them, split them.

``prepare_corpus`` streams: a first pass counts characters, a second writes the tokens straight
to ``train.bin`` and ``val.bin`` (see ``encode.py``), so memory stays bounded at any corpus size.
The directory is staged beside its target and renamed into place, so a failure never leaves
half of one behind; its format is the one ``data.load_corpus`` reads, with ``meta.json`` also
listing every source (size, sha256, split) and the baselines of ``baselines.py``.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from gptiny_cli.bpe import BpeVocab
from gptiny_cli.data import TargetText, Tokenizer, Vocab, token_dtype
from gptiny_cli.errors import GptinyError
from gptiny_cli.prepare import bpe_encode, encode, splits, vocabulary
from gptiny_cli.prepare.baselines import cross_entropies
from gptiny_cli.prepare.sources import DEFAULT_GLOB, STDIN, expand
from gptiny_cli.prepare.stream import DEFAULT_CHUNK_BYTES, read_text_chunks
from gptiny_cli.store import atomic

TOKENIZERS = ("char", "bpe")
DEFAULT_BPE_VOCAB = 512
Progress = Callable[[str, int, int], None]  # (pass: "counting" or "encoding", bytes read in it, bytes in all)


@dataclass(frozen=True)
class PrepareOptions:
    """How ``gptiny prepare`` reads, splits and encodes; the defaults are its command-line defaults."""

    glob: str = DEFAULT_GLOB
    separator: str = "\n\n"
    split: str = "tail"
    val_fraction: float = 0.1
    vocab: str | None = None  # a vocab.json or a run directory to encode with
    tokenizer: str = "char"  # or "bpe"
    vocab_size: int | None = None  # BPE's, DEFAULT_BPE_VOCAB when not given
    extend: bool = False
    min_count: int = 1
    replacement: str = vocabulary.DEFAULT_REPLACEMENT
    skip_bad: bool = False
    chunk_bytes: int = DEFAULT_CHUNK_BYTES

    def check(self) -> None:
        """The mistakes that need no input read, found before a pass over a large corpus."""
        if self.split not in splits.SPLITS:
            raise GptinyError(f"--split {self.split!r} is invalid: must be one of {', '.join(splits.SPLITS)}")
        if not 0.0 < self.val_fraction < 1.0:
            raise GptinyError(f"--val-fraction {self.val_fraction} is invalid: must be between 0 and 1")
        if self.min_count < 1:
            raise GptinyError(f"--min-count {self.min_count} is invalid: must be at least 1")
        if self.extend and not self.vocab:
            raise GptinyError("--extend appends to the vocabulary of --vocab; give --vocab FILE|RUN too")
        if self.tokenizer not in TOKENIZERS:
            raise GptinyError(f"--tokenizer {self.tokenizer!r} is invalid: must be one of {', '.join(TOKENIZERS)}")
        if self.vocab_size is not None and self.tokenizer != "bpe":
            raise GptinyError("--vocab-size sizes a BPE vocabulary; add --tokenizer bpe (characters take "
                              "the corpus's own)")
        if self.tokenizer == "bpe" and self.min_count > 1:
            raise GptinyError("--min-count is for characters; BPE encodes every character through its bytes")
        if self.tokenizer == "bpe" and self.vocab:
            raise GptinyError("--vocab takes its tokenizer from the run or file it names; leave out --tokenizer bpe")
        if self.chunk_bytes < 1:
            raise GptinyError(f"chunk_bytes {self.chunk_bytes} is invalid: must be at least 1")


@dataclass(frozen=True)
class PrepareSummary:
    out_dir: Path
    vocab_size: int
    chars: int
    train_tokens: int
    val_tokens: int
    sources: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    baselines: dict = field(default_factory=dict)
    added: list[str] = field(default_factory=list)
    replaced: dict[str, int] = field(default_factory=dict)
    tokenizer: str = "char"


def read_corpus(path: Path) -> str:
    """Read a whole UTF-8 text file, or explain exactly why it cannot be used."""
    path = Path(path)
    if not path.exists():
        raise GptinyError(f"input not found: {path}")
    if path.is_dir():
        raise GptinyError(f"input is a directory, not a text file: {path}")
    text = "".join(part for _, part in read_text_chunks(path))
    if not text:
        raise GptinyError(f"input is empty: {path}")
    return text


def _byte_counter(progress: Progress | None, stage: str, total: int) -> Callable[[int], None] | None:
    if progress is None:
        return None
    done = [0]

    def advance(n: int) -> None:
        done[0] += n
        progress(stage, done[0], total)

    return advance


def _single_file(sources: list[dict]) -> str | None:
    """The one input file, as ``meta.json`` named it before there could be several; else None."""
    if len(sources) != 1 or sources[0]["path"] == STDIN:
        return None
    return str(Path(sources[0]["path"]).resolve())


def _meta(summary: PrepareSummary, options: PrepareOptions, dtype: str, sha256: str) -> dict:
    meta = {
        "format": 1, "vocab_size": summary.vocab_size, "chars": summary.chars,
        "train_tokens": summary.train_tokens, "val_tokens": summary.val_tokens,
        "val_fraction": options.val_fraction, "token_dtype": dtype,
        "source": _single_file(summary.sources),
        "sha256": sha256, "split": options.split, "separator": options.separator,
        "sources": summary.sources, "skipped": summary.skipped, "baselines": summary.baselines,
    }
    if options.vocab:
        meta["vocab_from"] = {"path": options.vocab, "added": summary.added}
    if options.min_count > 1:
        meta["replacement"] = {"char": options.replacement, "min_count": options.min_count,
                               "replaced": summary.replaced}
    return meta


@dataclass
class _Encoded:
    """What either tokenizer's passes leave: the vocabulary, token format, counts and bpc's denominators."""

    vocab: Tokenizer
    dtype: str
    writer: encode.SplitWriter
    sha256: str
    added: list[str] = field(default_factory=list)
    replaced: dict[str, int] = field(default_factory=dict)


def _encode_chars(staging: Path, documents: list, plan: splits.SplitPlan, counts, options: PrepareOptions,
                  base: Vocab | None, progress: Progress | None) -> _Encoded:
    for ch in options.separator:
        counts[ord(ch)] += splits.separators(len(documents), plan)
    vocab_plan = vocabulary.plan_vocabulary(counts, base, options.extend, options.min_count, options.replacement)
    dtype = token_dtype(vocab_plan.vocab.size)
    writer = encode.SplitWriter(staging, plan, dtype, vocab_plan.vocab.size)
    try:
        sha256 = encode.encode(documents, options.separator, plan, vocab_plan.table, writer, options.chunk_bytes,
                               _byte_counter(progress, "encoding", sum(d.bytes for d in documents)))
    finally:
        writer.close()
    return _Encoded(vocab_plan.vocab, dtype, writer, sha256, vocab_plan.added, vocab_plan.replaced)


def _encode_bpe(staging: Path, documents: list, plan: splits.SplitPlan, options: PrepareOptions,
                base: BpeVocab | None, progress: Progress | None) -> _Encoded:
    if options.extend:
        raise GptinyError(f"--extend appends characters to a character vocabulary; {options.vocab} holds a BPE "
                          "tokenizer, whose bytes already encode every text (leave out --extend)")
    total = sum(d.bytes for d in documents)
    vocab = base or bpe_encode.learn(documents, options.separator, plan, options.vocab_size or DEFAULT_BPE_VOCAB,
                                     options.chunk_bytes, _byte_counter(progress, "learning BPE", total))
    dtype = token_dtype(vocab.size)
    writer = encode.SplitWriter(staging, plan, dtype, vocab.size)
    try:
        sha256 = bpe_encode.encode_bpe(documents, options.separator, plan, vocab, writer, options.chunk_bytes,
                                       _byte_counter(progress, "encoding", total))
    finally:
        writer.close()
    return _Encoded(vocab, dtype, writer, sha256)


def _write(staging: Path, inputs: list[str], options: PrepareOptions, stdin: BinaryIO | None,
           progress: Progress | None) -> tuple[PrepareSummary, dict]:
    """The passes into ``staging``; returns the summary (its out_dir still to be set) and meta."""
    sources = expand(inputs, options.glob, stdin, staging)
    total = sum(s.path.stat().st_size for s in sources)
    documents, skipped, counts = encode.scan(sources, options.chunk_bytes, options.skip_bad,
                                             _byte_counter(progress, "counting", total))
    what = inputs[0] if len(inputs) == 1 and len(sources) == 1 else f"the {len(documents)} documents"
    if not documents or sum(d.chars for d in documents) == 0:
        raise GptinyError(f"input is empty: {what}")
    plan = splits.plan_split([d.chars for d in documents], len(options.separator), options.split,
                             options.val_fraction, what)
    base = vocabulary.load_base(options.vocab) if options.vocab else None
    if options.tokenizer == "bpe" or isinstance(base, BpeVocab):
        done = _encode_bpe(staging, documents, plan, options, base, progress)
    else:
        done = _encode_chars(staging, documents, plan, counts, options, base, progress)
    (staging / "stdin.txt").unlink(missing_ok=True)
    listed = [{"path": d.label, "bytes": d.bytes, "sha256": d.sha256, "chars": d.chars, "split": where}
              for d, where in zip(documents, plan.where, strict=True)]
    train_counts, val_counts = done.writer.counts
    targets = val_counts.unigram
    targets[val_counts.first] -= 1  # the first validation token is never predicted
    predicted = TargetText.of_counts(done.vocab, targets.tolist())
    summary = PrepareSummary(staging, done.vocab.size, plan.train_chars + plan.val_chars, train_counts.tokens,
                             val_counts.tokens, listed, skipped,
                             cross_entropies(train_counts, val_counts, predicted.chars), done.added,
                             done.replaced, done.vocab.kind)
    atomic.write_text(staging / done.vocab.filename, done.vocab.serialized())
    meta = _meta(summary, options, done.dtype, done.sha256) | {
        "tokenizer": done.vocab.kind, "train_chars": plan.train_chars, "val_chars": plan.val_chars,
        "val_targets": predicted.to_json()}
    return summary, meta


def prepare_corpus(inputs: Path | str | Sequence[Path | str], out_dir: Path, val_fraction: float = 0.1, *,
                   options: PrepareOptions | None = None, stdin: BinaryIO | None = None,
                   progress: Progress | None = None) -> PrepareSummary:
    """Encode one or several inputs and write the data directory atomically (all of it, or nothing).

    ``val_fraction`` is a shorthand for ``options.val_fraction`` when no options are given.
    """
    options = options or PrepareOptions(val_fraction=val_fraction)
    options.check()
    specs = [str(inputs)] if isinstance(inputs, (str, Path)) else [str(i) for i in inputs]
    out_dir = Path(out_dir)
    _check_target(out_dir)  # before the passes: a refused --out must not cost a read of the corpus
    staging = atomic.staging_dir(out_dir)
    try:
        summary, meta = _write(staging, specs, options, stdin, progress)
        atomic.write_json(staging / "meta.json", meta)
        _check_target(out_dir)  # again: something may have appeared there meanwhile
        atomic.replace_dir(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dataclasses.replace(summary, out_dir=out_dir)


def _check_target(target: Path) -> None:
    """A data directory replaces only an earlier one (or nothing), never other files."""
    if target.exists() and not (target / "meta.json").is_file():
        raise GptinyError(f"{target} exists and is not a gptiny data directory; choose another --out")
