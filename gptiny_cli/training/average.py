"""An exponential moving average (EMA) of the weights over the last part of training.

Late in a run the weights still jitter with the noise of each batch; an average of them sits
nearer the middle of where they wander. With ``train.ema_decay`` above 0 the average starts as a
copy of the weights once ``train.ema_start`` of the run is done (of its time budget, or of
``max_iters``), and then, after every optimizer step, moves ``1 - ema_decay`` of the way to the
new weights. Every evaluation also estimates the average's val loss; when that is the best so
far, the average is what the checkpoint saves as the best weights (``loop``). The average is
part of the training state (``state``), so a resumed run keeps it exactly.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

if TYPE_CHECKING:
    from gptiny_cli.training.session import Session


def done(s: Session, fraction: float | None) -> float:
    """The share of the run done: of its time budget (``fraction``) or of ``max_iters``."""
    by_steps = s.iter / s.config.train.max_iters
    return by_steps if fraction is None else max(fraction, by_steps)


def new_average(model: nn.Module) -> nn.Module:
    """A copy of ``model`` to average into: no gradients, always in eval mode."""
    average = copy.deepcopy(model).eval()
    average.requires_grad_(False)
    return average


@torch.no_grad()
def update(s: Session, fraction: float | None) -> None:
    """After a step: begin the average once ``ema_start`` is done, else fold the new weights in."""
    t = s.config.train
    if t.ema_decay == 0 or done(s, fraction) < t.ema_start:
        return
    if s.average is None:
        s.average = new_average(s.model)
        return
    # One multi-tensor lerp for all the weights (on a GPU a few launches, not one per tensor).
    torch._foreach_lerp_(list(s.average.parameters()), list(s.model.parameters()), 1 - t.ema_decay)
