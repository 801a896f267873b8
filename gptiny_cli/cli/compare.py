"""``gptiny compare``: runs side by side, only the config keys that differ; a table, JSON or a plot overlay."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from gptiny_cli.cli.common import RUNS_DIR, out, user_errors


def _cell(value, grouped: bool = True) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) >= 0.01 else f"{value:g}"
    if isinstance(value, int) and not isinstance(value, bool) and grouped:
        return f"{value:,}"
    return str(value)


def compare(
    run: Annotated[list[str], typer.Argument(help="Runs, `latest`, or sweep directories (all their runs).",
                                             show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    plot: Annotated[Path | None, typer.Option(help="Also draw their loss curves on one chart, e.g. out.png.")] = None,
    runs_dir: RUNS_DIR = Path("runs"),
) -> None:
    """Compare runs: the config keys that differ, parameters, steps, tokens, time, best and whole-split val.

    Examples: gptiny compare runs/A runs/B; gptiny compare runs/<sweep-id> --json;
    gptiny compare runs/A runs/B --plot both.png
    """
    from gptiny_cli.report.compare import compare as side_by_side

    with user_errors():
        found = side_by_side(run, runs_dir)
        if plot is not None:
            _plot(found, plot)
    if as_json:
        sys.stdout.write(json.dumps(found, indent=2) + "\n")
        return
    table = Table(box=box.SIMPLE_HEAD, title="val: whole-split val loss of the best weights")
    columns = ["run", *found["keys"], "params", "steps", "tokens", "seconds", "best val", "val", "bits/char",
               "bits/byte"]
    for column in columns:
        table.add_column(column, justify="left" if column == "run" else "right")
    for row in found["runs"]:
        table.add_row(row["run"], *(_cell(row["config"][k], grouped=False) for k in found["keys"]),
                      *(_cell(row[k]) for k in ("parameters", "steps", "tokens", "seconds", "best_val", "val",
                                                "bits_per_char", "bits_per_byte")))
    (out if out.is_terminal else Console(width=200)).print(table)
    if plot is not None:
        out.print(f"wrote {plot}", highlight=False)


def _plot(found: dict, target: Path) -> None:
    from gptiny_cli.report.plot import loss_figure, save_figure
    from gptiny_cli.store.history import read_history

    save_figure(loss_figure([(row["run"], read_history(Path(row["path"]))) for row in found["runs"]]), target)
