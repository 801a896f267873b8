"""``gptiny prepare``: files, folders, URLs or standard input (Tiny Shakespeare by default) into a data directory."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from gptiny_cli.cli.common import err, out, user_errors
from gptiny_cli.errors import GptinyError, listing

_LISTED = 5  # documents named per split before "and N more"


def prepare(
    inputs: Annotated[list[str] | None, typer.Argument(
        help="UTF-8 text files, directories (searched with --glob), http(s) URLs, or - for standard input "
             "\\[default: Tiny Shakespeare, into input.txt].", show_default=False)] = None,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="Data directory \\[default: data/<stem of the first input>].", show_default=False)] = None,
    glob: Annotated[str, typer.Option(help="Files of a directory to read, recursively, in sorted order.")] = "*.txt",
    separator: Annotated[str, typer.Option(
        help="Joins the documents \\[default: a blank line, $'\\n\\n'].", show_default=False)] = "\n\n",
    split: Annotated[str, typer.Option(
        help="Validation split: the text's tail, or whole documents (the last ones).")] = "tail",
    val_fraction: Annotated[float, typer.Option(help="Share of the corpus, at its end, kept for validation.")] = 0.1,
    tokenizer: Annotated[str, typer.Option(
        help="char: one token per character; bpe: byte-level BPE learnt from the training split "
             "(pip install 'gptiny[bpe]').")] = "char",
    vocab_size: Annotated[int | None, typer.Option(
        help="With --tokenizer bpe: tokens to learn, 256 (the bytes) to 65,536 \\[default: 512].",
        show_default=False)] = None,
    vocab: Annotated[str | None, typer.Option(
        help="Encode with this vocabulary: a vocab.json, tokenizer.json or a run directory.",
        show_default=False)] = None,
    extend: Annotated[bool, typer.Option(help="With --vocab: append characters it lacks (old ids kept).")] = False,
    min_count: Annotated[int, typer.Option(
        help="Characters seen fewer times become one replacement character (U+FFFD).")] = 1,
    skip_bad: Annotated[bool, typer.Option(help="Skip files that are not UTF-8 and list them.")] = False,
    max_mb: Annotated[float, typer.Option(help="Refuse a download larger than this many MiB.")] = 100.0,
) -> None:
    """Encode a corpus by character (or byte-level BPE) into a data directory, with baselines for its loss.

    Examples: gptiny prepare   (downloads Tiny Shakespeare to input.txt, writes data/input/);
    gptiny prepare mytext.txt; gptiny prepare books/ --glob '*.md' --split documents;
    gptiny prepare input.txt --tokenizer bpe --vocab-size 1024 --out data/bpe1024;
    cat a.txt b.txt | gptiny prepare - --out data/ab; gptiny prepare new.txt --vocab runs/<id> --extend
    """
    from gptiny_cli.prepare.corpus import PrepareOptions
    from gptiny_cli.prepare.sources import default_out

    with user_errors():
        specs = _local_inputs(inputs, max_mb)
        options = PrepareOptions(glob=glob, separator=separator, split=split, val_fraction=val_fraction,
                                 vocab=vocab, tokenizer=tokenizer, vocab_size=vocab_size, extend=extend,
                                 min_count=min_count, skip_bad=skip_bad)
        summary = _run(specs, out_dir or default_out(specs[0]), options)
    _report(specs, summary)


def _local_inputs(inputs: list[str] | None, max_mb: float) -> list[str]:
    """The inputs as local files: URLs downloaded first; none means Tiny Shakespeare in ./input.txt."""
    from gptiny_cli.prepare.download import corpus_source

    specs = []
    for spec in inputs or [None]:
        url, path = corpus_source(spec)
        if url:
            _download(url, path, max_mb)
        elif spec is None:
            err.print(f"preparing the existing {path} (delete it to download Tiny Shakespeare again)",
                      highlight=False)
        specs.append(str(path) if url or spec is None else spec)
    return specs


def _byte_bar():
    """A progress bar on stderr in bytes, with the speed, gone once done."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    return Progress(*columns, console=err, transient=True)


def _run(specs: list[str], target: Path, options):
    from gptiny_cli.prepare.corpus import prepare_corpus

    stdin = sys.stdin.buffer if "-" in specs else None
    if not err.is_terminal:
        return prepare_corpus(specs, target, options=options, stdin=stdin)
    with _byte_bar() as bar:
        task = bar.add_task("counting", total=None)

        def show(stage: str, done: int, total: int) -> None:
            if bar.tasks[0].description != stage:  # the second pass: a fresh bar, and its own speed
                bar.reset(task, description=stage)
            bar.update(task, completed=done, total=total)

        return prepare_corpus(specs, target, options=options, stdin=stdin, progress=show)


def _names(sources: list[dict], where: str) -> str:
    return escape(listing([s["path"] for s in sources if s["split"] == where], _LISTED))


def _report(specs: list[str], summary) -> None:
    for skipped in summary.skipped:
        err.print(f"[yellow]skipped[/] {escape(skipped['reason'])}", highlight=False)
    if summary.replaced:
        listed = escape(", ".join(f"{ch!r} ×{n}" for ch, n in list(summary.replaced.items())[:10]))
        err.print(f"replaced {len(summary.replaced)} rare characters by U+FFFD: {listed}", highlight=False)
    if summary.added:
        err.print(f"appended {len(summary.added)} characters to the vocabulary: {escape(repr(''.join(summary.added)))}",
                  highlight=False)
    what = specs[0] if len(specs) == 1 else f"{len(specs)} inputs"
    out.print(f"prepared {escape(what)} → {summary.out_dir}", highlight=False)
    table = Table(show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for label, value in (("documents", len(summary.sources)), ("characters", summary.chars),
                         ("vocabulary", summary.vocab_size), ("train tokens", summary.train_tokens),
                         ("val tokens", summary.val_tokens)):
        table.add_row(label, f"{value:,}")
    per = "" if summary.tokenizer == "char" else "/token"
    if summary.tokenizer != "char":
        per_token = summary.chars / max(summary.train_tokens + summary.val_tokens, 1)
        table.add_row("tokenizer", f"byte-level BPE, {per_token:.2f} chars/token")
    for name in ("bigram", "unigram"):
        if name in summary.baselines:
            b = summary.baselines[name]
            table.add_row(f"{name} baseline", f"{b['nats']:.4f} nats{per} = {b['bits_per_char']:.3f} bits/char")
    out.print(table)
    if len(summary.sources) > 1:
        for where in ("train", "train+val", "val"):
            if any(s["split"] == where for s in summary.sources):
                out.print(f"{where}: {_names(summary.sources, where)}", highlight=False)


def _download(url: str, path: Path, max_mb: float) -> None:
    from gptiny_cli.prepare.download import download

    if not max_mb > 0:
        raise GptinyError(f"--max-mb {max_mb} is invalid: must be a positive number of MiB")
    err.print(f"downloading {url} → {path}", highlight=False)
    if not err.is_terminal:
        download(url, path, int(max_mb * 2**20))
    else:
        with _byte_bar() as bar:
            task = bar.add_task("download", total=None)
            download(url, path, int(max_mb * 2**20),
                     lambda done, total: bar.update(task, completed=done, total=total))
    err.print(f"saved {path} ({path.stat().st_size:,} bytes)", highlight=False)
