"""``gptiny sweep``: a study over config keys, each trial a normal run; a live table, then a leaderboard."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gptiny_cli.cli.common import RUNS_DIR, err, out, user_errors


def sweep(
    config: Annotated[Path | None, typer.Argument(help="The TOML run config the trials start from.")] = None,
    param: Annotated[list[str], typer.Option("--param", help=(
        "A swept key: KEY=a,b,c (values), KEY=2..6 (integers) or KEY=log:1e-4..1e-2 (log-uniform)."))] = [],  # noqa: B006
    time_budget: Annotated[str | None, typer.Option("--time", help="Each run's time budget, e.g. 30s or 2m.")] = None,
    seeds: Annotated[int, typer.Option(help="Runs per point, with seeds seed, seed+1, …")] = 1,
    trials: Annotated[int | None, typer.Option(help="Points to try \\[default: the whole grid].")] = None,
    search: Annotated[str | None, typer.Option(
        help="grid, random or tpe \\[default: grid when every key is discrete, else tpe].")] = None,
    prune: Annotated[bool, typer.Option(help="Stop trials whose val loss is worse than the median's.")] = False,
    storage: Annotated[str | None, typer.Option(
        help="The study's database URL \\[default: sqlite in the sweep directory].")] = None,
    resume: Annotated[Path | None, typer.Option(help="Go on with this sweep directory (or join it).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    runs_dir: RUNS_DIR = Path("runs"),
) -> None:
    """Sweep config keys: each trial is a run under runs/<sweep-id>/; results.jsonl, a leaderboard and best.toml.

    Examples: gptiny sweep configs/shakespeare-cpu.toml --param train.learning_rate=1e-3,2e-3,4e-3
    --seeds 2 --time 2m; gptiny sweep configs/shakespeare-cpu.toml --param model.n_layer=2..6 --prune;
    gptiny sweep --resume runs/<sweep-id>
    """
    from gptiny_cli.sweep import study

    with user_errors():
        if resume is not None:
            if config is not None or param:
                raise_both()
            swept = study.reopen(resume, storage)
        else:
            if config is None:
                from gptiny_cli.errors import GptinyError

                raise GptinyError("give a CONFIG and --param KEY=SPEC, or --resume SWEEP")
            swept = study.create(config, param, runs_dir, seeds, search, trials, time_budget, prune, storage, None)
    err.print(f"sweep {swept.dir}: {swept.search} search, {swept.seeds} seed(s) per point, study {swept.storage}",
              highlight=False, soft_wrap=True)
    stopped = _run(swept, device)
    _report_end(swept, stopped)


def raise_both() -> None:
    from gptiny_cli.errors import GptinyError

    raise GptinyError("--resume SWEEP keeps its own config and --param; give either those or --resume")


def _run(swept, device: str) -> int | None:
    """Train the trials, shown live on a terminal or as plain lines; the stop signal's number, if stopped."""
    from rich.live import Live

    from gptiny_cli.report.sweep_table import plain_line, render
    from gptiny_cli.sweep import driver, results
    from gptiny_cli.training.interrupt import GracefulStop

    rows = {r["trial"]: r for r in results.rows(swept.study)}
    with user_errors(), GracefulStop() as stop:
        events = driver.run(swept, stop.requested, device)
        try:
            if not out.is_terminal:
                for event in events:
                    if event.row["state"] != "running":
                        out.print(plain_line(event.row), highlight=False, soft_wrap=True)
            else:
                with Live(render(list(rows.values())), console=out, refresh_per_second=4) as live:
                    for event in events:
                        rows[event.row["trial"]] = event.row
                        live.update(render(sorted(rows.values(), key=lambda r: r["trial"])))
        except KeyboardInterrupt:
            err.print(f"[yellow]stopped at once[/]; resume with: gptiny sweep --resume {swept.dir}",
                      highlight=False, soft_wrap=True)
            raise typer.Exit(130) from None
    return stop.signum


def _report_end(swept, signum: int | None) -> None:
    import signal

    from gptiny_cli.report.sweep_table import render_leaderboard
    from gptiny_cli.sweep import results

    results.write(swept)
    board = results.leaderboard(results.rows(swept.study))
    if board:
        out.print(render_leaderboard(board))
        out.print(f"best: {swept.dir / 'best.toml'} (gptiny train {swept.dir / 'best.toml'})", highlight=False)
    out.print(f"results: {swept.dir / 'results.jsonl'}", highlight=False)
    if signum is not None:
        err.print(f"[yellow]interrupted[/]; resume with: gptiny sweep --resume {swept.dir}", highlight=False,
                  soft_wrap=True)
        raise typer.Exit(143 if signum == signal.SIGTERM else 130)
