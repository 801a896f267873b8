"""The pure maths of optimisation: learning-rate schedule and FLOP counting."""

from __future__ import annotations

import math

from gptiny_cli.config import ModelConfig, TrainConfig


def learning_rate(
    step: int,
    *,
    base_lr: float,
    max_iters: int,
    warmup_iters: int = 0,
    decay: str = "cosine",
    min_lr_fraction: float = 0.1,
    decay_fraction: float = 0.4,
    fraction: float | None = None,
) -> float:
    """Linear warm-up from ~0 to ``base_lr`` over ``warmup_iters`` steps, then the decay.

    Both measures are taken at the end of the step (``step`` counts from 0): the steps after the
    warm-up done by then, or, with a time budget, ``fraction``, the share of the budget spent when
    the step ends; whichever of the two is further along wins, so the decay also ends if
    ``max_iters`` caps a time-budget run first, and the last step trains at the final rate.
    """
    if warmup_iters > 0 and step < warmup_iters:
        return base_lr * (step + 1) / warmup_iters
    progress = (step + 1 - warmup_iters) / max(1, max_iters - warmup_iters)
    if fraction is not None:
        progress = max(progress, fraction)
    return base_lr * decay_factor(min(1.0, progress), decay, min_lr_fraction, decay_fraction)


def decay_factor(progress: float, decay: str, min_lr_fraction: float, decay_fraction: float) -> float:
    """The schedule's shape after the warm-up: a multiple of the base rate for ``progress`` in [0, 1].

    ``cosine`` falls from 1 to ``min_lr_fraction`` over the whole of it; ``wsd`` (warm-up, stable,
    decay) holds 1, then falls linearly to ``min_lr_fraction`` over the last ``decay_fraction``.
    """
    if decay == "constant":
        return 1.0
    if decay == "wsd":
        into = (progress - (1.0 - decay_fraction)) / decay_fraction
        return 1.0 - (1.0 - min_lr_fraction) * min(1.0, max(0.0, into))
    return min_lr_fraction + 0.5 * (1.0 + math.cos(math.pi * progress)) * (1.0 - min_lr_fraction)


def scheduled_lr(t: TrainConfig, step: int, fraction: float | None = None) -> float:
    """``learning_rate`` for a run's [train] settings."""
    return learning_rate(step, base_lr=t.learning_rate, max_iters=t.max_iters, warmup_iters=t.warmup_iters,
                         decay=t.lr_decay, min_lr_fraction=t.min_lr_fraction, decay_fraction=t.decay_fraction,
                         fraction=fraction)


def flops_per_token(cfg: ModelConfig, n_params_non_embedding: int, vocab_size: int) -> float:
    """Training FLOPs per token: 6 per weight of a matmul (forward + backward) plus attention's scores.

    The matmuls' weights are those outside the embeddings, and the head's, which a tied head
    shares with the token embedding (so it is not among them). Attention's QK^T and AV products
    add 2 · 2 · T · C per layer forward, tripled for training.
    """
    if cfg.arch == "bigram":
        return 0.0
    tied_head = cfg.n_embd * vocab_size if cfg.tie_weights else 0
    attention = 12 * cfg.n_layer * cfg.block_size * cfg.n_embd
    return 6 * (n_params_non_embedding + tied_head) + attention
