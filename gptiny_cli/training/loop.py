"""Training: ``setup`` builds everything a run needs, ``run`` is the loop and yields what happens.

The loop never prints. It yields StepStats, EvalStats and finally Finished; the
CLI turns them into a live display. Everything that must outlive the process
(weights, training state, metrics, run.json) is written as it goes.

With several processes (``Session.world``) every rank runs the same loop in lockstep:
gradients are averaged by DDP, reported losses are averaged over ranks, and only rank 0
writes files; the others yield the same events, which nobody shows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

import torch
import torch.nn as nn

from gptiny_cli.data import get_windows, step_seed
from gptiny_cli.hardware.setup import place, to_device
from gptiny_cli.model import build_model
from gptiny_cli.store import manifest, runs, tensorfile
from gptiny_cli.training import average, distributed, faults, state
from gptiny_cli.training.budget import Budget, Clock
from gptiny_cli.training.losses import batch_loss, estimate_loss, full_split_loss
from gptiny_cli.training.schedule import scheduled_lr
from gptiny_cli.training.session import Session


@dataclass
class StepStats:
    iter: int
    loss: float
    lr: float
    tokens_per_sec: float
    mfu: float | None  # None where the device's peak FLOP/s is unknown
    elapsed_s: float = 0.0


@dataclass
class EvalStats:
    iter: int
    train_loss: float
    val_loss: float
    elapsed_s: float
    epoch: float
    is_best: bool
    average_val_loss: float | None = None  # the val loss of the weights' average (train.ema_decay)


@dataclass
class Finished:
    status: str  # completed | interrupted
    iter: int
    best_val_loss: float
    final_val_loss: float | None
    early_stopped: bool = False


Event = StepStats | EvalStats | Finished


def train_step(s: Session, poison: bool = False, fraction: float | None = None) -> tuple[torch.Tensor, float]:
    """One optimizer step over ``grad_accum`` micro-batches on each rank; returns (this rank's loss, lr).

    Micro-step k of rank r is micro-batch r × grad_accum + k of the step: its data and its
    dropout are seeded by that index (``step_seed``), whoever computes it. Its (B, T+1) window
    is drawn on the CPU and sliced into inputs and targets on the device. ``poison`` makes
    the loss NaN, as a diverging run's would be (fault injection for tests). ``fraction`` is the
    share of a time budget spent when this step ends (``Budget.step_fraction``).
    """
    t, m = s.config.train, s.config.model
    lr = scheduled_lr(t, s.iter, fraction)
    for group in s.optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]
    total = torch.zeros((), device=s.device)
    module = s.ddp or s.forward
    for k in range(t.grad_accum):
        index = s.world.rank * t.grad_accum + k
        gen = torch.Generator().manual_seed(step_seed(t.seed, s.iter, index, "batch"))
        window = to_device(get_windows(s.corpus.train, t.batch_size, m.block_size, gen), s.device)
        torch.manual_seed(step_seed(t.seed, s.iter, index, "dropout"))
        with distributed.sync_gradients(s.ddp, now=k == t.grad_accum - 1):
            loss = batch_loss(module, window[:, :-1], window[:, 1:], s.precision) / t.grad_accum
            if poison:
                loss = loss * math.nan
            (s.scaler.scale(loss) if s.scaler else loss).backward()
        total += loss.detach()
    if s.scaler:
        s.scaler.unscale_(s.optimizer)
    if t.grad_clip > 0:
        nn.utils.clip_grad_norm_(s.model.parameters(), t.grad_clip)
    if s.scaler:
        s.scaler.step(s.optimizer)
        s.scaler.update()
    else:
        s.optimizer.step()
    s.optimizer.zero_grad(set_to_none=True)
    s.iter += 1
    return total, lr


def _save(s: Session, best: nn.Module | None, watch: faults.LossWatch) -> None:
    """Commit a checkpoint (with ``best`` as the best weights, if given), never of damaged weights."""
    watch.check(s)
    finite = torch.stack([p.isfinite().all() for p in s.model.parameters()]).all()
    if not finite.item():
        raise faults.diverged(s, s.iter)
    if not s.world.is_main:
        return
    try:
        state.save_checkpoint(s, best)
        s.info.update(iters=s.iter, best_val_loss=None if math.isinf(s.best_val) else s.best_val)
        runs.write_run_info(s.run_dir, s.info)
    except OSError as err:
        raise faults.cannot_write(s, err) from None


def _evaluate(s: Session, watch: faults.LossWatch, budget: Budget) -> EvalStats:
    watch.check(s)
    with budget.evaluation():
        train_loss, val_loss = estimate_loss(s)
        average_val = estimate_loss(s, s.average, ("val",))[0] if s.average is not None else None
    if not math.isfinite(val_loss):
        raise faults.diverged(s, s.iter)
    # The best weights are the training ones or their average, whichever did better.
    lowest, weights = (average_val, s.average) if average_val is not None and average_val < val_loss else (
        val_loss, s.model)
    is_best = lowest < s.best_val
    if is_best:
        s.best_val, s.evals_since_best = lowest, 0
    else:
        s.evals_since_best += 1
    tokens_seen = s.iter * _tokens_per_step(s)
    stats = EvalStats(s.iter, train_loss, val_loss, s.elapsed_s, tokens_seen / len(s.corpus.train), is_best,
                      average_val)
    _write_metrics(s, {"iter": s.iter, "train_loss": train_loss, "val_loss": val_loss,
                       **({} if average_val is None else {"ema_val_loss": average_val}),
                       "elapsed_s": round(s.elapsed_s, 3), "epoch": round(stats.epoch, 4)})
    _save(s, weights if is_best else None, watch)
    return stats


def _tokens_per_step(s: Session) -> int:
    """Tokens in one optimizer step over all ranks: the global batch times the block size."""
    t = s.config.train
    return t.batch_size * t.grad_accum * s.world.size * s.config.model.block_size


def _write_metrics(s: Session, row: dict) -> None:
    if s.metrics is not None:  # rank 0's only
        s.metrics.write(row)


def _log_step(s: Session, loss: torch.Tensor, lr: float, tokens: int, window_start: float,
              watch: faults.LossWatch, clock: Clock = time.perf_counter) -> StepStats:
    watch.check(s)
    local = loss.item()
    # Only now, with the loss read, has the device finished the window's steps; a clock read
    # before would miss the work still queued on a GPU and overstate tokens/s and MFU.
    seconds = clock() - window_start
    value = s.world.mean(local)  # the loss of the whole global batch
    tps = tokens / seconds if seconds > 0 else 0.0
    # MFU is per device: the job's throughput over the peak of all its devices.
    mfu = tps * s.flops_per_token / (s.peak_flops * s.world.size) if s.peak_flops else None
    stats = StepStats(s.iter, value, lr, tps, mfu, s.elapsed_s)
    _write_metrics(s, {"iter": s.iter, "loss": value, "lr": lr,
                       "tokens_per_sec": round(tps, 1), "mfu": None if mfu is None else round(mfu, 4)})
    return stats


def run(s: Session, should_stop: Callable[[], bool] = lambda: False,
        clock: Clock = time.perf_counter, started: float | None = None) -> Iterator[Event]:
    """The training loop, timed by ``clock`` (seconds); ``started``: the ``clock`` reading when the
    command began, whose start-up a time budget holds back. Marks the run failed (or interrupted)
    if anything escapes it."""
    try:
        startup_s = 0.0 if started is None else max(0.0, clock() - started)
        yield from _loop(s, should_stop, Budget(s, clock, startup_s))
    except BaseException as err:
        if s.info["status"] != "running":  # closed after Finished: the run already has its status
            raise
        clearer = faults.record_end(s, err)
        if clearer is err:
            raise
        raise clearer from None
    finally:
        s.close()


def _loop(s: Session, should_stop: Callable[[], bool], budget: Budget) -> Iterator[Event]:
    t, clock = s.config.train, budget.clock
    tokens_per_step = _tokens_per_step(s)
    resumed_at = s.iter if s.iter > 0 else None
    watch, nan_at = faults.LossWatch(s.device), faults.nan_at()
    early_stopped, interrupted = False, False
    window_start, window_steps = clock(), 0
    while True:
        budget.tick()
        due = (s.iter % t.eval_interval == 0 and budget.eval_fits()) or s.iter == t.max_iters or budget.up()
        if due and s.iter != resumed_at:
            yield _evaluate(s, watch, budget)  # which saves
            window_start, window_steps = clock(), 0
            if t.patience and s.evals_since_best >= t.patience:
                early_stopped = True
        elif s.iter % t.checkpoint_interval == 0 and 0 < s.iter != resumed_at:  # also if the evaluation did not fit
            _save(s, None, watch)
        if s.iter >= t.max_iters or early_stopped or budget.up():
            break
        if _stop_agreed(s, should_stop):
            interrupted = True
            _save(s, None, watch)
            break
        budget.step_began()
        fraction = budget.step_fraction()
        loss, lr = train_step(s, poison=s.iter + 1 == nan_at, fraction=fraction)
        average.update(s, fraction)
        budget.step_ended()
        faults.kill_if_asked(s)
        watch.record(loss, s.iter)
        window_steps += 1
        if s.iter % t.log_interval == 0:
            yield _log_step(s, loss, lr, tokens_per_step * window_steps, window_start, watch, clock)
            window_start, window_steps = clock(), 0
    yield _finish(s, interrupted, early_stopped, budget)


def _stop_agreed(s: Session, should_stop: Callable[[], bool]) -> bool:
    """Whether to stop before this step, the same answer on every rank.

    Agreeing costs a collective and, on GPUs, a wait for the device, so several processes ask
    only on logging steps: a stop request then takes effect within ``log_interval`` steps.
    """
    if s.world.size == 1:
        return should_stop()
    return s.iter % s.config.train.log_interval == 0 and s.world.any(should_stop())


def _finish(s: Session, interrupted: bool, early_stopped: bool, budget: Budget) -> Finished:
    final = None
    if not interrupted and s.world.is_main:
        best = place(build_model(s.config.model, s.corpus.vocab.size), s.device)
        tensorfile.load_weights(manifest.locate(s.run_dir) / manifest.BEST, best)
        c = s.config
        final = full_split_loss(best, s.corpus.val, c.model.block_size, c.train.batch_size,
                                s.device, s.precision)
    budget.tick()  # the whole-split evaluation counts as training time, and against a budget
    s.info.update(
        status="interrupted" if interrupted else "completed",
        ended_at=datetime.now(timezone.utc).isoformat(),
        iters=s.iter,
        best_val_loss=s.best_val if math.isfinite(s.best_val) else None,
        final_val_loss=final,
        early_stopped=early_stopped,
        train_seconds=round(s.elapsed_s, 2),
    )
    if s.world.is_main:
        runs.write_run_info(s.run_dir, s.info)
    return Finished(s.info["status"], s.iter, s.best_val, final, early_stopped)
