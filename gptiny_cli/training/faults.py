"""What can go wrong while training, what run.json then records, and what the user is told.

Every message says what happened, what was kept (the last complete checkpoint) and the
command that carries on from it.
"""

from __future__ import annotations

import math
import os
import signal
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import torch

from gptiny_cli.errors import GptinyError
from gptiny_cli.store import manifest, runs
from gptiny_cli.training import distributed

if TYPE_CHECKING:
    from gptiny_cli.training.session import Session


def nan_at() -> int | None:
    """Tests make the loss of the step that reaches iteration N NaN with GPTINY_FAULT_NAN_AT=N."""
    value = os.environ.get("GPTINY_FAULT_NAN_AT")
    return int(value) if value else None


def kill_if_asked(s: Session) -> None:
    """Tests kill one rank at iteration N with GPTINY_FAULT_KILL=RANK:N (on a job's first attempt only)."""
    value = os.environ.get("GPTINY_FAULT_KILL")
    if value and s.world.restart == 0 and value == f"{s.world.rank}:{s.iter}":
        os.kill(os.getpid(), signal.SIGKILL)


def kept(s: Session) -> str:
    step = manifest.saved_step(s.run_dir)
    return "nothing had been saved yet" if step is None else f"the checkpoint of iteration {step} is kept"


class LossWatch:
    """The first iteration whose loss was not finite, tracked on the device: no sync per step."""

    def __init__(self, device: torch.device) -> None:
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)

    def record(self, loss: torch.Tensor, iteration: int) -> None:
        self.first_bad = torch.where((self.first_bad < 0) & ~torch.isfinite(loss), iteration, self.first_bad)

    def check(self, s: Session) -> None:
        at = int(self.first_bad.item())
        if s.world.size > 1:  # one verdict for all ranks, or the healthy ones would wait for the others
            earliest = s.world.min(at if at >= 0 else math.inf)
            at = int(earliest) if math.isfinite(earliest) else -1
        if at >= 0:
            raise diverged(s, at)


def diverged(s: Session, at: int) -> GptinyError:
    lower = s.config.train.learning_rate / 10
    return GptinyError(
        f"the loss became nan or infinite at iteration {at}; training stopped and {kept(s)}. Resume it "
        f"with a lower learning rate: gptiny train --resume {s.run_dir} --set train.learning_rate={lower:g}"
    )


def cannot_write(s: Session, err: OSError) -> GptinyError:
    then = ("start the run again" if manifest.saved_step(s.run_dir) is None
            else f"resume it: gptiny train --resume {s.run_dir}")
    return GptinyError(f"cannot write to {s.run_dir}: {err.strerror}; {kept(s)}. Free some space, then {then}")


def out_of_memory(s: Session) -> GptinyError:
    t = s.config.train
    advice = (f"out of memory on {s.device} at iteration {s.iter}: lower train.batch_size (now {t.batch_size}; "
              f"raise train.grad_accum to keep the same batch) or model.block_size (now "
              f"{s.config.model.block_size})")
    if manifest.saved_step(s.run_dir) is None:
        return GptinyError(f"{advice}. Nothing had been saved yet")
    return GptinyError(f"{advice}. {kept(s).capitalize()}; resume it with a smaller batch: gptiny train "
                       f"--resume {s.run_dir} --set train.batch_size={max(1, t.batch_size // 2)} "
                       f"--set train.grad_accum={2 * t.grad_accum}")


def is_out_of_memory(err: BaseException) -> bool:
    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(err, RuntimeError) and any(
        text in str(err) for text in ("can't allocate memory", "std::bad_alloc", "out of memory"))


def record_end(s: Session, err: BaseException) -> BaseException:
    """Mark the run interrupted (Ctrl-C) or failed; return what to raise: ``err`` or a clearer error."""
    stopped = isinstance(err, (KeyboardInterrupt, GeneratorExit))
    oom = is_out_of_memory(err)
    saved = manifest.saved_step(s.run_dir)
    s.info.update(status="interrupted" if stopped else "failed", ended_at=datetime.now(timezone.utc).isoformat(),
                  error="out of memory" if oom else str(err) or type(err).__name__)
    if saved is not None:
        s.info["iters"] = saved  # a save cut short by a second Ctrl-C may have completed after all
    try:
        if s.world.is_main:
            runs.write_run_info(s.run_dir, s.info)
    except OSError:
        pass  # a full disk must not hide the error that brought us here
    if isinstance(err, OSError):  # metrics or run.json on a full disk
        return cannot_write(s, err)
    if s.world.size > 1 and not oom and distributed.lost_peer(err):
        return distributed.lost_peer_error(err)
    return out_of_memory(s) if oom else err
