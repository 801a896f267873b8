"""Past runs as plain data: the ``gptiny runs`` table and the loss series behind plots and curves.

Reads only ``run.json`` and ``metrics.jsonl``, never weights, and never imports torch, so that
listing and plotting answer at once.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from gptiny_cli.errors import GptinyError
from gptiny_cli.store.runs import read_run_info, run_dirs, val_bits


@dataclass(frozen=True)
class RunRecord:
    """One row of ``gptiny runs``; a field the run never recorded is None."""

    id: str  # the directory's path below the runs directory: a name, or <sweep-id>/<name> in a sweep
    path: str
    name: str | None
    status: str
    iters: int | None
    max_iters: int | None
    best_val_loss: float | None
    parameters: int | None
    device: str | None
    started_at: str | None
    duration_s: float | None
    parent: str | None = None  # the run a fine-tuned run started from (its directory name)
    best_val_bpc: float | None = None  # the best val loss in bits per character, for any tokenizer
    tokenizer: str = "char"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _duration(info: dict[str, Any], now: datetime) -> float | None:
    """Training time when the run recorded it; else wall time from start to end (or to now)."""
    if isinstance(info.get("train_seconds"), (int, float)):
        return float(info["train_seconds"])
    start = _parse_time(info.get("started_at"))
    if start is None:
        return None
    end = _parse_time(info.get("ended_at")) or (now if info.get("status") == "running" else None)
    return (end - start).total_seconds() if end else None


def _record(run_dir: Path, now: datetime, runs_dir: Path) -> RunRecord:
    try:
        info = read_run_info(run_dir)
    except GptinyError:
        info = {"status": "damaged"}  # one broken run.json must not hide the others
    if not isinstance(info, dict):
        info = {"status": "damaged"}

    def number(key: str, kind: type) -> Any:
        value = info.get(key)
        return kind(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def text(key: str) -> str | None:
        value = info.get(key)
        return value if isinstance(value, str) else None

    init_from = info.get("init_from")
    parent = init_from.get("run") if isinstance(init_from, dict) else None
    return RunRecord(
        id=run_dir.relative_to(runs_dir).as_posix(), path=str(run_dir), name=text("name"),
        status=text("status") or "unknown",
        iters=number("iters", int), max_iters=number("max_iters", int),
        best_val_loss=number("best_val_loss", float), parameters=number("parameters", int),
        device=text("device"), started_at=text("started_at"), duration_s=_duration(info, now),
        parent=Path(parent).name if isinstance(parent, str) else None,
        best_val_bpc=val_bits(info, info.get("best_val_loss"))[0], tokenizer=text("tokenizer") or "char",
    )


def list_runs(runs_dir: Path, now: datetime | None = None) -> list[RunRecord]:
    """Every run directory (one holding run.json) under ``runs_dir``, a sweep's included, newest first."""
    runs_dir = Path(runs_dir)
    now = now or datetime.now(timezone.utc)
    records = [_record(p, now, runs_dir) for p in run_dirs(runs_dir)]
    oldest = datetime.min.replace(tzinfo=timezone.utc)
    return sorted(records, key=lambda r: (_parse_time(r.started_at) or oldest, r.id), reverse=True)


@dataclass
class LossHistory:
    """A run's losses by iteration: every logged step, and every evaluation."""

    steps: list[tuple[int, float]] = field(default_factory=list)  # (iter, training-batch loss)
    evals: list[tuple[int, float, float]] = field(default_factory=list)  # (iter, train loss, val loss)
    averages: list[tuple[int, float]] = field(default_factory=list)  # (iter, val loss of the weights' average)


def read_history(run_dir: Path) -> LossHistory:
    """Parse ``metrics.jsonl``, skipping a line torn by a crash rather than failing on it."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise GptinyError(f"{run_dir} has no metrics.jsonl; is it a gptiny run directory?")
    history = LossHistory()
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            if "val_loss" in row:
                history.evals.append((int(row["iter"]), float(row["train_loss"]), float(row["val_loss"])))
                if "ema_val_loss" in row:
                    history.averages.append((int(row["iter"]), float(row["ema_val_loss"])))
            elif "loss" in row:
                history.steps.append((int(row["iter"]), float(row["loss"])))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    return history
