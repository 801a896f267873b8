"""Peak matmul FLOP/s, the denominator of MFU: a table of known GPUs, a measurement elsewhere.

A GPU is found by its whole name, never by a substring: ``torch.cuda.get_device_name`` is
normalised (vendor words and the memory size dropped, upper case) and must equal a key of the
table exactly, so "L4" is not "L40S", "T4" not "T400", "A100" not "RTX A1000", and an H100 in
MIG slices ("... MIG 1g.10gb") is not a whole H100. A GPU the table lacks has no peak: MFU is
then reported as unknown rather than against a guess. CPUs and Apple GPUs have no published
figure that a matmul reaches, so their peak is measured, and labelled as measured.
"""

from __future__ import annotations

import functools
import re
import time
from dataclasses import dataclass

import torch

# Dense (not 2:4-sparse) tensor-core peaks in TFLOP/s, from the vendors' datasheets and
# whitepapers: (bf16 or fp16 with fp32 accumulation, fp32). The fp32 column is TF32 where the
# part has it, because training and evaluation turn TF32 on for float32 matmuls; V100 and T4
# have no TF32, so theirs is plain FP32. On V100 and T4 the first column is fp16 (bf16 is
# emulated there, and `train.dtype = "auto"` picks fp16 on them).
# Sources: NVIDIA A100 datasheet (r4); H100 datasheet (SXM, PCIe, NVL: "with sparsity" figures
# halved); H200 datasheet; HGX/DGX B200 datasheet (per GPU, 1000 W); L4, L40, L40S, A10, T4 and
# V100 datasheets; GeForce RTX 3090 in the Ampere GA102 whitepaper, RTX 4090 in the Ada
# Lovelace whitepaper, RTX 5090 in the RTX Blackwell whitepaper ("FP16 Tensor TFLOPS with FP32
# Accumulate", dense). Cross-checked against glennklockwood.com/garden/processors and the
# datasheet tables reproduced by resellers (searched 2026-12-01).
_TABLE: dict[str, tuple[float, float]] = {
    "A100 SXM4": (312, 156),
    "A100 SXM": (312, 156),
    "A100 PCIE": (312, 156),
    "H100 HBM3": (989, 495),  # the SXM5 part reports itself as "NVIDIA H100 80GB HBM3"
    "H100 SXM5": (989, 495),
    "H100 PCIE": (756, 378),
    "H100 NVL": (835, 418),
    "H200": (989, 495),
    "H200 NVL": (835, 418),
    "GH200": (989, 495),
    "B200": (2250, 1100),
    "L4": (121, 60),
    "L40": (181, 90.5),
    "L40S": (362, 183),
    "A10": (125, 62.5),
    "T4": (65, 8.1),
    "V100 SXM2": (125, 15.7),
    "V100 PCIE": (112, 14),
    "RTX 3090": (71, 35.6),
    "RTX 4090": (165.2, 82.6),
    "RTX 5090": (209.5, 104.8),
}
_DROPPED = {"NVIDIA", "TESLA", "GEFORCE"}


@dataclass(frozen=True)
class Peak:
    """A peak in FLOP/s (None: unknown) and where it comes from, for people to read."""

    flops: float | None
    source: str


def normalise(name: str) -> str:
    """A device name as the table keys it: 'NVIDIA A100-SXM4-80GB' -> 'A100 SXM4'."""
    words = re.split(r"[\s\-_]+", name.strip().upper())
    return " ".join(w for w in words if w and w not in _DROPPED and not re.fullmatch(r"\d+GB", w))


def table_peak(name: str, dtype: torch.dtype) -> Peak:
    """The datasheet peak of the GPU called ``name`` for matmuls in ``dtype``, if it is in the table."""
    key = normalise(name)
    if key not in _TABLE:
        return Peak(None, f"unknown: {name!r} is not in gptiny's table of GPUs (hardware/peaks.py)")
    half, single = _TABLE[key]
    column = "fp32/TF32" if dtype == torch.float32 else "bf16/fp16"
    return Peak((single if dtype == torch.float32 else half) * 1e12, f"datasheet: {key}, dense {column}")


def measured_matmul(device: torch.device, dtype: torch.dtype, n: int, seconds: float) -> float:
    """The best FLOP/s of square n×n matmuls in ``dtype`` on ``device``, timed in short windows for ``seconds``.

    Best, not mean: a neighbour or a core still waking up can only make a window look slower.
    """
    # Its own generator: drawing from the global one would shift every later dropout mask, and
    # differently on the first call than on cached ones, so runs in one process would differ.
    gen = torch.Generator(device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    a @ b  # warm-up
    reps, best, spent = 4, float("inf"), 0.0
    while spent < seconds:
        synchronize(device)
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        synchronize(device)
        elapsed = time.perf_counter() - start
        best, spent = min(best, elapsed), spent + elapsed
    return 2 * n**3 * reps / best


def matmul_size(device: torch.device) -> int:
    """A matmul size near what the device reaches in practice: 1024 fills a CPU, a GPU needs 4096."""
    return 1024 if device.type == "cpu" else 4096


@functools.cache
def peak(device: torch.device, dtype: torch.dtype) -> Peak:
    """The peak MFU is measured against on ``device`` for ``dtype`` (the GPU table, else measured)."""
    if device.type == "cuda":
        return table_peak(torch.cuda.get_device_name(device), dtype)
    n = matmul_size(device)
    flops = measured_matmul(device, dtype, n, seconds=0.4)
    return Peak(flops, f"measured: best {n}x{n} {str(dtype).removeprefix('torch.')} matmul on {device.type}")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
