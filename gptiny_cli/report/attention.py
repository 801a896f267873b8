"""What a trained GPT looks at: every layer's and head's attention weights over a text, and the
next-character probabilities at every position, computed outside the model.

The weights are recomputed from what each attention layer is given: a forward pre-hook records
its input (the normed residual stream) and the rotary positions, and the layer's own ``qkv``
projection turns that into queries and keys again; softmax(q kᵀ / √D) under the causal window
is then exactly what ``model.attend`` applied (the same ``causal_mask``). The model itself knows nothing of this.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from gptiny_cli.errors import GptinyError
from gptiny_cli.model import GPT, CausalSelfAttention, Rotary, causal_mask


@dataclass
class Insight:
    """One text's model internals: ``probs`` (T, V) of the character after each position, and
    ``attention`` (L, H, T, T), row t the weights position t gave positions 0..t."""

    tokens: list[int]
    probs: torch.Tensor
    attention: torch.Tensor


def causal_weights(q: torch.Tensor, k: torch.Tensor, window: int) -> torch.Tensor:
    """softmax(q kᵀ / √D) of queries and keys (..., T, D), each position seeing itself and at most
    window - 1 before it: (..., T, T)."""
    T = q.shape[-2]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., T, T)
    visible = causal_mask(T, T, window, q.device)  # (T, T)
    return torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1)


def _layer_weights(attn: CausalSelfAttention, x: torch.Tensor, rope: Rotary | None) -> torch.Tensor:
    """The attention weights (B, H, T, T) a layer computes for its input x (B, T, C)."""
    B, T, C = x.shape
    q, k, _ = attn.qkv(x).float().split(C, dim=2)  # (B, T, C) each
    q, k = (t.view(B, T, attn.n_head, C // attn.n_head).transpose(1, 2) for t in (q, k))  # (B, H, T, D)
    if rope is not None:
        q, k = rope.rotate(q), rope.rotate(k)
    return causal_weights(q, k, attn.block_size)


@torch.inference_mode()
def insight(model: nn.Module, tokens: list[int]) -> Insight:
    """Probabilities and attention weights of ``model`` over ``tokens`` (at most block_size of them)."""
    if not isinstance(model, GPT):
        raise GptinyError("this run is a bigram model: it has no attention to show (train a gpt)")
    if not 0 < len(tokens) <= model.block_size:
        raise GptinyError(f"give 1 to {model.block_size} characters (the block size), not {len(tokens)}")
    maps: list[torch.Tensor] = []

    def record(module: nn.Module, args: tuple) -> None:
        x, rope = args[0], args[1] if len(args) > 1 else None
        maps.append(_layer_weights(module, x, rope)[0])  # (H, T, T)

    hooks = [block.attn.register_forward_pre_hook(record) for block in model.blocks]
    try:
        device = next(model.parameters()).device
        logits = model(torch.tensor([tokens], device=device))[0]  # (T, V)
    finally:
        for hook in hooks:
            hook.remove()
    return Insight(list(tokens), torch.softmax(logits.float(), dim=-1).cpu(), torch.stack(maps).cpu())


def top_next(probs: torch.Tensor, chars: tuple[str, ...], k: int = 10) -> list[list[tuple[str, float]]]:
    """Per position of ``probs`` (T, V), the k most likely next characters with their probabilities."""
    values, indices = probs.topk(min(k, probs.shape[-1]), dim=-1)  # (T, k)
    rows = zip(indices.tolist(), values.tolist(), strict=True)
    return [[(chars[i], p) for i, p in zip(row_i, row_p, strict=True)] for row_i, row_p in rows]
