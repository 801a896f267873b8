"""Commands about existing runs: ``runs`` (the table), ``plot`` (loss charts), ``eval`` (exact loss).

Registered on the app by ``cli/__init__.py``.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gptiny_cli.cli.common import RUNS_DIR, Which, err, out, user_errors
from gptiny_cli.store import history


def _short_count(n: int | None) -> str:
    if n is None:
        return "-"
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= limit:
            return f"{n / limit:.1f}{suffix}"
    return str(n)


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _local_time(stamp: str | None) -> str:
    try:
        return datetime.fromisoformat(stamp).astimezone().strftime("%Y-%m-%d %H:%M") if stamp else "-"
    except ValueError:
        return stamp or "-"


def complete_run(ctx: typer.Context, incomplete: str) -> list[str]:
    """Shell completion for RUN: `latest` and the run directories under --runs-dir, newest first."""
    runs_dir = Path(ctx.params.get("runs_dir") or "runs")
    candidates = ["latest", *(record.path for record in history.list_runs(runs_dir))]
    return [c for c in candidates if c.startswith(incomplete)]


_NUMERIC = ("iters", "best val", "bits/char", "params", "duration")
_STATUS_COLOURS = {"completed": "green", "running": "cyan", "interrupted": "yellow", "pruned": "yellow",
                   "failed": "red", "damaged": "red"}


def _row(r: history.RunRecord, with_parent: bool) -> tuple[str, ...]:
    iters = "-" if r.iters is None else f"{r.iters}/{r.max_iters}" if r.max_iters else str(r.iters)
    best = "-" if r.best_val_loss is None else f"{r.best_val_loss:.4f}"
    bpc = "-" if r.best_val_bpc is None else f"{r.best_val_bpc:.3f}"
    status = f"[{_STATUS_COLOURS.get(r.status, 'default')}]{escape(r.status)}[/]"
    parent = (escape(r.parent or "-"),) if with_parent else ()
    return (escape(r.id), escape(r.name or "-"), *parent, status, iters, best, bpc, _short_count(r.parameters),
            escape(r.device or "-"), _local_time(r.started_at), _clock(r.duration_s))


def list_runs(
    runs_dir: RUNS_DIR = Path("runs"),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the runs, newest first: status, iterations, best val loss, size, device, start and duration.

    Examples: gptiny runs; gptiny runs --runs-dir /data/runs --json
    """
    with user_errors():
        records = history.list_runs(runs_dir)
    if as_json:
        sys.stdout.write(json.dumps([r.to_json() for r in records], indent=2) + "\n")
        return
    if not records:
        err.print(f"no runs in {runs_dir}/; train one with `gptiny train CONFIG`", highlight=False)
        return
    table = Table(title=f"runs in {runs_dir}/", title_justify="left", box=box.SIMPLE_HEAD)
    with_parent = any(r.parent for r in records)  # a column for fine-tuned runs only when there are some
    columns = ("id", "name", *(("from",) if with_parent else ()), "status", "iters", "best val", "bits/char", "params",
               "device", "started", "duration")
    for column in columns:
        table.add_column(column, justify="right" if column in _NUMERIC else "left", no_wrap=column != "name")
    table.columns[0].min_width = max(len(r.id) for r in records)  # the id is what other commands take
    for record in records:
        table.add_row(*_row(record, with_parent))
    # A pipe or a file gets the whole table rather than one cut to 80 columns.
    (out if out.is_terminal else Console(width=200)).print(table)


def plot(
    run: Annotated[list[str], typer.Argument(help="Run directories, or `latest`.", show_default=False,
                                             autocompletion=complete_run)],
    out_path: Annotated[Path, typer.Option("--out", help="Image file; the suffix sets the format.")] = Path("loss.png"),
    log: Annotated[bool, typer.Option("--log", help="Logarithmic loss axis.")] = False,
    runs_dir: RUNS_DIR = Path("runs"),
) -> None:
    """Draw train and val loss over iterations, one colour per run (needs matplotlib: gptiny\\[plot]).

    A sweep directory instead draws each trial's val loss against each swept key (and parameter count).
    Examples: gptiny plot latest; gptiny plot runs/A runs/B --log --out compare.svg; gptiny plot runs/<sweep-id>
    """
    from gptiny_cli.report.plot import loss_figure, save_figure
    from gptiny_cli.store.runs import resolve_run

    if len(run) == 1 and (Path(run[0]) / "sweep.json").is_file():
        _plot_sweep(Path(run[0]), out_path)
        return
    with user_errors():
        run_dirs = [resolve_run(spec, runs_dir) for spec in run]
        figure = loss_figure([(d.name, history.read_history(d)) for d in run_dirs], log_scale=log)
        save_figure(figure, out_path)
    out.print(f"wrote {out_path} ({len(run_dirs)} run{'s' if len(run_dirs) > 1 else ''})", highlight=False)


def _plot_sweep(sweep_dir: Path, out_path: Path) -> None:
    from gptiny_cli.report.plot import save_figure
    from gptiny_cli.report.sweep_plot import sweep_figure
    from gptiny_cli.sweep import results

    with user_errors():
        save_figure(sweep_figure(sweep_dir.name, results.read(sweep_dir)), out_path)
    out.print(f"wrote {out_path} (the trials of {sweep_dir})", highlight=False)


def evaluate(
    run: Annotated[str, typer.Argument(help="A run directory, or `latest`.", autocompletion=complete_run)] = "latest",
    text: Annotated[Path | None, typer.Option(help="A UTF-8 text file \\[default: the run's validation split].",
                                              show_default=False)] = None,
    checkpoint: Annotated[Which, typer.Option(help="Weights with the best val loss, or the last ones.")] = Which.best,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    precision: Annotated[str, typer.Option(
        help="float32 (exact), or auto: the run's training dtype, as training's own figure.")] = "float32",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
    runs_dir: RUNS_DIR = Path("runs"),
) -> None:
    """Exact loss and bits per character of a run on its whole validation split, or on any text file.

    Characters the run's vocabulary lacks are reported and skipped (the text is scored around them).
    On the validation split the data's bigram and unigram baselines are shown beside it.
    Examples: gptiny eval latest; gptiny eval runs/<id> --text other.txt --json
    """
    from gptiny_cli.report.evaluate import evaluate as score
    from gptiny_cli.report.progress import baseline_note
    from gptiny_cli.store.runs import resolve_run

    with user_errors():
        report = score(resolve_run(run, runs_dir), text, checkpoint.value, device, precision)
    if as_json:
        sys.stdout.write(json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n")
        return
    if report.unknown_chars:
        listed = escape(", ".join(f"{ch!r} ×{n}" for ch, n in report.unknown_chars.items()))
        err.print(f"[yellow]skipped {sum(report.unknown_chars.values()):,} characters outside the vocabulary:[/] "
                  f"{listed}", highlight=False)
    per = " per token" if report.text.tokens != report.text.chars else ""
    out.print(f"{report.source}: loss {report.loss:.4f} nats{per} = {report.bits_per_char:.4f} bits per character, "
              f"{report.bits_per_byte:.4f} per byte"
              f"{baseline_note(report.baselines)}, over "
              f"{report.tokens:,} predictions, {Path(report.weights).name} of {report.run}", highlight=False)
