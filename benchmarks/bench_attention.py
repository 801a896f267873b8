"""Causal attention on the CPU: PyTorch's fused kernel against the written-out form, forward + backward.

    python benchmarks/bench_attention.py [--repeats 10]

Times ``F.scaled_dot_product_attention(is_causal=True)`` and ``gptiny_cli.hardware.kernels.causal_attention``
(scores, mask, softmax, weighted sum) at the shapes of the two shipped configs' training steps
(one layer: B × H × T × D), in float32 and in bfloat16, with and without attention dropout. The
inputs come in the dtype the model's linear layers give under autocast. It is what decided that
``kernels.cpu_attend`` writes attention out for bfloat16 on the CPU and uses the fused kernel elsewhere.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gptiny_cli.hardware.kernels import causal_attention  # noqa: E402

SHAPES = {"shakespeare-cpu": (32, 4, 128, 48), "shakespeare": (64, 4, 256, 96)}


def fused(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)


def time_one(attention: Callable, shape: tuple[int, ...], dtype: torch.dtype, dropout: float,
             repeats: int) -> float:
    """Median milliseconds of one forward and backward pass."""
    q, k, v = (torch.randn(shape, dtype=dtype, requires_grad=True) for _ in range(3))
    times = []
    for i in range(repeats + 2):  # two warm-up passes
        start = time.perf_counter()
        attention(q, k, v, dropout).float().sum().backward()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    print(f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print("| shape (config) | dtype | dropout | fused | written out | fused / written out |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for name, shape in SHAPES.items():
        for dtype in (torch.float32, torch.bfloat16):
            for dropout in (0.0, 0.2):
                a = time_one(fused, shape, dtype, dropout, args.repeats)
                b = time_one(causal_attention, shape, dtype, dropout, args.repeats)
                print(f"| {'×'.join(map(str, shape))} ({name}) | {str(dtype).removeprefix('torch.')} | {dropout} "
                      f"| {a:.1f} ms | {b:.1f} ms | {a / b:.2f}× |", flush=True)


if __name__ == "__main__":
    main()
