"""A training session: everything a run needs, built fresh (``setup``) or from disk (``resume``)."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from gptiny_cli import atomic, manifest, runs, state
from gptiny_cli.config import RunConfig, config_from_dict, parse_override, read_toml
from gptiny_cli.data import Corpus, load_corpus
from gptiny_cli.device import Precision, peak_flops, pick_device, resolve_precision
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
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    batch_gen: torch.Generator
    info: dict
    flops_per_token: float
    peak_flops: float
    iter: int = 0
    best_val: float = math.inf
    evals_since_best: int = 0
    elapsed_s: float = 0.0
    metrics: runs.MetricsLog | None = field(default=None, repr=False)
    lock: RunLock | None = field(default=None, repr=False)

    def close(self) -> None:
        """Release what the session holds open: the metrics file and the run lock."""
        if self.metrics:
            self.metrics.close()
        if self.lock:
            self.lock.release()


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


def _build(config: RunConfig, device: str, run_dir: Path, info: dict) -> Session:
    corpus = load_corpus(Path(config.data.path))
    check_config_against_data(config, corpus)
    dev = pick_device(device)
    precision = resolve_precision(config.train.dtype, dev)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(config.train.seed)
    model = build_model(config.model, corpus.vocab.size).to(dev)
    counts = count_params(model)
    info.update(device=str(dev), dtype=precision.name, torch_version=torch.__version__,
                parameters=counts.total, max_iters=config.train.max_iters)
    return Session(
        config=config,
        run_dir=run_dir,
        device=dev,
        precision=precision,
        corpus=corpus,
        model=model,
        forward=_maybe_compile(model, config.train.compile, dev),
        optimizer=make_optimizer(model, config.train, dev),
        scaler=torch.amp.GradScaler(dev.type) if precision.uses_scaler else None,
        batch_gen=torch.Generator().manual_seed(config.train.seed),
        info=info,
        flops_per_token=flops_per_token(config.model, counts.non_embedding),
        peak_flops=peak_flops(dev, precision.dtype),
    )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def setup(
    config: RunConfig, *, device: str = "auto", runs_dir: Path = Path("runs"), name: str = "run"
) -> Session:
    """Check inputs, build the model and optimizer, then create the run directory."""
    info = {"status": "running", "name": name, "started_at": _now(), "ended_at": None,
            "data": config.data.path, "iters": 0, "best_val_loss": None, "final_val_loss": None}
    # Build first: a bad config or missing data must not leave an empty run directory behind.
    session = _build(config, device, Path(), info)
    run_dir = session.run_dir = runs.create_run_dir(runs_dir, name)
    try:
        session.lock = RunLock(run_dir)
        manifest.preflight(run_dir, _checkpoint_bytes(session.model))
        atomic.write_text(run_dir / "config.toml", config.to_toml())
        atomic.write_json(run_dir / "vocab.json", session.corpus.vocab.to_json())
        runs.write_run_info(run_dir, info)
        session.metrics = runs.MetricsLog(run_dir / "metrics.jsonl")
    except (GptinyError, OSError) as err:
        session.close()
        shutil.rmtree(run_dir, ignore_errors=True)  # it is new and holds nothing of value
        if isinstance(err, OSError):
            raise GptinyError(f"cannot write to {run_dir}: {err.strerror}") from None
        raise
    return session


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


def resume(run_dir: Path, *, overrides: list[str] = (), device: str = "auto") -> Session:
    """Rebuild a session from a run directory, exactly where its last checkpoint left it.

    Raises AlreadyComplete, having changed nothing, when the run has nothing left to do.
    """
    run_dir = Path(run_dir)
    runs.require_files(run_dir)
    lock = RunLock(run_dir)
    try:
        config, changes = _resume_config(run_dir, list(overrides))
        info = runs.read_run_info(run_dir)
        session = _build(config, device, run_dir, info)
        session.lock = lock
        state.load_checkpoint(session)
        message = _finished_message(session, info, changes)
        if message:
            raise AlreadyComplete(message)
        _reopen(session, changes)
    except BaseException:
        lock.release()
        raise
    return session


def _reopen(session: Session, changes: dict[str, Any]) -> None:
    """Make the run directory ready to go on: debris of a killed save gone, config and run.json updated."""
    run_dir, info = session.run_dir, session.info
    manifest.preflight(run_dir, _checkpoint_bytes(session.model))
    try:
        manifest.recover(run_dir)
        if changes:
            atomic.write_text(run_dir / "config.toml", session.config.to_toml())
        _truncate_metrics(run_dir / "metrics.jsonl", session.iter)
        info.setdefault("resumes", []).append({"at_iter": session.iter, "time": _now(), "overrides": changes})
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
