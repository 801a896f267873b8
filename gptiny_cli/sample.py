"""Text generation: the logits-to-probabilities maths as pure functions, and the decoding loop.

With a KV cache each new character costs one position instead of the whole
context. The model has learned positions, so the cache cannot roll past the
block size: when it is full, it is refilled from the last half block of text.
Those characters then condition on 128 characters of context instead of 255
(for block 256), a small change that buys a 2x cheaper refill than keeping the
full window would. The plain loop (``use_cache=False``) crops to the last
block_size characters at every step, the classic behaviour.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn as nn

from gptiny_cli.model import Bigram


def logits_to_probs(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
) -> torch.Tensor:
    """Next-token probabilities (..., V) from logits (..., V); temperature must be > 0.

    top_k keeps exactly the k most likely tokens, ties broken by index, and top_p keeps the
    smallest set of most likely tokens whose probability reaches top_p (at least one).
    """
    logits = logits.float() / temperature
    vocab = logits.size(-1)
    if 0 < top_k < vocab:
        keep = torch.zeros_like(logits, dtype=torch.bool)
        keep.scatter_(-1, torch.topk(logits, top_k, dim=-1).indices, True)
        logits = logits.masked_fill(~keep, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass strictly above each token
        drop_sorted = before >= top_p
        drop_sorted[..., 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        probs = probs.masked_fill(drop, 0.0)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


def next_token(
    logits: torch.Tensor, generator: torch.Generator | None, temperature: float = 1.0,
    top_k: int = 0, top_p: float = 1.0,
) -> torch.Tensor:
    """One token per row of logits (B, V): argmax at temperature 0, else a draw."""
    if temperature == 0:
        return torch.argmax(logits, dim=-1)  # (B,)
    probs = logits_to_probs(logits, temperature, top_k, top_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (B,)


@torch.inference_mode()
def generate(
    model: nn.Module,
    prompt: list[int],
    n_tokens: int,
    *,
    num_samples: int = 1,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    start_token: int = 0,
) -> Iterator[torch.Tensor]:
    """Yield ``n_tokens`` steps of (num_samples,) token ids continuing ``prompt``.

    An empty prompt starts from ``start_token``, which is not part of the output.
    """
    model.eval()
    device = next(model.parameters()).device
    block = model.block_size
    context = torch.tensor([prompt or [start_token]], device=device).repeat(num_samples, 1)  # (B, T)

    def draw(logits: torch.Tensor) -> torch.Tensor:
        return next_token(logits, generator, temperature, top_k, top_p)

    if isinstance(model, Bigram):  # the next character depends on the current one alone
        token = draw(model(context[:, -1:])[:, -1])
        for step in range(n_tokens):
            yield token
            if step + 1 < n_tokens:
                token = draw(model(token[:, None])[:, -1])
        return
    if not use_cache:
        for _ in range(n_tokens):
            token = draw(model(context[:, -block:])[:, -1])
            context = torch.cat([context, token[:, None]], dim=1)
            yield token
        return
    cache = model.new_cache(num_samples, device, next(model.parameters()).dtype)
    logits = model(context[:, -block:], cache)[:, -1]  # (B, V)
    for step in range(n_tokens):
        token = draw(logits)
        yield token
        if step + 1 == n_tokens:
            break
        context = torch.cat([context[:, -block:], token[:, None]], dim=1)
        if cache.length == cache.capacity:
            cache.length = 0
            logits = model(context[:, -(block // 2) :], cache)[:, -1]
        else:
            logits = model(token[:, None], cache)[:, -1]
