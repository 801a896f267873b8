"""How training looks: pure functions from statistics to rich tables and plain log lines."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rich.table import Table

from gptiny_cli.training.loop import EvalStats, Finished, StepStats

LN2 = math.log(2)


@dataclass
class TrainView:
    """What the display knows: every evaluation so far, the latest logged step, how far the run is."""

    max_iters: int
    budget_s: float | None = None  # a time budget: progress is then time, not steps
    evals: list[EvalStats] = field(default_factory=list)
    last_step: StepStats | None = None
    iter: int = 0
    elapsed_s: float = 0.0
    baselines: dict | None = None  # the data's unigram and bigram val losses (meta.json), if it has them
    bits_per_nat: float | None = 1 / LN2  # val bits per character per nat per token (store.runs.val_bits)

    def update(self, event: StepStats | EvalStats | Finished) -> None:
        if isinstance(event, EvalStats):
            self.evals.append(event)
        elif isinstance(event, StepStats):
            self.last_step = event
        if isinstance(event, (StepStats, EvalStats)):
            self.iter, self.elapsed_s = event.iter, event.elapsed_s

    def progress(self) -> tuple[float, float]:
        """How far the run is, and of how much: seconds of its time budget, or steps."""
        if self.budget_s:
            return min(self.elapsed_s, self.budget_s), self.budget_s
        return self.iter, self.max_iters

    def progress_label(self) -> str:
        if self.budget_s:
            return f"{_duration(self.elapsed_s)}/{_duration(self.budget_s)} (iter {self.iter})"
        return f"{self.iter}/{self.max_iters}"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def baseline_note(baselines: dict | None) -> str:
    """``; bigram baseline 2.48, unigram 3.35`` (nats) beside a val loss, or nothing for older data."""
    try:
        return f"; bigram baseline {baselines['bigram']['nats']:.2f}, unigram {baselines['unigram']['nats']:.2f}"
    except (KeyError, TypeError):
        return ""


def render(view: TrainView) -> Table:
    """A row per evaluation; the caption carries the latest step's loss and speed."""
    note = baseline_note(view.baselines)
    title = f"gptiny train (val baselines: {note[2:]})" if note else "gptiny train"
    table = Table(title=title, title_justify="left", expand=False)
    averaged = any(e.average_val_loss is not None for e in view.evals)
    for name in ("iter", "train loss", "val loss", "val bits/char", *(("ema val",) if averaged else ()),
                 "epoch", "elapsed"):
        table.add_column(name, justify="right")
    best = min((_lowest(e) for e in view.evals), default=None)
    for e in view.evals:
        style = "bold green" if _lowest(e) == best else None
        at = str(e.iter) if view.budget_s else f"{e.iter}/{view.max_iters}"
        ema = () if not averaged else ("" if e.average_val_loss is None else f"{e.average_val_loss:.4f}",)
        table.add_row(at, f"{e.train_loss:.4f}", f"{e.val_loss:.4f}", _bits(e.val_loss, view.bits_per_nat), *ema,
                      f"{e.epoch:.2f}", _duration(e.elapsed_s), style=style)
    if view.last_step:
        s = view.last_step
        table.caption = (f"iter {s.iter}: loss {s.loss:.4f}  lr {s.lr:.2e}  "
                         f"{s.tokens_per_sec:,.0f} tok/s  MFU {_mfu(s.mfu)}")
    return table


def _lowest(e: EvalStats) -> float:
    """The val loss of the better of the weights and their average."""
    return e.val_loss if e.average_val_loss is None else min(e.val_loss, e.average_val_loss)


def _bits(loss: float, bits_per_nat: float | None) -> str:
    return "-" if bits_per_nat is None else f"{loss * bits_per_nat:.3f}"


def plain_line(event: StepStats | EvalStats, baselines: dict | None = None,
               bits_per_nat: float | None = 1 / LN2) -> str:
    """One log line for a non-terminal stdout."""
    if isinstance(event, EvalStats):
        ema = "" if event.average_val_loss is None else f" ema val {event.average_val_loss:.4f}"
        return (f"eval iter {event.iter}: train {event.train_loss:.4f} val {event.val_loss:.4f} "
                f"({_bits(event.val_loss, bits_per_nat)} bits/char{baseline_note(baselines)}){ema} "
                f"epoch {event.epoch:.2f} "
                f"elapsed {_duration(event.elapsed_s)}{' best' if event.is_best else ''}")
    return (f"iter {event.iter}: loss {event.loss:.4f} lr {event.lr:.2e} "
            f"{event.tokens_per_sec:,.0f} tok/s mfu {_mfu(event.mfu)}")


def _mfu(mfu: float | None) -> str:
    return "unknown" if mfu is None else f"{mfu:.1%}"
