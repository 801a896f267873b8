"""``gptiny inspect``: every module of a model with its parameter count and shapes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from gptiny_cli.cli.common import RUNS_DIR, err, out, user_errors
from gptiny_cli.prepare.sources import TINY_SHAKESPEARE_VOCAB_SIZE


def inspect(
    target: Annotated[str, typer.Argument(help="A run directory, `latest`, or a TOML config.")] = "latest",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    vocab_size: Annotated[int, typer.Option(
        help="For a CONFIG whose data is not prepared yet: the vocabulary size to count with "
             "(Tiny Shakespeare's by default).")] = TINY_SHAKESPEARE_VOCAB_SIZE,
    runs_dir: RUNS_DIR = Path("runs"),
) -> None:
    """Show the parameter count and shapes of every module of a model.

    Examples: gptiny inspect configs/shakespeare.toml; gptiny inspect latest --json;
    gptiny inspect configs/shakespeare.toml --vocab-size 200   (before any data is prepared)
    """
    from gptiny_cli.report.inspection import describe

    with user_errors():
        report = describe(target, runs_dir, vocab_size)
    if "note" in report:
        err.print(f"note: {report.pop('note')}", highlight=False)
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return
    table = Table(title=f"{report['source']}", title_justify="left")
    for column, justify in (("module", "left"), ("type", "left"), ("parameters", "right"), ("shapes", "left")):
        table.add_column(column, justify=justify, no_wrap=True)
    for row in report["modules"]:
        shapes = ", ".join(f"{k} {'×'.join(map(str, v))}" for k, v in row["shapes"].items())
        table.add_row("  " * row["depth"] + row["name"].rsplit(".", 1)[-1], row["kind"],
                      f"{row['params']:,}", shapes)
    out.print(table)
    out.print(f"total {report['total_params']:,} parameters: {report['embedding_params']:,} in embeddings, "
              f"{report['non_embedding_params']:,} elsewhere", highlight=False)
