"""A decoder-only transformer for characters, and the bigram baseline it improves on.

Shapes in comments: B batch, T time (positions), C channels (n_embd), H heads,
D head size (C // H), V vocabulary size, L layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from gptiny_cli.config import ModelConfig


@dataclass
class KVCache:
    """The keys and values every layer has computed, so that a new character costs one position.

    keys, values: (L, B, H, S, D), preallocated with S = block_size slots. ``length`` counts the
    positions fed so far; position p lives in slot p, or in slot p % S when the cache rolls.

    The cache may be wider than the model (float32 for bfloat16 weights): attention then runs in
    the cache's dtype, which on a CPU is several times faster than in bfloat16.

    A rolling cache (rotary positions) overwrites its oldest slot once all S are full. Rotary
    attention depends only on how far apart two positions are, so attending to the S newest
    keys is exactly attention over a sliding window of S positions. A fixed cache (learned
    positions: position S has no embedding) refuses to go past S; the caller refills it.
    """

    keys: torch.Tensor
    values: torch.Tensor
    rolling: bool = False
    length: int = 0

    @property
    def capacity(self) -> int:
        return self.keys.shape[3]

    def check_room(self, n_new: int) -> None:
        """Raise ValueError unless ``n_new`` more positions can be stored in place."""
        end = self.length + n_new
        if end <= self.capacity or (self.rolling and n_new == 1):
            return
        if self.rolling:
            raise ValueError(f"a full rolling cache takes one position at a time, not {n_new}")
        raise ValueError(f"sequence of {end} positions exceeds block_size {self.capacity}")

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store one layer's k, v (B, H, T, D) for the next T positions; the keys and values to attend to.

        Several positions at once are only stored in order (slot = position), so the result is
        (B, H, length + T, D) in position order; a rolling cache's single newest position may
        sit anywhere, and the order of keys does not matter to a query that sees all of them.
        """
        T = k.shape[2]
        slot = self.length % self.capacity
        self.keys[layer, :, :, slot : slot + T] = k
        self.values[layer, :, :, slot : slot + T] = v
        filled = min(self.length + T, self.capacity)
        return self.keys[layer, :, :, :filled], self.values[layer, :, :, :filled]


def causal_mask(T: int, n: int, window: int, device: torch.device) -> torch.Tensor:
    """Which of n positions each of the newest T may see: itself and at most window - 1 before it.

    (T, n) booleans, True where query t (position n - T + t) may attend to key j.
    """
    query_pos = torch.arange(n - T, n, device=device)[:, None]  # (T, 1)
    key_pos = torch.arange(n, device=device)[None, :]  # (1, n)
    return (key_pos <= query_pos) & (key_pos > query_pos - window)  # (T, n)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, dropout: float = 0.0) -> torch.Tensor:
    """Causal attention of the queries (B, H, T, D), the newest T of the n positions in k, v (B, H, n, D).

    A query sees itself and at most window - 1 positions before it. One query needs no mask: it
    is the newest position, and whoever built k, v kept only what it may see; nor do T queries
    over T positions that all fit the window: that is the plain causal mask, which the fused
    kernel applies itself.
    """
    T, n = q.shape[2], k.shape[2]
    if T == 1:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
    if T == n and T <= window:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(T, n, window, q.device), dropout_p=dropout)


class CausalSelfAttention(nn.Module):
    """Every position attends to itself and the positions before it, in H heads at once."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.block_size = cfg.block_size
        self.attn_dropout = cfg.attn_dropout
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.resid_dropout = nn.Dropout(cfg.dropout)
        # How the heads attend: ``attend``, unless a kernel that computes the same faster on some
        # hardware was swapped in (hardware.kernels); a function, so not part of the weights.
        self.attend = attend

    def forward(
        self, x: torch.Tensor, rope: Rotary | None = None, cache: KVCache | None = None, layer: int = 0
    ) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 × (B, T, C)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        # q, k, v: (B, H, T, D)
        if rope is not None:
            q, k = rope.rotate(q), rope.rotate(k)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, H, n, D): what the new positions may see, in the cache's dtype
        dropout = self.attn_dropout if self.training else 0.0
        y = self.attend(q.to(k.dtype), k, v, self.block_size, dropout).to(x.dtype)  # (B, H, T, D)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.proj(y))


class FeedForward(nn.Module):
    """A position-wise MLP: widen to 4C, ReLU or GELU (``model.activation``), project back to C.

    GELU is the tanh approximation, GPT-2's, which is also what llama.cpp computes.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd)
        self.proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd)
        self.dropout = nn.Dropout(cfg.dropout)
        self.gelu = cfg.activation == "gelu"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)  # (B, T, 4C)
        h = F.gelu(h, approximate="tanh") if self.gelu else F.relu(h)
        return self.dropout(self.proj(h))  # (B, T, C)


class Rotary:
    """Rotary position embedding: rotate each (q, k) pair of channels by an angle set by position.

    Attention scores then depend on how far apart two positions are, not where they are.
    """

    def __init__(self, positions: torch.Tensor, head_dim: int, base: float = 10000.0) -> None:
        inv_freq = base ** (-torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim)
        angles = positions.float()[:, None] * inv_freq[None, :]  # (T, D/2)
        self.cos, self.sin = angles.cos(), angles.sin()

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        x1, x2 = x[..., :half], x[..., half:]  # (B, H, T, D/2) each
        cos, sin = self.cos.to(x.dtype), self.sin.to(x.dtype)
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)  # (B, H, T, D)


class Block(nn.Module):
    """Communication (attention) then computation (feed-forward), each pre-normed and residual."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.n_embd)
        self.ffn = FeedForward(cfg)

    def forward(
        self, x: torch.Tensor, rope: Rotary | None = None, cache: KVCache | None = None, layer: int = 0
    ) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), rope, cache, layer)
        return x + self.ffn(self.ln2(x))


class GPT(nn.Module):
    """Token and position embeddings, L blocks, a final LayerNorm and a linear head."""

    def __init__(self, cfg: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.tok_emb = nn.Embedding(vocab_size, cfg.n_embd)
        if cfg.position == "learned":
            self.pos_emb = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, vocab_size, bias=cfg.head_bias)
        self.apply(self._init_weights)
        # Each residual branch adds to the stream; shrinking their output projections keeps the
        # stream's variance from growing with depth (the GPT-2 recipe).
        for name, param in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))
        if cfg.tie_weights:
            self.head.weight = self.tok_emb.weight

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    @property
    def block_size(self) -> int:
        return self.cfg.block_size

    def new_cache(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> KVCache:
        """An empty cache for ``batch_size`` sequences; it rolls with rotary positions."""
        c = self.cfg
        shape = (c.n_layer, batch_size, c.n_head, c.block_size, c.n_embd // c.n_head)  # (L, B, H, S, D)
        return KVCache(torch.zeros(shape, device=device, dtype=dtype),
                       torch.zeros(shape, device=device, dtype=dtype), rolling=c.position == "rope")

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Logits (B, T, V) for token ids (B, T); with a cache, idx continues what it holds.

        With rotary positions T may exceed block_size: each position then attends to the
        block_size positions ending at it, as a rolling cache does.
        """
        T = idx.shape[1]
        start = 0
        if cache is not None:
            cache.check_room(T)
            start = cache.length
        elif T > self.cfg.block_size and self.cfg.position == "learned":
            raise ValueError(f"sequence of {T} positions exceeds block_size {self.cfg.block_size}")
        x, rope = self.embed(idx, start)
        for layer, block in enumerate(self.blocks):
            x = block(x, rope, cache, layer)
        if cache is not None:
            cache.length += T
        return self.head(self.ln_f(x))  # (B, T, V)

    def embed(self, idx: torch.Tensor, start: int = 0) -> tuple[torch.Tensor, Rotary | None]:
        """The first block's input (B, T, C) for token ids (B, T) at positions start..start + T, and
        the rotation of those positions (None with learned positions, which are added here)."""
        T = idx.shape[1]
        x = self.tok_emb(idx)  # (B, T, C)
        rope = None
        if self.cfg.position == "learned":
            x = x + self.pos_emb.weight[start : start + T]  # (T, C), a view: no index tensor per step
        else:
            rope = Rotary(torch.arange(start, start + T, device=idx.device), self.cfg.n_embd // self.cfg.n_head)
        return self.dropout(x), rope


class Bigram(nn.Module):
    """The baseline: the next character's logits are read off a V × V table by the current one."""

    def __init__(self, cfg: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.table = nn.Embedding(vocab_size, vocab_size)

    @property
    def block_size(self) -> int:
        return self.cfg.block_size

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        return self.table(idx)  # (B, T, V)


def build_model(cfg: ModelConfig, vocab_size: int) -> nn.Module:
    return Bigram(cfg, vocab_size) if cfg.arch == "bigram" else GPT(cfg, vocab_size)


@dataclass(frozen=True)
class ParamCounts:
    total: int
    embedding: int

    @property
    def non_embedding(self) -> int:
        return self.total - self.embedding


def count_params(model: nn.Module) -> ParamCounts:
    """Parameters in all, and in the embeddings; a tied tensor counts once."""
    total = sum(p.numel() for _, p in model.named_parameters())  # named_parameters yields tied ones once
    embedding = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Embedding))
    return ParamCounts(total, embedding)
