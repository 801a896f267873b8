"""Driving a sweep: which trial this worker trains next, until the study has enough.

Interrupted trials of the sweep go first, continued in their own runs; then queued grid points, or new
points from the sampler until ``--trials`` are done or running. Several workers (processes, machines)
can drive one study at once: each claims the next trial from the shared database under a lock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from filelock import FileLock

from gptiny_cli.sweep.spec import grid_size
from gptiny_cli.sweep.study import Sweep, TrialEvent, optuna
from gptiny_cli.sweep.trial import train_trial

CLAIM_LOCK = "claim.lock"


def _target(sweep: Sweep) -> int:
    return sweep.trials or grid_size(sweep.params)


def _more(sweep: Sweep) -> bool:
    """Whether this worker should start another trial: a grid point is still queued, or too few were tried."""
    trials = sweep.study.get_trials(deepcopy=False)
    if sweep.search == "grid":
        return any(t.state.name == "WAITING" for t in trials)
    return _finished(sweep) + _running_elsewhere(sweep) < _target(sweep)


def _finished(sweep: Sweep) -> int:
    states = sweep.study.trials
    return sum(1 for t in states if t.state.name in ("COMPLETE", "PRUNED", "FAIL"))


def _running_elsewhere(sweep: Sweep) -> int:
    return sum(1 for t in sweep.study.get_trials(deepcopy=False)
               if t.state.name == "RUNNING" and not t.user_attrs.get("interrupted"))


def _interrupted(sweep: Sweep) -> list[Any]:
    return [t for t in sweep.study.get_trials(deepcopy=False)
            if t.state.name == "RUNNING" and t.user_attrs.get("interrupted")]


def claim(sweep: Sweep):
    """The next trial for this worker, or None when the study has enough.

    Optuna hands out a queued point by reading it as waiting and then marking it running; a server
    database locks the row in between, SQLite does not, so two workers could both take one point and
    the second ``tell`` would fail. The lock file in the sweep directory makes the look and the take
    one step for every worker that shares the directory.
    """
    opt = optuna()
    with FileLock(sweep.dir / CLAIM_LOCK):
        for frozen in _interrupted(sweep):
            # Optuna's ask() only starts new trials; a Trial over the stored id takes a running one up again.
            trial = opt.trial.Trial(sweep.study, frozen._trial_id)
            trial.set_user_attr("interrupted", False)
            return trial
        return sweep.study.ask() if _more(sweep) else None


def run(sweep: Sweep, should_stop: Callable[[], bool], device: str = "auto") -> Iterator[TrialEvent]:
    """Train trials until the study has its number or a stop is requested; yields each change of a trial.

    Interrupted trials of this sweep go first, their runs continued from their checkpoints.
    """
    while not should_stop():
        trial = claim(sweep)
        if trial is None:
            return
        yield from train_trial(sweep, trial, should_stop, device)
