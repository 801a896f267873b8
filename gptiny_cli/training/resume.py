"""Going on with a run: a session rebuilt from its run directory where the last checkpoint left it."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from gptiny_cli.config import RunConfig
from gptiny_cli.errors import GptinyError
from gptiny_cli.store import atomic, manifest, runs
from gptiny_cli.store.runlock import RunLock
from gptiny_cli.training import distributed, state
from gptiny_cli.training.distributed import World
from gptiny_cli.training.plan import Plan, plan_continue, plan_resume
from gptiny_cli.training.session import Session, build, checkpoint_bytes, now


class AlreadyComplete(GptinyError):
    """Resuming a run that has nothing left to do; not a failure."""


def _finished_message(session: Session, info: dict, changes: dict[str, Any]) -> str | None:
    """Why a completed run has nothing left to do, or None when the overrides ask for more."""
    if info.get("status") != "completed":
        return None  # even at max_iters, an unfinished run still has its final evaluation to do
    t, at = session.config.train, session.iter
    if at >= t.max_iters:
        return (f"{session.run_dir} already finished at iteration {at}; to train further, add "
                f"--set train.max_iters=N with N > {at}")
    if t.max_minutes and not info.get("early_stopped") and "train.max_minutes" not in changes:
        return (f"{session.run_dir} already used its time budget of {t.max_minutes:g} minutes; to train "
                f"further, give a longer one: --time DURATION (or --set train.max_minutes=M, M > {t.max_minutes:g})")
    if info.get("early_stopped") and not changes.keys() & {"train.patience", "train.max_iters"}:
        return (f"{session.run_dir} stopped early at iteration {at} (no better val loss in {t.patience} "
                f"evaluations); to train further, add --set train.patience=N with N > {t.patience} "
                "(0: never stop early)")
    return None


def resume(
    run_dir: Path, *, overrides: list[str] = (), device: str = "auto", world: World | None = None,
    config: RunConfig | None = None,
) -> Session:
    """Rebuild a session from a run directory, exactly where its last checkpoint left it.

    ``reopen`` of its plan: ``plan_resume`` with the overrides, or ``plan_continue`` when
    ``config`` is given (it must be the run's own, and replaces ``overrides``).
    """
    world = world or distributed.single(device)
    planned = (plan_resume(run_dir, overrides, world.size) if config is None
               else plan_continue(run_dir, config, world.size))
    return reopen(planned, world)


def reopen(planned: Plan, world: World) -> Session:
    """The session of a planned resume or continue, loaded from the run's last checkpoint.

    Every rank reads the run directory (it must be on a filesystem they all see); rank 0
    alone locks it and writes to it. Raises AlreadyComplete, having changed nothing, when the
    run has nothing left to do.
    """
    run_dir, changes = planned.run_dir, dict(planned.changes)
    lock = RunLock(run_dir) if world.is_main else None
    try:
        info = copy.deepcopy(dict(planned.info))
        session = build(planned.config, world, run_dir, info)
        session.lock = lock
        state.load_checkpoint(session)
        message = _finished_message(session, info, changes)
        if message:
            raise AlreadyComplete(message)
        world.barrier()  # every rank has read the checkpoint before rank 0 tidies the directory
        if world.is_main:
            _go_on(session, changes)
    except BaseException:
        if lock:
            lock.release()
        raise
    return session


def _go_on(session: Session, changes: dict[str, Any]) -> None:
    """Make the run directory ready to go on: debris of a killed save gone, config and run.json updated."""
    run_dir, info, world = session.run_dir, session.info, session.world
    manifest.preflight(run_dir, checkpoint_bytes(session))
    try:
        manifest.recover(run_dir)
        if changes:
            atomic.write_text(run_dir / "config.toml", session.config.to_toml())
        _truncate_metrics(run_dir / "metrics.jsonl", session.iter)
        entry = {"at_iter": session.iter, "time": now(), "overrides": changes, "world_size": world.size}
        if world.restart:
            entry["restart"] = world.restart
        info.setdefault("resumes", []).append(entry)
        info.pop("error", None)
        info.update(status="running", ended_at=None, early_stopped=False,
                    max_iters=session.config.train.max_iters, data=session.config.data.path)
        runs.write_run_info(run_dir, info)
        session.metrics = runs.MetricsLog(run_dir / "metrics.jsonl")
    except OSError as err:
        raise GptinyError(f"cannot write to {run_dir}: {err.strerror}") from None


def _truncate_metrics(path: Path, last_iter: int) -> None:
    """Drop rows logged after the checkpoint, which the resumed run will log again."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("iter", 0) <= last_iter:
                kept.append(line)
        except (ValueError, AttributeError):
            continue  # a line torn by a crash
    atomic.write_text(path, "".join(f"{line}\n" for line in kept))
