"""The ``gptiny`` command line: parse, call the library, render. The only module that prints or exits.

Heavy imports (torch) happen inside the commands so that ``--help`` answers at once.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table

from gptiny_cli.errors import GptinyError

app = typer.Typer(
    name="gptiny",
    help="Train a character-level GPT from scratch and sample from it.\n\n"
    "Example: gptiny prepare input.txt && gptiny train configs/shakespeare-cpu.toml "
    "&& gptiny sample latest",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
RUNS_DIR = Annotated[Path, typer.Option("--runs-dir", help="Where runs live.")]


class Which(str, Enum):
    best = "best"
    last = "last"


@contextmanager
def _user_errors(prefix: str = ""):
    """Turn our expected errors into one red line and exit status 1."""
    try:
        yield
    except GptinyError as error:
        # escape: messages quote user text and name things like [train] or gptiny[plot], not markup
        err.print(f"{prefix}[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


@app.command()
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
    from gptiny_cli.data import prepare_corpus
    from gptiny_cli.download import corpus_source

    with _user_errors():
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

    from gptiny_cli.download import download

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


@app.command()
def train(
    config: Annotated[Path | None, typer.Argument(help="A TOML run config, e.g. configs/shakespeare.toml.")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Override a config key: --set train.max_iters=200.")] = [],  # noqa: B006
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    runs_dir: RUNS_DIR = Path("runs"),
    name: Annotated[str | None, typer.Option(help="Run name \\[default: the config's file stem].")] = None,
    resume: Annotated[str | None, typer.Option(help="Continue a run directory, or `latest`.")] = None,
    run_dir: Annotated[Path | None, typer.Option(
        help="Train in this directory: created if new, continued from its checkpoint if it has one.")] = None,
    nproc: Annotated[int | None, typer.Option(
        help="Train data-parallel on N processes of this machine (one per GPU, or CPU processes).")] = None,
) -> None:
    """Train a model; weights, metrics and status go to a new directory under runs/.

    Examples: gptiny train configs/shakespeare-cpu.toml --set train.max_iters=200;
    gptiny train --resume latest; gptiny train configs/shakespeare.toml --nproc 2
    (or torchrun --nproc-per-node 2 -m gptiny_cli train configs/shakespeare.toml)
    """
    from gptiny_cli import distributed
    from gptiny_cli.launch import TrainRequest, run_local

    request = TrainRequest(config, set_, device, runs_dir, name, resume, run_dir)
    if nproc is not None:
        with _user_errors():
            status = run_local(nproc, request)
        raise typer.Exit(status)
    with _user_errors():
        world = distributed.init(device)
    try:
        _train_here(request, world)
    finally:
        distributed.shutdown()


def _train_here(request, world) -> None:
    """Train in this process; with several processes, only rank 0 shows anything but errors."""
    from gptiny_cli.interrupt import GracefulStop
    from gptiny_cli.launch import start_session
    from gptiny_cli.resume import AlreadyComplete

    with _user_errors(f"rank {world.rank}: " if world.size > 1 else ""):
        try:
            session = start_session(request, world)
        except AlreadyComplete as done:
            if world.is_main:
                err.print(str(done), highlight=False, soft_wrap=True)
            return
        if world.is_main:
            err.print(_describe(session), highlight=False)
        with GracefulStop() as stop:
            try:
                finished = _show_training(session, stop.requested) if world.is_main else _drain(session, stop.requested)
            except KeyboardInterrupt:
                _stopped_at_once(session, stop.signum)
    if world.is_main:
        _report_end(session, finished, stop.signum)
    elif finished.status == "interrupted":
        raise typer.Exit(_exit_code(stop.signum))


def _describe(session) -> str:
    t, world = session.config.train, session.world
    where = f"{session.device}" if world.size == 1 else f"{world.size} processes ({session.device.type})"
    return (f"run {session.run_dir} on {where} ({session.precision.name}), {session.info['parameters']:,} "
            f"parameters, global batch {session.info['global_batch']:,} sequences "
            f"({t.batch_size} × {t.grad_accum} accumulated × {world.size} process{'es' if world.size > 1 else ''})")


def _drain(session, should_stop):
    from gptiny_cli.train import run

    *_, finished = run(session, should_stop)
    return finished


def _resume_command(session) -> str:
    nproc = f" --nproc {session.world.size}" if session.world.size > 1 else ""
    return f"gptiny train --resume {session.run_dir}{nproc}"


def _exit_code(signum: int | None) -> int:
    import signal

    return 143 if signum == signal.SIGTERM else 130


def _stopped_at_once(session, signum: int | None) -> None:
    """A second Ctrl-C (or the first, outside the graceful window): exit now, the last checkpoint intact."""
    from gptiny_cli.manifest import saved_step

    if session.world.is_main:
        step = saved_step(session.run_dir)
        kept = "nothing was saved yet" if step is None else f"the checkpoint of iteration {step} is kept"
        err.print(f"[yellow]stopped at once[/]; {kept}. Resume with: {_resume_command(session)}",
                  highlight=False, soft_wrap=True)
    raise typer.Exit(_exit_code(signum))


def _show_training(session, should_stop):
    from rich.live import Live
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from gptiny_cli.progress import TrainView, plain_line, render
    from gptiny_cli.tblog import logged
    from gptiny_cli.train import EvalStats, Finished, run

    view = TrainView(session.config.train.max_iters)
    events = run(session, should_stop)
    if session.config.log.tensorboard:
        events = logged(events, session.run_dir, session.iter)
    if not out.is_terminal:
        last_print = 0.0
        for event in events:
            if isinstance(event, Finished):
                return event
            if isinstance(event, EvalStats) or time.monotonic() - last_print > 10:
                out.print(plain_line(event), highlight=False, soft_wrap=True)
                last_print = time.monotonic()
        raise AssertionError("training ended without a Finished event")
    bar = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=out)
    task = bar.add_task("train", total=view.max_iters, completed=session.iter)
    with Live(Group(bar, render(view)), console=out, refresh_per_second=4) as live:
        for event in events:
            if isinstance(event, Finished):
                return event
            view.update(event)
            bar.update(task, completed=event.iter)
            live.update(Group(bar, render(view)))
    raise AssertionError("training ended without a Finished event")


def _report_end(session, finished, signum: int | None) -> None:
    from gptiny_cli.curves import loss_curve
    from gptiny_cli.history import read_history

    run_dir = session.run_dir
    if finished.status == "interrupted":
        err.print(f"[yellow]interrupted[/] at iteration {finished.iter}; saved in {run_dir}. "
                  f"Resume with: {_resume_command(session)}", highlight=False, soft_wrap=True)
        raise typer.Exit(_exit_code(signum))
    final = f", whole-split val loss {finished.final_val_loss:.4f}" if finished.final_val_loss else ""
    stopped = " (stopped early: no improvement)" if finished.early_stopped else ""
    for line in loss_curve(read_history(run_dir)):
        out.print(line, highlight=False)
    out.print(f"done{stopped}: {finished.iter} iterations, best val loss {finished.best_val_loss:.4f}"
              f"{final}\nrun: {run_dir}\nsample: gptiny sample {run_dir} --tokens 500", highlight=False)


@app.command()
def inspect(
    target: Annotated[str, typer.Argument(help="A run directory, `latest`, or a TOML config.")] = "latest",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    runs_dir: RUNS_DIR = Path("runs"),
) -> None:
    """Show the parameter count and shapes of every module of a model.

    Examples: gptiny inspect configs/shakespeare.toml; gptiny inspect latest --json
    """
    from gptiny_cli.inspection import describe

    with _user_errors():
        report = describe(target, runs_dir)
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


# runs, plot and eval, and sample, live in their own modules; importing them registers them on ``app``.
from gptiny_cli import cli_runs, cli_sample  # noqa: E402, F401


def main() -> None:
    try:
        app()
    finally:
        # With torch imported, the interpreter's last garbage collection at exit walks its
        # hundreds of thousands of objects: 0.35 s of a 2 s `gptiny sample` (benchmarks/README.md).
        # Frozen, they are left to the operating system, which reclaims the memory anyway.
        gc.freeze()
