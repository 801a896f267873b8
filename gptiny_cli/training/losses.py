"""The losses of a model: of one batch (what a step trains on), estimated on random batches (every
evaluation during training) and exact over a whole split (the end of a run, ``gptiny eval``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from gptiny_cli.data import get_windows, sequential_windows
from gptiny_cli.hardware.device import Precision, sum_dtype
from gptiny_cli.hardware.setup import to_device

if TYPE_CHECKING:
    from gptiny_cli.training.session import Session


def batch_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: Precision) -> torch.Tensor:
    """The mean cross-entropy of ``model`` predicting targets ``y`` from inputs ``x``, in float32."""
    with precision.autocast():
        logits = model(x)  # (B, T, V)
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1))


@torch.no_grad()
def estimate_loss(s: Session, model: nn.Module | None = None, splits: tuple[str, ...] = ("train", "val"),
                  ) -> list[float]:
    """Mean loss of ``model`` (default: the one training) over ``eval_iters`` random batches per split.

    The batches come from a generator seeded by the step, so an estimate does not depend on
    how the run got there (straight through or resumed). Ranks share the batches out and sum
    their losses, so the estimate is the same on any number of processes. The sum stays on the
    device until the split is done: one wait for the GPU per split, not per batch.
    """
    t, m, world = s.config.train, s.config.model, s.world
    model = s.forward if model is None else model
    model.eval()
    totals = []
    for split in splits:
        gen = torch.Generator().manual_seed(t.seed * 1_000_003 + s.iter)
        total = torch.zeros((), dtype=sum_dtype(s.device), device=s.device)
        for i in range(t.eval_iters):
            window = get_windows(getattr(s.corpus, split), t.batch_size, m.block_size, gen)  # every rank draws all
            if i % world.size == world.rank:
                window = to_device(window, s.device)
                total += batch_loss(model, window[:, :-1], window[:, 1:], s.precision)
        totals.append(total.item())
    s.forward.train()
    return [total / t.eval_iters for total in world.sum(totals)]


@torch.no_grad()
def full_split_loss(
    model: nn.Module, tokens: torch.Tensor, block_size: int, batch_size: int,
    device: torch.device, precision: Precision,
) -> float:
    """Exact mean loss over every token of a split, once, in order (deterministic)."""
    model.eval()
    total, count = torch.zeros((), dtype=sum_dtype(device), device=device), 0
    for window in sequential_windows(tokens, batch_size, block_size):
        window = to_device(window, device)  # one copy, cut into inputs and targets on the device
        targets = window[:, 1:]
        total += batch_loss(model, window[:, :-1], targets, precision).to(total.dtype) * targets.numel()
        count += targets.numel()
    return total.item() / count
