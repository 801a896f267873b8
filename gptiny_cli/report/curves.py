"""Loss curves as text: a few block-character lines for the terminal after training (pure functions)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from gptiny_cli.store.history import LossHistory

BLOCKS = "▁▂▃▄▅▆▇█"


def bucket(points: Sequence[tuple[int, float]], first: int, last: int, width: int) -> list[float | None]:
    """The mean of the points falling in each of ``width`` equal iteration ranges over [first, last].

    Ranges without points between two that have some are interpolated linearly, as a line chart
    joins its points (evaluations are sparse); after the last point the last value holds, and
    before the first there is nothing (None).
    """
    span = last - first + 1
    sums, counts = [0.0] * width, [0] * width
    for it, value in points:
        if math.isfinite(value) and first <= it <= last:
            column = (it - first) * width // span
            sums[column] += value
            counts[column] += 1
    columns: list[float | None] = [total / count if count else None for total, count in zip(sums, counts, strict=True)]
    known = [i for i, value in enumerate(columns) if value is not None]
    for left, right in zip(known, known[1:], strict=False):
        a, b = columns[left], columns[right]
        for i in range(left + 1, right):
            columns[i] = a + (b - a) * (i - left) / (right - left)
    if known:
        columns[known[-1] + 1:] = [columns[known[-1]]] * (width - known[-1] - 1)
    return columns


def sparkline(columns: Sequence[float | None], lo: float, hi: float) -> str:
    """One block character per column, from ▁ at ``lo`` to █ at ``hi``; a space where there is no value."""
    top = len(BLOCKS) - 1
    chars = []
    for value in columns:
        if value is None:
            chars.append(" ")
        elif hi <= lo:
            chars.append(BLOCKS[top // 2])
        else:
            level = round((value - lo) / (hi - lo) * top)
            chars.append(BLOCKS[min(max(level, 0), top)])
    return "".join(chars)


def loss_curve(history: LossHistory, width: int = 48) -> list[str]:
    """Train and val loss over iterations on one shared scale, as a few lines of text.

    Train is every logged step's batch loss together with the evaluations' train estimates
    (the only train figure at iteration 0), val is every evaluation; its best counts the weights'
    average (train.ema_decay) where it did better. Empty before the first evaluation.
    """
    if not history.evals:
        return []
    train = sorted(history.steps + [(it, tr) for it, tr, _ in history.evals])
    val = [(it, v) for it, _, v in history.evals]
    first = min(it for it, _ in train + val)
    last = max(it for it, _ in train + val)
    width = max(1, min(width, last - first + 1))
    rows = {"train": bucket(train, first, last, width), "val": bucket(val, first, last, width)}
    shown = [v for columns in rows.values() for v in columns if v is not None]
    lo, hi = min(shown), max(shown)
    (_, train_first, val_first), (_, train_last, val_last) = history.evals[0], history.evals[-1]
    best = min(v for _, v in val + history.averages)
    whose = ", the weights' average" if best < min(v for _, v in val) else ""
    details = {"train": f"{train_first:.4f} → {train_last:.4f}",
               "val": f"{val_first:.4f} → {val_last:.4f} (best {best:.4f}{whose})"}
    lines = [f"{label:<5} │{sparkline(columns, lo, hi)}│ {details[label]}" for label, columns in rows.items()]
    lines.append(f"{'':<5}  iter {first} … {last}; ▁ is {lo:.3f}, █ is {hi:.3f}")
    return lines
