"""``gptiny prepare``: a text file or URL (Tiny Shakespeare by default) into a data directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from gptiny_cli.cli.common import err, out, user_errors
from gptiny_cli.errors import GptinyError


def prepare(
    input: Annotated[str | None, typer.Argument(
        help="A UTF-8 text file or an http(s) URL to download \\[default: Tiny Shakespeare, into input.txt].",
        show_default=False)] = None,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="Data directory \\[default: data/<input stem>].", show_default=False)] = None,
    val_fraction: Annotated[float, typer.Option(help="Share of the corpus, at its end, kept for validation.")] = 0.1,
    max_mb: Annotated[float, typer.Option(help="Refuse a download larger than this many MiB.")] = 100.0,
) -> None:
    """Encode a corpus character by character into a data directory.

    Examples: gptiny prepare   (downloads Tiny Shakespeare to input.txt, writes data/input/);
    gptiny prepare mytext.txt; gptiny prepare https://example.org/corpus.txt
    """
    from gptiny_cli.prepare.corpus import prepare_corpus
    from gptiny_cli.prepare.download import corpus_source

    with user_errors():
        url, path = corpus_source(input)
        if url:
            _download(url, path, max_mb)
        elif input is None:
            err.print(f"preparing the existing {path} (delete it to download Tiny Shakespeare again)",
                      highlight=False)
        target = out_dir or Path("data") / path.stem
        summary = prepare_corpus(path, target, val_fraction)
    out.print(f"prepared {path} → {summary.out_dir}", highlight=False)
    table = Table(show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for label, value in (("characters", summary.chars), ("vocabulary", summary.vocab_size),
                         ("train tokens", summary.train_tokens), ("val tokens", summary.val_tokens)):
        table.add_row(label, f"{value:,}")
    out.print(table)


def _download(url: str, path: Path, max_mb: float) -> None:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from gptiny_cli.prepare.download import download

    if not max_mb > 0:
        raise GptinyError(f"--max-mb {max_mb} is invalid: must be a positive number of MiB")
    err.print(f"downloading {url} → {path}", highlight=False)
    if not err.is_terminal:
        download(url, path, int(max_mb * 2**20))
    else:
        columns = (TextColumn("download"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
        with Progress(*columns, console=err, transient=True) as bar:
            task = bar.add_task("download", total=None)
            download(url, path, int(max_mb * 2**20),
                     lambda done, total: bar.update(task, completed=done, total=total))
    err.print(f"saved {path} ({path.stat().st_size:,} bytes)", highlight=False)
