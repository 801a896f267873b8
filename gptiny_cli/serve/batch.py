"""Decode steps of many requests as one batch: what lets a server with 16 clients do more than 16
times the work of one.

Each request (``Stream``) keeps what ``generation.sample.generate`` keeps for its samples: a KV
cache of its own, a ``Sampler`` with its own seeded generator, and the logits of its next step;
it is fed exactly as ``generate``'s cached loop feeds one (the same prompt pass, the same refill
of a full fixed cache). What differs is the step: ``batched_step`` runs the new position of every
request in flight through the linear layers and feed-forward as one matrix (the larger part of a
step's work), while each request attends over its own cache at its own position. For a single
request the arithmetic is operation for operation ``Decoder.step``'s, so a seed gives the text
``gptiny sample`` gives.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from gptiny_cli.generation.inference import Decoder
from gptiny_cli.generation.sample import Sampler, refill_positions
from gptiny_cli.model import GPT, Bigram, Block, KVCache, Rotary


@dataclass
class Completion:
    """One prompt's generation, as a request asked for it: n samples of up to max_tokens tokens."""

    prompt: list[int]
    max_tokens: int
    n: int = 1
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    stops: tuple[str, ...] = ()


def batch_decoder(model: nn.Module) -> Decoder | None:
    """The decoder whose parts a batched step calls, for a GPT of the package's own blocks."""
    if type(model) is GPT and all(type(block) is Block for block in model.blocks):
        return Decoder(model)
    return None


class Stream:
    """One request's n samples between steps: cache, sampler, the logits to draw from next."""

    def __init__(self, model: nn.Module, c: Completion, generator: torch.Generator, start_token: int) -> None:
        device = next(model.parameters()).device
        prompt = (c.prompt or [start_token])[-model.block_size :]
        context = torch.tensor([prompt], device=device).expand(c.n, -1)  # (n, T)
        self.sample = Sampler(c.n, model.vocab_size, temperature=c.temperature, top_k=c.top_k, top_p=c.top_p,
                              generator=generator, device=device)
        self.model = model
        self.cache: KVCache | None = None
        if isinstance(model, Bigram):  # the next character depends on the current one alone
            self.logits = model(context[:, -1:])[:, -1]  # (n, V)
            return
        # float32 whatever the weights, as generate's cached loop keeps it
        self.cache = model.new_cache(c.n, device, torch.float32)
        self.logits = model(context, self.cache)[:, -1]
        self.recent = [] if self.cache.rolling else list(context.unbind(1))  # (n,) per position, for a refill
        self.token = torch.empty(0)

    def draw(self) -> torch.Tensor:
        """The next token of each sample (n,), from the logits of the last step."""
        self.token = self.sample(self.logits)
        return self.token

    @property
    def batchable(self) -> bool:
        """Whether the next step can run in the batch: a cache with room for the new position."""
        cache = self.cache
        return cache is not None and (cache.rolling or cache.length < cache.capacity)

    def step_alone(self) -> None:
        """The next step outside the batch: a bigram's lookup, a model's own forward pass (one with
        blocks of its own, that a batch cannot take), or refilling a full fixed cache."""
        if self.cache is None:
            self.logits = self.model(self.token[:, None])[:, -1]
            return
        if self.batchable:
            self.took(self.model(self.token[:, None], self.cache)[:, -1])
            return
        self.recent = refill_positions(self.recent, self.token, self.cache.capacity)
        self.cache.length = 0
        self.logits = self.model(torch.stack(self.recent, dim=1), self.cache)[:, -1]

    def took(self, logits: torch.Tensor) -> None:
        """Keep a batched step's logits (n, V) for this request."""
        if not self.cache.rolling:
            self.recent.append(self.token)
        self.logits = logits


def batched_step(decoder: Decoder, streams: list[Stream]) -> None:
    """One new position for every sample of every stream (each ``batchable``), in one batch.

    A single stream takes the decoder's own step, the one ``gptiny sample`` takes.
    """
    if len(streams) == 1:
        stream = streams[0]
        stream.took(decoder.step(stream.token, stream.cache))
        return
    sizes = [s.token.shape[0] for s in streams]
    caches = [s.cache for s in streams]
    H, C = decoder.heads, decoder.width
    x = F.embedding(torch.cat([s.token for s in streams]), decoder.tok_emb)  # (R, C), R rows in all
    ropes: list[Rotary | None] = [None] * len(streams)
    if decoder.rotary:
        ropes = [Rotary(torch.full((1,), c.length, device=x.device), C // H) for c in caches]
    else:
        # each row's position, built on the host and copied once
        positions = torch.tensor([c.length for c, n in zip(caches, sizes, strict=True) for _ in range(n)])
        x = x + decoder.pos_emb[positions.to(x.device)]  # (R, C)
    for layer, (ln1, qkv, proj, ln2, ffn) in enumerate(decoder.layers):
        qkv_out = qkv(ln1(x)).to(torch.float32)  # (R, 3C); attention in the caches' dtype
        ys = []
        for part, cache, rope in zip(qkv_out.split(sizes), caches, ropes, strict=True):
            n = part.shape[0]
            q, k, v = part.view(n, 3, H, 1, C // H).unbind(1)  # (n, H, 1, D) each
            if rope is not None:
                q, k = rope.rotate(q), rope.rotate(k)
            keys, values = cache.update(layer, k, v)  # (n, H, length, D): this stream's own past
            ys.append(F.scaled_dot_product_attention(q, keys, values).view(n, C))
        x = x + proj(torch.cat(ys).to(x.dtype))
        x = x + ffn(ln2(x))
    for cache in caches:
        cache.length += 1
    logits = decoder.head(decoder.ln_f(x))  # (R, V)
    for stream, part in zip(streams, logits.split(sizes), strict=True):
        stream.took(part)
