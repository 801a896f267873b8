"""A run's clock and its time budget: time spent, the fraction of the budget used, what still fits.

With ``train.max_minutes`` the learning-rate schedule runs on the fraction of the budget spent
instead of the step (``schedule.learning_rate``'s ``fraction``). The budget covers the training
loop, every evaluation and checkpoint in it, and the final whole-split evaluation. The start-up
before the loop (imports, loading the data, building the model), when the command measured it,
is held back from the budget, so that ``time gptiny train`` ends within ``max_minutes``; it is
not training time, so the schedule and the saved clock leave it out. Training stops
when the next step would end inside the time held back for the last evaluation and the
whole-split one, both estimated from the duration of the latest evaluation, so the schedule's
last step gets the final learning rate and the run ends when its time is up.

Resuming goes on from the time saved in the checkpoint (``Session.elapsed_s``), so the schedule
continues from the saved fraction with the time that is left. With several processes every
rank takes the mean of their clocks, so all of them make the same decisions at the same step.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from gptiny_cli.errors import GptinyError

if TYPE_CHECKING:
    from gptiny_cli.training.session import Session

Clock = Callable[[], float]
_UNITS = {"s": 1 / 60, "m": 1.0, "h": 60.0, "": 1.0}


def parse_minutes(text: str) -> float:
    """``90s``, ``10m``, ``1h`` or ``1.5h`` (a bare number is minutes) as minutes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(s|m|h|)\s*", text.lower())
    if not match or float(match.group(1)) <= 0:
        raise GptinyError(f"--time {text!r} is invalid: give a duration such as 90s, 10m, 1h or 1.5h")
    return float(match.group(1)) * _UNITS[match.group(2)]


def whole_split_ratio(s: Session) -> float:
    """How long the final whole-split evaluation takes, as a multiple of one ``estimate_loss``.

    Both are batches of the same shape; the whole split runs on rank 0 alone, while the
    estimate's ``2 × eval_iters`` batches are shared out over the ranks.
    """
    t, block = s.config.train, s.config.model.block_size
    windows = max(1, (len(s.corpus.val) - 1) // block)
    batches = math.ceil(windows / t.batch_size) + 1  # the last, shorter window
    return batches * s.world.size / (2 * t.eval_iters)


class Budget:
    """The loop's clock: ``tick`` reads it once per step; the questions below use that reading."""

    def __init__(self, s: Session, clock: Clock = time.perf_counter, startup_s: float = 0.0) -> None:
        """``startup_s``: how long this process took to reach the loop, held back from the budget."""
        minutes = s.config.train.max_minutes
        self.session, self.clock = s, clock
        if minutes and s.world.size > 1:  # every rank must plan with the same budget
            startup_s = s.world.sum([startup_s])[0] / s.world.size
        self.total_s = minutes * 60 - startup_s if minutes else None
        self.ratio = whole_split_ratio(s) if minutes else 0.0
        self._before, self._start = s.elapsed_s, clock()
        self._step_start: float | None = None
        self._eval_had_average = s.average is not None

    def tick(self) -> None:
        """Read the clock into ``session.elapsed_s``; with a budget, the same reading on every rank."""
        s = self.session
        s.elapsed_s = self._before + self.clock() - self._start
        if self.total_s is not None and s.world.size > 1:
            means = [v / s.world.size for v in s.world.sum([s.elapsed_s, s.eval_s, s.step_s])]
            s.elapsed_s, s.eval_s, s.step_s = means

    def _end_of_training(self) -> float:
        """When the last step must have ended: the budget less the last two evaluations.

        With an average of the weights the last estimate covers two models (the weights and their
        average), also when the latest evaluation, before the average began, covered one; the
        whole-split evaluation covers one, the best.
        """
        s = self.session
        one_model = s.eval_s / (2 if self._eval_had_average else 1)
        averaging = s.config.train.ema_decay > 0 and s.config.train.ema_start < 1
        return self.total_s - one_model * ((2 if averaging else 1) + self.ratio)

    def up(self) -> bool:
        """Whether the next step would end after the time left for training."""
        s = self.session
        return self.total_s is not None and s.elapsed_s + s.step_s > self._end_of_training()

    def eval_fits(self) -> bool:
        """Whether an evaluation now leaves time for at least one more step before the end."""
        s = self.session
        return self.total_s is None or s.elapsed_s + s.eval_s + s.step_s <= self._end_of_training()

    def step_fraction(self) -> float | None:
        """The fraction of the training time at which the next step ends (None: no budget).

        It is 1 for the step expected to be the last that fits, which then trains at the
        schedule's final rate.
        """
        if self.total_s is None:
            return None
        s, end = self.session, max(self._end_of_training(), 1e-9)
        ends_at = s.elapsed_s + s.step_s
        return 1.0 if ends_at + s.step_s > end else min(1.0, ends_at / end)

    def step_began(self) -> None:
        self._step_start = self.clock()

    def step_ended(self) -> None:
        """Fold the step's duration into the running mean that plans the steps left."""
        s, seconds = self.session, self.clock() - self._step_start
        s.step_s = seconds if s.step_s == 0 else 0.8 * s.step_s + 0.2 * seconds

    @contextlib.contextmanager
    def evaluation(self) -> Iterator[None]:
        """Time an evaluation (its duration sizes the reserve), then read the clock again."""
        began = self.clock()
        self._eval_had_average = self.session.average is not None
        yield
        self.session.eval_s = self.clock() - began
        self.tick()


def fraction_spent(s: Session) -> float | None:
    """The share of the budget a session has used, ignoring the reserve (None: no budget)."""
    minutes = s.config.train.max_minutes
    return min(1.0, s.elapsed_s / (minutes * 60)) if minutes else None
