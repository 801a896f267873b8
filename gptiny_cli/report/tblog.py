"""TensorBoard logging when a run asks for it (``[log] tensorboard = true``), beside metrics.jsonl.

The event files go into the run directory itself, so ``tensorboard --logdir runs`` shows every
run under its directory name. The ``tensorboard`` package is an optional extra
(``pip install 'gptiny[tensorboard]'``); ``LogConfig.require_installed`` says so before any run starts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from gptiny_cli.training.loop import EvalStats, Event, Finished, StepStats


def scalars(event: Event) -> dict[str, float]:
    """The TensorBoard tags and values of one training event."""
    if isinstance(event, StepStats):
        values = {"train/batch_loss": event.loss, "train/lr": event.lr, "speed/tokens_per_sec": event.tokens_per_sec}
        return values if event.mfu is None else {**values, "speed/mfu": event.mfu}  # None: unknown peak
    if isinstance(event, EvalStats):
        return {"loss/train": event.train_loss, "loss/val": event.val_loss, "progress/epoch": event.epoch}
    if event.final_val_loss is not None:
        return {"loss/val_full_split": event.final_val_loss}
    return {}


def logged(events: Iterator[Event], run_dir: Path, start_iter: int = 0) -> Iterator[Event]:
    """Pass the training events through, writing each one's scalars to TensorBoard on the way.

    A resumed run starts from its checkpoint at ``start_iter``: what the earlier process logged
    after that step is hidden from view, as metrics.jsonl drops it too.
    """
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(run_dir), purge_step=start_iter + 1 if start_iter else None)
    try:
        for event in events:
            for tag, value in scalars(event).items():
                writer.add_scalar(tag, value, event.iter)
            if isinstance(event, (EvalStats, Finished)):
                writer.flush()  # the CLI stops reading at Finished; what matters is on disk by then
            yield event
    finally:
        writer.close()
