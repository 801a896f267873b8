"""Going on with a run: a session rebuilt from its run directory where the last checkpoint left it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from gptiny_cli.config import RunConfig, config_from_dict, parse_override, read_toml
from gptiny_cli.errors import GptinyError
from gptiny_cli.store import atomic, manifest, runs
from gptiny_cli.store.runlock import RunLock
from gptiny_cli.training import distributed, state
from gptiny_cli.training.distributed import World
from gptiny_cli.training.session import Session, build, checkpoint_bytes, now, same_run


class AlreadyComplete(GptinyError):
    """Resuming a run that has nothing left to do; not a failure."""


def _resume_config(run_dir: Path, overrides: list[str]) -> tuple[RunConfig, dict[str, Any]]:
    """The run's config with the ``--set`` overrides a resume allows, and those overrides."""
    raw = read_toml(run_dir / "config.toml")
    changes = {}
    for text in overrides:
        section, key, value = parse_override(text)
        if f"{section}.{key}" not in manifest.RESUMABLE:
            allowed = ", ".join(sorted(manifest.RESUMABLE))
            raise GptinyError(f"--set {section}.{key} cannot change when resuming; allowed: {allowed}")
        table = raw.setdefault(section, {})
        if not isinstance(table, dict):
            raise GptinyError(f"{run_dir}/config.toml is damaged: [{section}] is not a table")
        table[key] = value
        changes[f"{section}.{key}"] = value
    return config_from_dict(raw), changes


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


def fit_world(config: RunConfig, info: dict, world_size: int, run_dir: Path) -> RunConfig:
    """The config with ``grad_accum`` set so that the run's global batch stays what it was.

    A step takes ``grad_accum × world_size`` micro-batches; on a different number of
    processes each takes an equal share of them, which is possible when they divide evenly.
    """
    t, before = config.train, int(info.get("world_size", 1))
    if before == world_size:
        return config
    micro = t.grad_accum * before
    if micro % world_size:
        divisors = [str(n) for n in range(1, micro + 1) if micro % n == 0]
        options = " or ".join([", ".join(divisors[:-1]), divisors[-1]] if len(divisors) > 1 else divisors)
        raise GptinyError(
            f"{run_dir} takes {micro} micro-batches of {t.batch_size} sequences per step (a global batch of "
            f"{micro * t.batch_size}), which {world_size} processes cannot share evenly; resume it on "
            f"{options} processes, or choose a new batch with --set train.grad_accum=N"
        )
    return replace(config, train=replace(t, grad_accum=micro // world_size))


def resume(
    run_dir: Path, *, overrides: list[str] = (), device: str = "auto", world: World | None = None,
    config: RunConfig | None = None,
) -> Session:
    """Rebuild a session from a run directory, exactly where its last checkpoint left it.

    ``config``, when given, must be the run's own (``same_run``) and replaces ``overrides``.
    On a different number of processes the global batch stays the same (``fit_world``) unless
    the overrides set ``train.grad_accum``. Every rank reads the run directory (it must be on a
    filesystem they all see); rank 0 alone locks it and writes to it. Raises AlreadyComplete,
    having changed nothing, when the run has nothing left to do.
    """
    world = world or distributed.single(device)
    run_dir = Path(run_dir)
    runs.require_files(run_dir)
    lock = RunLock(run_dir) if world.is_main else None
    try:
        if config is None:
            config, changes = _resume_config(run_dir, list(overrides))
        else:
            changes = same_run(run_dir, config)
        info = runs.read_run_info(run_dir)
        if "train.grad_accum" not in changes:
            fitted = fit_world(config, info, world.size, run_dir)
            if fitted is not config:
                config, changes = fitted, {**changes, "train.grad_accum": fitted.train.grad_accum}
        session = build(config, world, run_dir, info)
        session.lock = lock
        state.load_checkpoint(session)
        message = _finished_message(session, info, changes)
        if message:
            raise AlreadyComplete(message)
        world.barrier()  # every rank has read the checkpoint before rank 0 tidies the directory
        if world.is_main:
            _reopen(session, changes)
    except BaseException:
        if lock:
            lock.release()
        raise
    return session


def _reopen(session: Session, changes: dict[str, Any]) -> None:
    """Make the run directory ready to go on: debris of a killed save gone, config and run.json updated."""
    run_dir, info, world = session.run_dir, session.info, session.world
    manifest.preflight(run_dir, checkpoint_bytes(session.model))
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
