"""What every command shares: the two consoles, the ``--runs-dir`` option, and one-line errors."""

from __future__ import annotations

from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from gptiny_cli.errors import GptinyError

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
RUNS_DIR = Annotated[Path, typer.Option("--runs-dir", help="Where runs live.")]


class Which(str, Enum):
    best = "best"
    last = "last"


@contextmanager
def user_errors(prefix: str = ""):
    """Turn our expected errors into one red line and exit status 1."""
    try:
        yield
    except GptinyError as error:
        # escape: messages quote user text and name things like [train] or gptiny[plot], not markup
        err.print(f"{prefix}[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
