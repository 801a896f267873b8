"""Generation's number formats: weights in bfloat16 or int8 (the step itself is ``decode.py``).

Generating one character at a time multiplies one activation vector by every weight matrix,
the largest part of a step (about half of it with int8 weights on the reference model):
halving the bytes to read (bfloat16) or quartering them (int8) makes steps faster, at the price
of slightly different logits (benchmarks/README.md has speeds and validation losses). int8
stores each output row of a linear layer as 8-bit integers with its own float scale
(symmetric, per channel) and multiplies in bfloat16; the rest of the model is bfloat16, while
the KV cache, and attention over it, stay float32. Training never uses any of this.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from gptiny_cli.errors import GptinyError
from gptiny_cli.hardware.device import bf16_usable, cpu_has_native_bf16

PRECISIONS = ("float32", "bfloat16", "int8")


# PyTorch's CPU int8 kernel reads the input dimension in whole vector lengths and computes
# wrong results for other sizes (torch 2.13 here: multiples of 16 are right, 8, 24 or 40 are
# not); 32 leaves room for a kernel with wider vectors.
INT8_IN_MULTIPLE = 32


# From this many rows on (a prompt pass), a dense bfloat16 matmul of the int8 values beats the int8
# kernel on a CPU with bf16 instructions: twice as fast at 63 rows, 6-25% at 31 (a refill), level
# at 24, slower below, four times slower at one (benchmarks/README.md, "Prompt passes in bfloat16").
# A batch step of that many rows takes it too; its logits then differ from a single row's in the
# last bits of bfloat16, so an int8 sample in so large a batch can differ from the same seed alone.
DENSE_ROWS = 24


class Int8Linear(nn.Module):
    """y = x Wᵀ + b with W stored as int8 rows times a per-row scale, computed in bfloat16 on a CPU.

    ``dense``: also keep the int8 values as bfloat16 (exactly: they are at most 127), which inputs
    of ``DENSE_ROWS`` rows or more multiply instead; worth it only where bfloat16 is native.
    """

    def __init__(self, linear: nn.Linear, dense: bool = False) -> None:
        super().__init__()
        weight = linear.weight.detach().float()  # (out, in)
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127  # (out,)
        self.register_buffer("weight", torch.round(weight / scale[:, None]).to(torch.int8))
        self.register_buffer("scale", scale.to(torch.bfloat16))
        bias = None if linear.bias is None else linear.bias.detach().to(torch.bfloat16)
        self.register_buffer("bias", bias)
        self.register_buffer("dense", self.weight.to(torch.bfloat16) if dense else None, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])  # (N, in); a decoder step is 2-D already
        if self.dense is not None and flat.shape[0] >= DENSE_ROWS:
            y = torch.mm(flat, self.dense.t()).mul_(self.scale)  # (N, out)
        else:
            y = torch._weight_int8pack_mm(flat, self.weight, self.scale)  # (N, out)
        if self.bias is not None:
            y.add_(self.bias)
        return y if x.dim() == 2 else y.view(*x.shape[:-1], y.shape[-1])


def _swap_linears(module: nn.Module, dense: bool) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.Linear) and child.in_features % INT8_IN_MULTIPLE == 0:
            setattr(module, name, Int8Linear(child, dense))
        else:
            _swap_linears(child, dense)


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
        _swap_linears(model, dense=cpu_has_native_bf16())  # from the float32 weights; .to() below leaves
        # the int8 ones as they are
    return model.to(device=device, dtype=torch.bfloat16).eval()
