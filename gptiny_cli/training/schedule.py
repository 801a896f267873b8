"""The pure maths of optimisation: learning-rate schedule and FLOP counting."""

from __future__ import annotations

import math

from gptiny_cli.config import ModelConfig


def learning_rate(
    step: int,
    *,
    base_lr: float,
    max_iters: int,
    warmup_iters: int = 0,
    decay: str = "cosine",
    min_lr_fraction: float = 0.1,
) -> float:
    """Linear warm-up from ~0 to ``base_lr``, then cosine decay to ``base_lr * min_lr_fraction``."""
    if warmup_iters > 0 and step < warmup_iters:
        return base_lr * (step + 1) / warmup_iters
    if decay == "constant":
        return base_lr
    span = max(1, max_iters - warmup_iters)
    progress = min(1.0, (step - warmup_iters) / span)
    min_lr = base_lr * min_lr_fraction
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (base_lr - min_lr)


def flops_per_token(cfg: ModelConfig, n_params_non_embedding: int) -> float:
    """Training FLOPs per token: 6 per weight (forward + backward) plus attention's scores.

    Attention's QK^T and AV products add 2 · 2 · T · C per layer forward, tripled for training.
    """
    if cfg.arch == "bigram":
        return 0.0
    attention = 12 * cfg.n_layer * cfg.block_size * cfg.n_embd
    return 6 * n_params_non_embedding + attention
