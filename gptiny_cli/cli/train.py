"""``gptiny train``: one process, or several with ``--nproc``; a live table or plain lines; clean stops."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Group

from gptiny_cli.cli.common import RUNS_DIR, Which, err, out, user_errors


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
    init_from: Annotated[str | None, typer.Option(
        help="Fine-tune: a new run starting from this run's weights (and model keys), or `latest`.")] = None,
    init_checkpoint: Annotated[Which | None, typer.Option(
        help="With --init-from: its best weights or its last ones \\[default: best].", show_default=False)] = None,
    time_budget: Annotated[str | None, typer.Option("--time", help=(
        "A time budget, e.g. 90s, 10m or 1.5h: the schedule ends when it is spent, evaluations "
        "included (the same as --set train.max_minutes=M)."))] = None,
) -> None:
    """Train a model; weights, metrics and status go to a new directory under runs/.

    The same seed gives the same losses bit for bit on the same CPU; on CUDA and MPS up to rounding only.

    Examples: gptiny train configs/shakespeare-cpu.toml --set train.max_iters=200;
    gptiny train configs/shakespeare-cpu.toml --time 5m; gptiny train --resume latest;
    gptiny train configs/shakespeare.toml --nproc 2
    (or torchrun --nproc-per-node 2 -m gptiny_cli train configs/shakespeare.toml);
    gptiny train configs/shakespeare-cpu.toml --init-from runs/<id> --set data.path=data/mine
    """
    started = time.perf_counter()  # the start-up from here on counts against a time budget
    from gptiny_cli.training import distributed
    from gptiny_cli.training.budget import parse_minutes
    from gptiny_cli.training.launch import run_local
    from gptiny_cli.training.plan import TrainRequest

    if time_budget is not None:
        with user_errors():
            set_ = [*set_, f"train.max_minutes={parse_minutes(time_budget)!r}"]
    request = TrainRequest(config, set_, device, runs_dir, name, resume, run_dir, init_from,
                           init_checkpoint.value if init_checkpoint else None)
    if nproc is not None:
        with user_errors():
            status = run_local(nproc, request)
        raise typer.Exit(status)
    with user_errors():
        world = distributed.init(device)
    try:
        _train_here(request, world, started)
    finally:
        distributed.shutdown()


def _train_here(request, world, started: float) -> None:
    """Train in this process; with several processes, only rank 0 shows anything but errors."""
    from gptiny_cli.training.interrupt import GracefulStop
    from gptiny_cli.training.launch import build_session
    from gptiny_cli.training.plan import plan
    from gptiny_cli.training.resume import AlreadyComplete

    with user_errors(f"rank {world.rank}: " if world.size > 1 else ""):
        try:
            session = build_session(plan(request, world), world)
        except AlreadyComplete as done:
            if world.is_main:
                err.print(str(done), highlight=False, soft_wrap=True)
            return
        if world.is_main:
            err.print(_describe(session), highlight=False)
        with GracefulStop() as stop:
            try:
                finished = (_show_training(session, stop.requested, started) if world.is_main
                            else _drain(session, stop.requested, started))
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
            f"({t.batch_size} × {t.grad_accum} accumulated × {world.size} process{'es' if world.size > 1 else ''})"
            f"{_parent(session.info)}")


def _parent(info: dict) -> str:
    parent = info.get("init_from")
    return f"; fine-tuned from the {parent['checkpoint']} weights of {parent['run']}" if parent else ""


def _drain(session, should_stop, started: float):
    from gptiny_cli.training.loop import run

    *_, finished = run(session, should_stop, started=started)
    return finished


def _resume_command(session) -> str:
    nproc = f" --nproc {session.world.size}" if session.world.size > 1 else ""
    return f"gptiny train --resume {session.run_dir}{nproc}"


def _exit_code(signum: int | None) -> int:
    import signal

    return 143 if signum == signal.SIGTERM else 130


def _stopped_at_once(session, signum: int | None) -> None:
    """A second Ctrl-C (or the first, outside the graceful window): exit now, the last checkpoint intact."""
    from gptiny_cli.store.manifest import saved_step

    if session.world.is_main:
        step = saved_step(session.run_dir)
        kept = "nothing was saved yet" if step is None else f"the checkpoint of iteration {step} is kept"
        err.print(f"[yellow]stopped at once[/]; {kept}. Resume with: {_resume_command(session)}",
                  highlight=False, soft_wrap=True)
    raise typer.Exit(_exit_code(signum))


def _show_training(session, should_stop, started: float):
    from rich.live import Live
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from gptiny_cli.report.progress import TrainView, plain_line, render
    from gptiny_cli.report.tblog import logged
    from gptiny_cli.store.runs import val_bits
    from gptiny_cli.training.loop import EvalStats, Finished, run

    t = session.config.train
    view = TrainView(t.max_iters, t.max_minutes * 60 or None, iter=session.iter, elapsed_s=session.elapsed_s,
                     baselines=session.corpus.meta.get("baselines"), bits_per_nat=val_bits(session.info, 1.0)[0])
    events = run(session, should_stop, started=started)
    if session.config.log.tensorboard:
        events = logged(events, session.run_dir, session.iter)
    if not out.is_terminal:
        last_print = 0.0
        for event in events:
            if isinstance(event, Finished):
                return event
            if isinstance(event, EvalStats) or time.monotonic() - last_print > 10:
                out.print(plain_line(event, view.baselines, view.bits_per_nat), highlight=False, soft_wrap=True)
                last_print = time.monotonic()
        raise AssertionError("training ended without a Finished event")
    bar = Progress(TextColumn("training"), BarColumn(), TextColumn("{task.fields[label]}"), TimeRemainingColumn(),
                   console=out)
    done, total = view.progress()
    task = bar.add_task("train", total=total, completed=done, label=view.progress_label())
    with Live(Group(bar, render(view)), console=out, refresh_per_second=4) as live:
        for event in events:
            if isinstance(event, Finished):
                return event
            view.update(event)
            bar.update(task, completed=view.progress()[0], label=view.progress_label())
            live.update(Group(bar, render(view)))
    raise AssertionError("training ended without a Finished event")


def _report_end(session, finished, signum: int | None) -> None:
    from gptiny_cli.report.curves import loss_curve
    from gptiny_cli.report.progress import baseline_note
    from gptiny_cli.store.history import read_history
    from gptiny_cli.store.runs import val_bits

    run_dir = session.run_dir
    if finished.status == "interrupted":
        err.print(f"[yellow]interrupted[/] at iteration {finished.iter}; saved in {run_dir}. "
                  f"Resume with: {_resume_command(session)}", highlight=False, soft_wrap=True)
        raise typer.Exit(_exit_code(signum))
    final = ""
    if finished.final_val_loss:
        bpc, bpb = val_bits(session.info, finished.final_val_loss)
        per = " per token" if session.corpus.vocab.kind != "char" else ""
        in_bits = f" = {bpc:.3f} bits/char" + (f", {bpb:.3f} bits/byte" if bpb is not None else "")
        final = (f", whole-split val loss {finished.final_val_loss:.4f} nats{per}{in_bits}"
                 f"{baseline_note(session.corpus.meta.get('baselines'))}")
    stopped = " (stopped early: no improvement)" if finished.early_stopped else ""
    for line in loss_curve(read_history(run_dir)):
        out.print(line, highlight=False)
    out.print(f"done{stopped}: {finished.iter} iterations, best val loss {finished.best_val_loss:.4f}"
              f"{final}\nrun: {run_dir}\nsample: gptiny sample {run_dir} --tokens 500", highlight=False)
