"""One trial: its values suggested by the study, then one normal run per seed, trained in this process.

Each run goes through ``training`` as ``gptiny train --run-dir`` would: a new directory, or the
one an interrupted trial left, continued from its checkpoint. The first seed reports each val loss
to the trial, and a trial the pruner gives up on stops cleanly: the run is saved and marked
``pruned``. A run that fails (a value the model cannot take, a NaN) fails its trial with the reason;
the sweep goes on.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from gptiny_cli.errors import GptinyError
from gptiny_cli.store import runs
from gptiny_cli.sweep import results
from gptiny_cli.sweep.study import Sweep, TrialEvent, mean_std, optuna


def _overrides(sweep: Sweep, values: dict[str, Any], seed: int) -> list[str]:
    from gptiny_cli.config import toml_value
    from gptiny_cli.training.budget import parse_minutes

    sets = [f"{key}={toml_value(value)}" for key, value in values.items()]
    sets.append(f"train.seed={seed}")
    if sweep.time:
        sets.append(f"train.max_minutes={parse_minutes(sweep.time)!r}")
    return sets


def _seeds(sweep: Sweep) -> list[int]:
    base = sweep.base.get("train", {}).get("seed", 1337)
    return [base + k for k in range(sweep.seeds)]


def train_trial(sweep: Sweep, trial, should_stop: Callable[[], bool], device: str) -> Iterator[TrialEvent]:
    """Train every seed of ``trial`` and tell the study how it went; yields the trial's row as it changes."""
    opt = optuna()
    values = {p.key: p.suggest(trial) for p in sweep.params}
    row = {"trial": trial.number, "values": values, "state": "running", "seeds": [], "steps": 0, "val": None}
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    yield TrialEvent(dict(row))
    pruned = False
    for k, seed in enumerate(_seeds(sweep)):
        run_dir = sweep.dir / f"t{trial.number:03d}-s{k}"
        report = trial if k == 0 and sweep.prune else None
        try:
            outcome = yield from _train_run(sweep, values, seed, run_dir, report, should_stop, row, device)
        except KeyboardInterrupt:  # a second Ctrl-C: the run keeps its last checkpoint, --resume takes it up
            trial.set_user_attr("interrupted", True)
            raise
        except GptinyError as err:
            row.update(state="failed", reason=str(err))
            trial.set_user_attr("reason", str(err))
            sweep.study.tell(trial, state=opt.trial.TrialState.FAIL)
            results.write(sweep)
            yield TrialEvent(dict(row))
            return
        if outcome == "interrupted":
            trial.set_user_attr("interrupted", True)
            row["state"] = "interrupted"
            yield TrialEvent(dict(row))
            return
        if outcome == "pruned":
            pruned = True
            break
    trial.set_user_attr("seed_vals", row["seeds"])
    trial.set_user_attr("steps", row["steps"])
    trial.set_user_attr("parameters", row.get("parameters"))
    if pruned:
        row["state"] = "pruned"
        sweep.study.tell(trial, state=opt.trial.TrialState.PRUNED)
    else:
        row["state"] = "done"
        sweep.study.tell(trial, row["val"])
    results.write(sweep)
    yield TrialEvent(dict(row))


def _train_run(sweep: Sweep, values: dict[str, Any], seed: int, run_dir: Path, report, should_stop,
               row: dict[str, Any], device: str):
    """One run of the trial (a generator returning completed, pruned or interrupted)."""
    from gptiny_cli.training import distributed
    from gptiny_cli.training.launch import build_session
    from gptiny_cli.training.loop import EvalStats, Finished
    from gptiny_cli.training.loop import run as train
    from gptiny_cli.training.plan import TrainRequest, plan
    from gptiny_cli.training.resume import AlreadyComplete

    request = TrainRequest(sweep.config, _overrides(sweep, values, seed), device, sweep.dir, None, None, run_dir)
    world = distributed.single(device)
    try:
        session = build_session(plan(request, world), world)
    except AlreadyComplete:
        return _record(row, runs.read_run_info(run_dir))
    prune = {"asked": False}
    per_char = runs.tokens_per_char(session.info)  # trials on other tokenizers (a swept data.path) compare

    def stop() -> bool:
        return should_stop() or prune["asked"]

    finished = None
    for event in train(session, stop):
        if isinstance(event, EvalStats):
            row["steps"] = max(row["steps"], event.iter)
            if not math.isfinite(event.val_loss):
                raise GptinyError(f"val loss is {event.val_loss} at iteration {event.iter}")
            if report is not None:
                report.report(event.val_loss * per_char, event.iter)
                prune["asked"] = report.should_prune()
            row["val_now"] = event.val_loss * per_char
            yield TrialEvent(dict(row))
        elif isinstance(event, Finished):
            finished = event
    info = runs.read_run_info(run_dir)
    if prune["asked"] and not should_stop():
        info["status"] = "pruned"
        runs.write_run_info(run_dir, info)
        return "pruned"
    if finished is None or finished.status == "interrupted":
        return "interrupted"
    return _record(row, info)


def _record(row: dict[str, Any], info: dict[str, Any]) -> str:
    val = info.get("final_val_loss") or info.get("best_val_loss")
    if val is None or not math.isfinite(val):
        raise GptinyError(f"the run ended without a val loss ({info.get('status')})")
    row["seeds"].append(val * runs.tokens_per_char(info))  # nats per character, whatever the tokenizer
    row["steps"] = max(row["steps"], info.get("iters", 0))
    row["parameters"] = info.get("parameters")
    row["val"], row["std"] = mean_std(row["seeds"])
    return "completed"
