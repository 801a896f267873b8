"""A training session: everything a run needs, built fresh (``setup``) or from disk (``resume``)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn as nn

from gptiny_cli import atomic, runs, state
from gptiny_cli.checkpoint import load_weights
from gptiny_cli.config import RunConfig, config_from_dict, parse_override, read_toml
from gptiny_cli.data import Corpus, load_corpus
from gptiny_cli.device import Precision, peak_flops, pick_device, resolve_precision
from gptiny_cli.errors import GptinyError
from gptiny_cli.model import build_model
from gptiny_cli.optim import make_optimizer
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
    session.run_dir = runs.create_run_dir(runs_dir, name)
    atomic.write_text(session.run_dir / "config.toml", config.to_toml())
    atomic.write_json(session.run_dir / "vocab.json", session.corpus.vocab.to_json())
    runs.write_run_info(session.run_dir, info)
    session.metrics = runs.MetricsLog(session.run_dir / "metrics.jsonl")
    return session


# Keys that may change when a run is resumed; anything else would make it a different run.
RESUMABLE_KEYS = {"max_iters", "eval_interval", "eval_iters", "log_interval",
                  "checkpoint_interval", "patience"}


def _resume_config(run_dir: Path, overrides: list[str]) -> RunConfig:
    raw = read_toml(run_dir / "config.toml")
    for text in overrides:
        section, key, value = parse_override(text)
        if section != "train" or key not in RESUMABLE_KEYS:
            allowed = ", ".join(f"train.{k}" for k in sorted(RESUMABLE_KEYS))
            raise GptinyError(f"--set {section}.{key} cannot change when resuming; allowed: {allowed}")
        raw["train"][key] = value
    return config_from_dict(raw)


def resume(run_dir: Path, *, overrides: list[str] = (), device: str = "auto") -> Session:
    """Rebuild a session from a run directory, exactly where its last checkpoint left it."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.toml").is_file():
        raise GptinyError(f"{run_dir} has no config.toml; it is not a run that can be resumed")
    config = _resume_config(run_dir, list(overrides))
    info = runs.read_run_info(run_dir)
    session = _build(config, device, run_dir, info)
    load_weights(run_dir / runs.WEIGHTS["last"], session.model)
    state.load_state(session)
    if session.iter >= config.train.max_iters or info.get("early_stopped"):
        raise AlreadyComplete(
            f"{run_dir} already finished at iteration {session.iter}; to train further, add "
            f"--set train.max_iters=N with N > {session.iter}"
        )
    _truncate_metrics(run_dir / "metrics.jsonl", session.iter)
    info.setdefault("resumes", []).append({"at_iter": session.iter, "time": _now()})
    info.update(status="running", ended_at=None, early_stopped=False)
    runs.write_run_info(run_dir, info)
    session.metrics = runs.MetricsLog(run_dir / "metrics.jsonl")
    return session


def _truncate_metrics(path: Path, last_iter: int) -> None:
    """Drop rows logged after the checkpoint, which the resumed run will log again."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("iter", 0) <= last_iter:
                kept.append(line)
        except ValueError:
            continue  # a line torn by a crash
    atomic.write_text(path, "".join(f"{line}\n" for line in kept))
