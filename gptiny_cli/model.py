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
    """Keys and values of every layer for the positions seen so far, preallocated to block size.

    keys, values: (L, B, H, block_size, D); ``length`` positions of them are filled.
    """

    keys: torch.Tensor
    values: torch.Tensor
    length: int = 0

    @property
    def capacity(self) -> int:
        return self.keys.shape[3]


class CausalSelfAttention(nn.Module):
    """Every position attends to itself and the positions before it, in H heads at once."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.attn_dropout = cfg.attn_dropout
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 × (B, T, C)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        # q, k, v: (B, H, T, D)
        past = 0
        if cache is not None:
            past = cache.length
            cache.keys[layer, :, :, past : past + T] = k
            cache.values[layer, :, :, past : past + T] = v
            k = cache.keys[layer, :, :, : past + T]  # (B, H, past + T, D)
            v = cache.values[layer, :, :, : past + T]
        dropout = self.attn_dropout if self.training else 0.0
        if past == 0:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        else:
            # New query i sits at position past + i and may see keys 0 .. past + i.
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.proj(y))


class FeedForward(nn.Module):
    """A position-wise MLP: widen to 4C, apply ReLU, project back to C."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.relu(self.fc(x))))  # (B, T, C)


class Block(nn.Module):
    """Communication (attention) then computation (feed-forward), each pre-normed and residual."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.ffn = FeedForward(cfg)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), cache, layer)
        return x + self.ffn(self.ln2(x))


class GPT(nn.Module):
    """Token and position embeddings, L blocks, a final LayerNorm and a linear head."""

    def __init__(self, cfg: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.tok_emb = nn.Embedding(vocab_size, cfg.n_embd)
        self.pos_emb = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.head = nn.Linear(cfg.n_embd, vocab_size, bias=cfg.bias)
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
        c = self.cfg
        shape = (c.n_layer, batch_size, c.n_head, c.block_size, c.n_embd // c.n_head)
        return KVCache(torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype))

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Logits (B, T, V) for token ids (B, T); with a cache, idx continues what it holds."""
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        if start + T > self.cfg.block_size:
            raise ValueError(f"sequence of {start + T} positions exceeds block_size {self.cfg.block_size}")
        pos = torch.arange(start, start + T, device=idx.device)  # (T,)
        x = self.dropout(self.tok_emb(idx) + self.pos_emb(pos))  # (B, T, C)
        for layer, block in enumerate(self.blocks):
            x = block(x, cache, layer)
        if cache is not None:
            cache.length += T
        return self.head(self.ln_f(x))  # (B, T, V)


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
