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
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from gptiny_cli.data import token_dtype
from gptiny_cli.errors import GptinyError
from gptiny_cli.prepare import encode, splits, vocabulary
from gptiny_cli.prepare.baselines import cross_entropies
from gptiny_cli.prepare.sources import DEFAULT_GLOB, STDIN, expand
from gptiny_cli.prepare.stream import DEFAULT_CHUNK_BYTES, read_text_chunks
from gptiny_cli.store import atomic

Progress = Callable[[str, int, int], None]  # (pass: "counting" or "encoding", bytes read in it, bytes in all)


@dataclass(frozen=True)
class PrepareOptions:
    """How ``gptiny prepare`` reads, splits and encodes; the defaults are its command-line defaults."""

    glob: str = DEFAULT_GLOB
    separator: str = "\n\n"
    split: str = "tail"
    val_fraction: float = 0.1
    vocab: str | None = None  # a vocab.json or a run directory to encode with
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


def _write(staging: Path, inputs: list[str], options: PrepareOptions, stdin: BinaryIO | None,
           progress: Progress | None) -> tuple[PrepareSummary, dict]:
    """Both passes into ``staging``; returns the summary (its out_dir still to be set) and meta."""
    sources = expand(inputs, options.glob, stdin, staging)
    total = sum(s.path.stat().st_size for s in sources)
    documents, skipped, counts = encode.scan(sources, options.chunk_bytes, options.skip_bad,
                                             _byte_counter(progress, "counting", total))
    what = inputs[0] if len(inputs) == 1 and len(sources) == 1 else f"the {len(documents)} documents"
    if not documents or sum(d.chars for d in documents) == 0:
        raise GptinyError(f"input is empty: {what}")
    plan = splits.plan_split([d.chars for d in documents], len(options.separator), options.split,
                             options.val_fraction, what)
    for ch in options.separator:
        counts[ord(ch)] += splits.separators(len(documents), plan)
    base = vocabulary.load_base(options.vocab) if options.vocab else None
    vocab_plan = vocabulary.plan_vocabulary(counts, base, options.extend, options.min_count, options.replacement)
    dtype = token_dtype(vocab_plan.vocab.size)
    writer = encode.SplitWriter(staging, plan, dtype, vocab_plan.vocab.size)
    try:
        sha256 = encode.encode(documents, options.separator, plan, vocab_plan.table, writer,
                               options.chunk_bytes,
                               _byte_counter(progress, "encoding", sum(d.bytes for d in documents)))
    finally:
        writer.close()
    (staging / "stdin.txt").unlink(missing_ok=True)
    listed = [{"path": d.label, "bytes": d.bytes, "sha256": d.sha256, "chars": d.chars, "split": where}
              for d, where in zip(documents, plan.where, strict=True)]
    summary = PrepareSummary(staging, vocab_plan.vocab.size, plan.train_chars + plan.val_chars, plan.train_chars,
                             plan.val_chars, listed, skipped, cross_entropies(*writer.counts), vocab_plan.added,
                             vocab_plan.replaced)
    atomic.write_json(staging / "vocab.json", vocab_plan.vocab.to_json())
    return summary, _meta(summary, options, dtype, sha256)


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
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    staging.chmod(0o777 & ~atomic.current_umask())
    try:
        summary, meta = _write(staging, specs, options, stdin, progress)
        atomic.write_json(staging / "meta.json", meta)
        _replace_dir(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dataclasses.replace(summary, out_dir=out_dir)


def _replace_dir(staging: Path, target: Path) -> None:
    """Put a finished data directory in place of ``target``, which must be one too (or absent)."""
    if target.exists() and not (target / "meta.json").is_file():
        raise GptinyError(f"{target} exists and is not a gptiny data directory; choose another --out")
    atomic.replace_dir(staging, target)
