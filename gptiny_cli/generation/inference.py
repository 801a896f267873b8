"""Generation's fast paths: weights in bfloat16 or int8, and a lean single-position step.

Generating one character at a time multiplies one activation vector by every weight matrix,
the largest part of a step (about half of it with int8 weights on the reference model):
halving the bytes to read (bfloat16) or quartering them (int8) makes steps faster, at the price
of slightly different logits (benchmarks/README.md has speeds and validation losses). int8
stores each output row of a linear layer as 8-bit integers with its own float scale
(symmetric, per channel) and multiplies in bfloat16; the rest of the model is bfloat16, while
the KV cache, and attention over it, stay float32. Training never uses any of this.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from gptiny_cli.errors import GptinyError
from gptiny_cli.hardware.device import bf16_usable
from gptiny_cli.model import GPT, Block, KVCache, Rotary

PRECISIONS = ("float32", "bfloat16", "int8")


# PyTorch's CPU int8 kernel reads the input dimension in whole vector lengths and computes
# wrong results for other sizes (torch 2.13 here: multiples of 16 are right, 8, 24 or 40 are
# not); 32 leaves room for a kernel with wider vectors.
INT8_IN_MULTIPLE = 32


class Int8Linear(nn.Module):
    """y = x Wᵀ + b with W stored as int8 rows times a per-row scale, computed in bfloat16 on a CPU."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().float()  # (out, in)
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127  # (out,)
        self.register_buffer("weight", torch.round(weight / scale[:, None]).to(torch.int8))
        self.register_buffer("scale", scale.to(torch.bfloat16))
        bias = None if linear.bias is None else linear.bias.detach().to(torch.bfloat16)
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])  # (N, in); a decoder step is 2-D already
        y = torch._weight_int8pack_mm(flat, self.weight, self.scale)  # (N, out)
        if self.bias is not None:
            y.add_(self.bias)
        return y if x.dim() == 2 else y.view(*x.shape[:-1], y.shape[-1])


def _swap_linears(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.Linear) and child.in_features % INT8_IN_MULTIPLE == 0:
            setattr(module, name, Int8Linear(child))
        else:
            _swap_linears(child)


def for_inference(model: nn.Module, precision: str, device: torch.device) -> nn.Module:
    """The model, converted in place to ``precision`` on ``device``, for generation only.

    int8 is for CPUs; linear layers whose input size the kernel cannot take stay bfloat16.
    Converting in place spares a copy of the weights when a command starts.
    """
    if precision not in PRECISIONS:
        raise GptinyError(f"--precision {precision!r} is invalid: use auto, {', '.join(PRECISIONS)}")
    if precision == "int8" and device.type != "cpu":
        raise GptinyError(f"--precision int8 runs on the CPU only, not {device.type}; use bfloat16 there")
    if precision == "bfloat16" and not bf16_usable(device):
        raise GptinyError("--precision bfloat16 needs macOS 14 or later on Apple's GPUs; use float32")
    if precision == "float32":
        return model.to(device).eval()
    if precision == "int8":
        _swap_linears(model)  # from the float32 weights; .to() below leaves the int8 ones as they are
    return model.to(device=device, dtype=torch.bfloat16).eval()


class Decoder:
    """One new position per row through a GPT, in fewer operations than its forward pass.

    The model feeds prompts and refills the cache itself (``model(idx, cache)``); a step here
    computes the same thing for a single position: the layers' own norms, linear layers and
    feed-forward functions, called directly, with q, k and v split by one
    view and no attention mask (the newest position sees everything cached). Tests hold its
    logits to the model's full forward pass.
    """

    def __init__(self, model: GPT) -> None:
        cfg = model.cfg
        self.heads, self.width, self.rotary = cfg.n_head, cfg.n_embd, cfg.position == "rope"
        self.tok_emb = model.tok_emb.weight  # (V, C)
        self.pos_emb = None if self.rotary else model.pos_emb.weight  # (block_size, C)
        self.layers = [(b.ln1.forward, b.attn.qkv.forward, b.attn.proj.forward, b.ln2.forward, b.ffn.forward)
                       for b in model.blocks]
        self.ln_f, self.head = model.ln_f.forward, model.head.forward

    def step(self, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Logits (B, V) for one new token per row, tokens (B,), continuing ``cache``."""
        cache.check_room(1)
        B, H, C = tokens.shape[0], self.heads, self.width
        x = F.embedding(tokens, self.tok_emb)  # (B, C)
        rope = None
        if self.rotary:
            rope = Rotary(torch.full((1,), cache.length, device=tokens.device), C // H)
        else:
            x = x + self.pos_emb[cache.length]
        for layer, (ln1, qkv, proj, ln2, ffn) in enumerate(self.layers):
            qkv_out = qkv(ln1(x)).to(cache.keys.dtype)  # (B, 3C), attention in the cache's dtype
            q, k, v = qkv_out.view(B, 3, H, 1, C // H).unbind(1)  # (B, H, 1, D) each
            if rope is not None:
                q, k = rope.rotate(q), rope.rotate(k)
            keys, values = cache.update(layer, k, v)  # (B, H, n, D)
            y = F.scaled_dot_product_attention(q, keys, values)  # (B, H, 1, D)
            x = x + proj(y.view(B, C).to(x.dtype))
            x = x + ffn(ln2(x))
        cache.length += 1
        return self.head(self.ln_f(x))  # (B, V)


def one_position(model: nn.Module) -> Callable[[torch.Tensor, KVCache], torch.Tensor]:
    """How to feed one new token per row (B,) to a cache and get logits (B, V): a Decoder's step
    for a GPT built of the package's own blocks, else (a model with blocks of its own) its forward."""
    if type(model) is GPT and all(type(block) is Block for block in model.blocks):
        return Decoder(model).step
    return lambda tokens, cache: model(tokens[:, None], cache)[:, -1]
