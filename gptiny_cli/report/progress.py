"""How training looks: pure functions from statistics to rich tables and plain log lines."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rich.table import Table

from gptiny_cli.training.loop import EvalStats, Finished, StepStats

LN2 = math.log(2)


@dataclass
class TrainView:
    """What the display knows: every evaluation so far and the latest logged step."""

    max_iters: int
    evals: list[EvalStats] = field(default_factory=list)
    last_step: StepStats | None = None

    def update(self, event: StepStats | EvalStats | Finished) -> None:
        if isinstance(event, EvalStats):
            self.evals.append(event)
        elif isinstance(event, StepStats):
            self.last_step = event


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def render(view: TrainView) -> Table:
    """A row per evaluation; the caption carries the latest step's loss and speed."""
    table = Table(title="gptiny train", title_justify="left", expand=False)
    for name in ("iter", "train loss", "val loss", "val bits/char", "epoch", "elapsed"):
        table.add_column(name, justify="right")
    best = min((e.val_loss for e in view.evals), default=None)
    for e in view.evals:
        style = "bold green" if e.val_loss == best else None
        table.add_row(f"{e.iter}/{view.max_iters}", f"{e.train_loss:.4f}", f"{e.val_loss:.4f}",
                      f"{e.val_loss / LN2:.3f}", f"{e.epoch:.2f}", _duration(e.elapsed_s), style=style)
    if view.last_step:
        s = view.last_step
        table.caption = (f"iter {s.iter}: loss {s.loss:.4f}  lr {s.lr:.2e}  "
                         f"{s.tokens_per_sec:,.0f} tok/s  MFU {_mfu(s.mfu)}")
    return table


def plain_line(event: StepStats | EvalStats) -> str:
    """One log line for a non-terminal stdout."""
    if isinstance(event, EvalStats):
        return (f"eval iter {event.iter}: train {event.train_loss:.4f} val {event.val_loss:.4f} "
                f"({event.val_loss / LN2:.3f} bits/char) epoch {event.epoch:.2f} "
                f"elapsed {_duration(event.elapsed_s)}{' best' if event.is_best else ''}")
    return (f"iter {event.iter}: loss {event.loss:.4f} lr {event.lr:.2e} "
            f"{event.tokens_per_sec:,.0f} tok/s mfu {_mfu(event.mfu)}")


def _mfu(mfu: float | None) -> str:
    return "unknown" if mfu is None else f"{mfu:.1%}"
