"""Faster CPU versions of two of the model's operations, swapped into a model by ``for_cpu``.

Each computes what the model's own operation computes (dropout draws other random masks, of
the same law) and hands back to it wherever it is not faster: on other devices, in other
number formats, at other sizes. ``model.py`` stays the plain architecture; this is tuning.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from gptiny_cli.model import CausalSelfAttention, attend

WRITTEN_OUT_MAX_T = 512  # beyond this the (B, H, T, T) scores of the written-out form grow large


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float = 0.0) -> torch.Tensor:
    """Causal attention of q, k, v (B, H, T, D) written out: scores, the future masked, softmax, a weighted sum of v.

    In bfloat16 on a CPU this was 1.4-3.6x faster, forward and backward, than PyTorch's fused
    CPU kernel (benchmarks/bench_attention.py); the fused kernel wins in float32 and on GPUs.
    """
    T = q.shape[2]
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (B, H, T, T)
    # not model.causal_mask: with T <= window no window cuts it, and triu builds it in a third of the time
    future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)  # (T, T)
    weights = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
    return F.dropout(weights, dropout) @ v if dropout else weights @ v  # (B, H, T, D)


def cpu_attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, dropout: float = 0.0) -> torch.Tensor:
    """``model.attend``, written out (``causal_attention``) where that is faster: T queries over
    the same T positions, 1 < T <= window and T <= 512, in bfloat16 on a CPU."""
    T, n = q.shape[2], k.shape[2]
    if q.device.type == "cpu" and q.dtype == torch.bfloat16 and 1 < T == n and T <= min(window, WRITTEN_OUT_MAX_T):
        return causal_attention(q, k, v, dropout)
    return attend(q, k, v, window, dropout)


class _CpuDropout(torch.autograd.Function):
    """Dropout whose mask is drawn 64 random bits at a time, four 16-bit draws from each.

    PyTorch's CPU dropout draws one random number per element (``bernoulli_``), which took a
    tenth of a training step of the reference config. The drop probability is rounded to a
    multiple of 1/65536. The result is at least float32: it is added to the float32 residual
    stream next, and keeping it there saves casting it down and back up.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        bits = torch.empty((x.numel() + 3) // 4, dtype=torch.int64).random_(-(2**63), None)
        keep = bits.view(torch.int16)[: x.numel()].view(x.shape) >= round(p * 65536) - 32768
        scale = keep.to(torch.promote_types(x.dtype, torch.float32)).mul_(1 / (1 - p))
        ctx.save_for_backward(scale)
        ctx.dtype = x.dtype
        return x * scale

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (scale,) = ctx.saved_tensors
        return (grad * scale).to(ctx.dtype), None


class CpuDropout(nn.Dropout):
    """``nn.Dropout``, with a faster mask on the CPU (``_CpuDropout``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.p > 0 and x.device.type == "cpu":
            return _CpuDropout.apply(x, self.p)
        return super().forward(x)


def for_cpu(model: nn.Module) -> nn.Module:
    """``model``, changed in place to run the kernels above: every ``nn.Dropout`` becomes a
    ``CpuDropout`` and every attention layer attends with ``cpu_attend``.

    Its weights and state_dict keys stay as they were (dropout has none, and a layer's ``attend``
    is a plain function), and so does the model anywhere the kernels hand back to the plain ones.
    """
    for module in list(model.modules()):
        if isinstance(module, CausalSelfAttention):
            module.attend = cpu_attend
        for name, child in list(module.named_children()):
            if type(child) is nn.Dropout:
                setattr(module, name, CpuDropout(child.p).train(child.training))
    return model
