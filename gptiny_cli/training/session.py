"""A training session: everything a run needs, and a new run's directory opened for it.

``build`` makes the session's objects (data, model, optimizer) from a config; ``open_new``
does that for a new run of a ``Plan`` and then creates its directory (``resume.reopen``
goes on with an existing one).
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn as nn

from gptiny_cli.config import RunConfig
from gptiny_cli.data import Corpus, TargetText, load_corpus
from gptiny_cli.errors import GptinyError
from gptiny_cli.hardware import peaks
from gptiny_cli.hardware.device import Precision, auto_compile, resolve_precision
from gptiny_cli.hardware.memory import keep_freed_memory
from gptiny_cli.hardware.setup import place, use_device
from gptiny_cli.model import build_model, count_params
from gptiny_cli.store import atomic, manifest, runs
from gptiny_cli.store.runlock import RunLock
from gptiny_cli.training import distributed, finetune
from gptiny_cli.training.distributed import World
from gptiny_cli.training.optim import make_optimizer
from gptiny_cli.training.plan import Plan, plan_new
from gptiny_cli.training.schedule import flops_per_token


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
    peak_flops: float | None  # None: a GPU whose peak is unknown, so MFU is too
    iter: int = 0
    best_val: float = math.inf
    evals_since_best: int = 0
    elapsed_s: float = 0.0
    # How long the latest evaluation took and a step takes (a running mean): a time budget's
    # plan for the time left (training.budget).
    eval_s: float = 0.0
    step_s: float = 0.0
    average: nn.Module | None = None  # the weights' moving average, once begun (training.average)
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
    wanted = auto_compile(device)[0] if setting == "auto" else bool(setting)
    return torch.compile(model) if wanted else model


def build(config: RunConfig, world: World, run_dir: Path, info: dict) -> Session:
    corpus = load_corpus(Path(config.data.path))
    check_config_against_data(config, corpus)
    dev = use_device(world.device, tf32=True)
    precision = resolve_precision(config.train.dtype, dev)
    if dev.type == "cpu":
        keep_freed_memory()  # a step reuses its activations' memory instead of faulting it in again
    torch.manual_seed(config.train.seed)  # the same initial weights on every rank
    model = place(build_model(config.model, corpus.vocab.size), dev)
    counts = count_params(model)
    t = config.train
    info.update(tokenizer=corpus.vocab.kind, vocab_size=corpus.vocab.size,
                val_text=TargetText.of_corpus(corpus).to_json())
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
        flops_per_token=flops_per_token(config.model, counts.non_embedding, corpus.vocab.size),
        peak_flops=peaks.peak(dev, precision.dtype).flops,
    )


def now() -> str:
    return datetime.now(timezone.utc).isoformat()


def setup(
    config: RunConfig, *, device: str = "auto", runs_dir: Path = Path("runs"), name: str = "run",
    world: World | None = None, run_dir: Path | None = None,
) -> Session:
    """A new run of ``config``: ``open_new`` of its plan (``world`` replaces ``device``)."""
    return open_new(plan_new(config, name, runs_dir, run_dir), world or distributed.single(device))


def open_new(planned: Plan, world: World) -> Session:
    """Check inputs, build the model and optimizer, then create the run directory.

    ``planned.run_dir`` names the directory instead of a new one under ``runs_dir``. With several
    processes every rank builds the same session; rank 0 alone creates the directory, writes to
    it and tells the others where it is.
    """
    config, run_dir = planned.config, planned.run_dir
    info = {"status": "running", "name": planned.name, "started_at": now(), "ended_at": None,
            "data": config.data.path, "iters": 0, "best_val_loss": None, "final_val_loss": None}
    if world.run_id:
        info["elastic_run_id"] = world.run_id  # how a restarted job finds its run again
    # Build first: a bad config or missing data must not leave an empty run directory behind.
    session = build(config, world, Path(), info)
    if planned.parent is not None:  # fine-tuning: the parent's weights, and run.json says whose from the start
        finetune.grow_into(session.model, planned.parent.state)
        info["init_from"] = planned.parent.record()
    if world.is_main:
        session.run_dir = (runs.create_run_dir(planned.runs_dir, planned.name) if run_dir is None
                           else _claim(Path(run_dir)))
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
        manifest.preflight(run_dir, checkpoint_bytes(session))
        atomic.write_text(run_dir / "config.toml", session.config.to_toml())
        vocab = session.corpus.vocab
        atomic.write_text(run_dir / vocab.filename, vocab.serialized())
        runs.write_run_info(run_dir, session.info)
        session.metrics = runs.MetricsLog(run_dir / "metrics.jsonl")
    except (GptinyError, OSError) as err:
        session.close()
        if fresh:
            shutil.rmtree(run_dir, ignore_errors=True)  # it is new and holds nothing of value
        if isinstance(err, OSError):
            raise GptinyError(f"cannot write to {run_dir}: {err.strerror}") from None
        raise


def _claim(run_dir: Path) -> Path:
    """A named run directory without a checkpoint (``plan_new`` checked what it holds), created if new."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise GptinyError(f"cannot create run directory {run_dir}: {err.strerror}") from None
    return run_dir


def checkpoint_bytes(s: Session) -> int:
    """The tensor bytes a checkpoint of ``s`` writes at most: the weights twice (the best ones a copy
    where hard links fail), the optimizer's state and, with ``train.ema_decay``, the weights' average.

    AdamW keeps two moments and a float32 step count per tensor, Muon one momentum per matrix.
    """
    def size(p: torch.Tensor) -> int:
        return p.numel() * p.element_size()

    weights = sum(size(p) for p in s.model.parameters())  # a tied tensor once, as it is saved
    optimizer = sum(size(p) if group.get("muon") else 2 * size(p) + 4
                    for group in s.optimizer.param_groups for p in group["params"])
    return 2 * weights + optimizer + (weights if s.config.train.ema_decay > 0 else 0)
