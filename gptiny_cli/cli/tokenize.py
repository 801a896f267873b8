"""``gptiny tokenize``: a text split into tokens, each piece coloured, with ids and counts."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from gptiny_cli.cli.common import RUNS_DIR, out, user_errors
from gptiny_cli.errors import GptinyError

_COLOURS = ("on #3b4261", "on #5a3e56", "on #2f5146", "on #5b4b2e")  # dark backgrounds, told apart in a row
_VISIBLE = {"\n": "⏎\n", "\t": "⇥"}


def tokenize(
    source: Annotated[str, typer.Argument(help="A data directory, a run directory, or `latest`.")],
    text: Annotated[str | None, typer.Argument(help="The text to split \\[default: --file, or standard input].",
                                               show_default=False)] = None,
    file: Annotated[Path | None, typer.Option(help="Read the text from this UTF-8 file.", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON: each token's id and piece, counts.")] = False,
    runs_dir: RUNS_DIR = Path("runs"),
) -> None:
    """Show how a text splits into tokens: pieces coloured, their ids, the count, characters per token.

    Examples: gptiny tokenize data/input "To be, or not to be"; gptiny tokenize data/bpe1024 --file speech.txt;
    echo "ROMEO:" | gptiny tokenize latest --json
    """
    from gptiny_cli.report.tokens import tokenize as split

    with user_errors():
        found = split(source, _read(text, file), runs_dir)
    if as_json:
        sys.stdout.write(json.dumps(found.to_json(), indent=2, ensure_ascii=False) + "\n")
        return
    shown = Text()
    for n, piece in enumerate(found.pieces):
        visible = "".join(_VISIBLE.get(ch, ch) for ch in piece)
        shown.append(visible, style=_COLOURS[n % len(_COLOURS)])
    out.print(shown)
    out.print(f"ids: {found.ids}", highlight=False, soft_wrap=True)
    kind = "characters" if found.kind == "char" else "byte-level BPE"
    out.print(f"{len(found.ids):,} tokens for {found.chars:,} characters ({found.chars_per_token:.2f} characters "
              f"per token) with {found.source}'s {kind}, {found.vocab_size:,} tokens", highlight=False)


def _read(text: str | None, file: Path | None) -> str:
    if text is not None and file is not None:
        raise GptinyError("give the text or --file, not both")
    if file is not None:
        try:
            return file.read_text(encoding="utf-8")
        except (FileNotFoundError, IsADirectoryError):
            raise GptinyError(f"--file {file} is not a readable file") from None
        except UnicodeDecodeError as error:
            raise GptinyError(f"--file {file} is not UTF-8 (byte offset {error.start})") from None
    if text is None:
        if sys.stdin.isatty():
            raise GptinyError("give the text to split, --file FILE, or pipe it in")
        text = sys.stdin.read()
    if not text:
        raise GptinyError("the text is empty: give something to split")
    return text
