"""A training session: everything a run needs, built fresh (``setup``) or from disk (``resume``)."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from gptiny_cli import atomic, distributed, manifest, runs, state
from gptiny_cli.config import RunConfig, config_from_dict, parse_override, read_toml
from gptiny_cli.data import Corpus, load_corpus
from gptiny_cli.device import Precision, peak_flops, resolve_precision
from gptiny_cli.distributed import World
from gptiny_cli.errors import GptinyError
from gptiny_cli.model import build_model
from gptiny_cli.optim import make_optimizer
from gptiny_cli.runlock import RunLock
from gptiny_cli.schedule import flops_per_token
from gptiny_cli.summary import count_params


class AlreadyComplete(GptinyError):
    """Resuming a run that has nothing left to do; not a failure."""


@dataclass
class Session:
    """Everything ``setup`` prepared; ``run`` mutates it as training advances."""

    config: RunConfig
    run_dir: Path
    device: torch.device
    precision: Precision
    corpus: Corpus
    model: nn.Module  # the module whose weights are saved
    forward: nn.Module  # the module that runs (compiled or not)
    ddp: nn.Module | None  # ``forward`` wrapped in DistributedDataParallel when several processes train
    world: World
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    info: dict
    flops_per_token: float
    peak_flops: float
    iter: int = 0
    best_val: float = math.inf
    evals_since_best: int = 0
    elapsed_s: float = 0.0
    metrics: runs.MetricsLog | None = field(default=None, repr=False)  # rank 0's only
    lock: RunLock | None = field(default=None, repr=False)  # rank 0's only

    def close(self) -> None:
        """Release what the session holds open: the metrics file, the run lock and the DDP wrapper."""
        if self.metrics:
            self.metrics.close()
        if self.lock:
            self.lock.release()
        self.ddp = None  # see distributed.shutdown


def check_config_against_data(config: RunConfig, corpus: Corpus) -> None:
    """Rules that need the prepared data: every batch window must fit in each split."""
    block = config.model.block_size
    n_train, n_val = len(corpus.train), len(corpus.val)
    if block >= n_val or block >= n_train:
        raise GptinyError(
            f"model.block_size = {block} is invalid: it must be smaller than the validation split "
            f"({n_val} tokens) and the training split ({n_train}) of {corpus.directory}; lower "
            "model.block_size or prepare a larger corpus"
        )


def _maybe_compile(model: nn.Module, setting: bool | str, device: torch.device) -> nn.Module:
    # On CPU torch.compile was measured to gain at most a few percent for tens of seconds of
    # compiling, so "auto" compiles on CUDA only.
    wanted = device.type == "cuda" if setting == "auto" else bool(setting)
    return torch.compile(model) if wanted else model


def _build(config: RunConfig, world: World, run_dir: Path, info: dict) -> Session:
    corpus = load_corpus(Path(config.data.path))
    check_config_against_data(config, corpus)
    dev = world.device
    precision = resolve_precision(config.train.dtype, dev)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(config.train.seed)  # the same initial weights on every rank
    model = build_model(config.model, corpus.vocab.size).to(dev)
    counts = count_params(model)
    t = config.train
    info.update(device=str(dev), dtype=precision.name, torch_version=torch.__version__,
                parameters=counts.total, max_iters=t.max_iters, world_size=world.size,
                grad_accum=t.grad_accum, global_batch=t.batch_size * t.grad_accum * world.size)
    forward = _maybe_compile(model, t.compile, dev)
    return Session(
        config=config,
        run_dir=run_dir,
        device=dev,
        precision=precision,
        corpus=corpus,
        model=model,
        forward=forward,
        ddp=distributed.wrap(forward, world),
        world=world,
        optimizer=make_optimizer(model, t, dev),
        scaler=torch.amp.GradScaler(dev.type) if precision.uses_scaler else None,
        info=info,
        flops_per_token=flops_per_token(config.model, counts.non_embedding),
        peak_flops=peak_flops(dev, precision.dtype),
    )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def setup(
    config: RunConfig, *, device: str = "auto", runs_dir: Path = Path("runs"), name: str = "run",
    world: World | None = None, run_dir: Path | None = None,
) -> Session:
    """Check inputs, build the model and optimizer, then create the run directory.

    ``run_dir`` names the directory instead of a new one under ``runs_dir``. With several
    processes every rank builds the same session (``world`` replaces ``device``); rank 0
    alone creates the directory, writes to it and tells the others where it is.
    """
    world = world or distributed.single(device)
    info = {"status": "running", "name": name, "started_at": _now(), "ended_at": None,
            "data": config.data.path, "iters": 0, "best_val_loss": None, "final_val_loss": None}
    if world.run_id:
        info["elastic_run_id"] = world.run_id  # how a restarted job finds its run again
    # Build first: a bad config or missing data must not leave an empty run directory behind.
    session = _build(config, world, Path(), info)
    if world.is_main:
        session.run_dir = runs.create_run_dir(runs_dir, name) if run_dir is None else _claim(Path(run_dir), config)
        _open_new(session, fresh=run_dir is None)
    session.run_dir = Path(world.broadcast(str(session.run_dir)))
    return session


def _open_new(session: Session, fresh: bool) -> None:
    """Lock the new run's directory and write its first files."""
    run_dir = session.run_dir
    try:
        session.lock = RunLock(run_dir)
        if not fresh:
            (run_dir / "metrics.jsonl").unlink(missing_ok=True)  # of a start that failed before its first save
        manifest.preflight(run_dir, _checkpoint_bytes(session.model))
        atomic.write_text(run_dir / "config.toml", session.config.to_toml())
        atomic.write_json(run_dir / "vocab.json", session.corpus.vocab.to_json())
        runs.write_run_info(run_dir, session.info)
        session.metrics = runs.MetricsLog(run_dir / "metrics.jsonl")
    except (GptinyError, OSError) as err:
        session.close()
        if fresh:
            shutil.rmtree(run_dir, ignore_errors=True)  # it is new and holds nothing of value
        if isinstance(err, OSError):
            raise GptinyError(f"cannot write to {run_dir}: {err.strerror}") from None
        raise


def _claim(run_dir: Path, config: RunConfig) -> Path:
    """A named run directory without a checkpoint: created, or taken over from a start that failed early."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise GptinyError(f"cannot create run directory {run_dir}: {err.strerror}") from None
    if (run_dir / "config.toml").is_file():
        same_run(run_dir, config)
    elif any(run_dir.iterdir()):
        raise GptinyError(f"{run_dir} is not empty and holds no gptiny run; name a new or empty run directory")
    return run_dir


def same_run(run_dir: Path, config: RunConfig) -> dict[str, Any]:
    """The resumable keys in which ``config`` differs from the run's stored config, or an error
    naming the others: with those, ``config`` would train a different run."""
    stored = config_from_dict(read_toml(run_dir / "config.toml"))
    ours, theirs = manifest.identity(config), manifest.identity(stored)
    changed = [f"{key} ({theirs.get(key)!r} there, {ours.get(key)!r} here)"
               for key in sorted(set(ours) | set(theirs)) if ours.get(key) != theirs.get(key)]
    if changed:
        raise GptinyError(f"{run_dir} holds a run with a different config: {', '.join(changed)}; "
                          "name another run directory or give the same config")
    now, before = _flat(config), _flat(stored)
    return {key: now[key] for key in sorted(manifest.RESUMABLE & now.keys()) if now[key] != before.get(key)}


def _flat(config: RunConfig) -> dict[str, Any]:
    return {f"{section}.{key}": value for section, values in config.to_dict().items() for key, value in values.items()}


def _checkpoint_bytes(model: nn.Module) -> int:
    """Disk a checkpoint takes at most: the weights twice (best and last) and two optimizer moments."""
    return 4 * sum(p.numel() * p.element_size() for p in model.parameters())


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
        session = _build(config, world, run_dir, info)
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
    manifest.preflight(run_dir, _checkpoint_bytes(session.model))
    try:
        manifest.recover(run_dir)
        if changes:
            atomic.write_text(run_dir / "config.toml", session.config.to_toml())
        _truncate_metrics(run_dir / "metrics.jsonl", session.iter)
        entry = {"at_iter": session.iter, "time": _now(), "overrides": changes, "world_size": world.size}
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
