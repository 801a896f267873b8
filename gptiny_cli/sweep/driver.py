"""Driving a sweep: which trial this worker trains next, until the study has enough.

Interrupted trials of the sweep go first, continued in their own runs; then queued grid points, or new
points from the sampler until ``--trials`` are done or running. Several workers (processes, machines)
can drive one study at once: each takes the next trial from the shared database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from gptiny_cli.sweep.spec import grid_size
from gptiny_cli.sweep.study import Sweep, TrialEvent, optuna
from gptiny_cli.sweep.trial import train_trial


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


def _interrupted(sweep: Sweep) -> list[Any]:
    return [t for t in sweep.study.get_trials(deepcopy=False)
            if t.state.name == "RUNNING" and t.user_attrs.get("interrupted")]


def run(sweep: Sweep, should_stop: Callable[[], bool], device: str = "auto") -> Iterator[TrialEvent]:
    """Train trials until the study has its number or a stop is requested; yields each change of a trial.

    Interrupted trials of this sweep go first, their runs continued from their checkpoints.
    """
    opt = optuna()
    for frozen in _interrupted(sweep):
        # Optuna's ask() only starts new trials; a Trial over the stored id takes a running one up again.
        trial = opt.trial.Trial(sweep.study, frozen._trial_id)
        trial.set_user_attr("interrupted", False)
        yield from train_trial(sweep, trial, should_stop, device)
        if should_stop():
            return
    while _more(sweep) and not should_stop():
        yield from train_trial(sweep, sweep.study.ask(), should_stop, device)


def _running_elsewhere(sweep: Sweep) -> int:
    return sum(1 for t in sweep.study.get_trials(deepcopy=False)
               if t.state.name == "RUNNING" and not t.user_attrs.get("interrupted"))
