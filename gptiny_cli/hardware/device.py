"""Where and in what number format training runs: device choice, precision, peak FLOP/s."""

from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass

import torch

from gptiny_cli.errors import GptinyError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Dense bf16/fp16 tensor-core peaks (FLOP/s) of common accelerators, for MFU.
_KNOWN_PEAKS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12,
                "4090": 165e12, "3090": 71e12, "V100": 125e12, "T4": 65e12}


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` prefers CUDA, then Apple's MPS, then the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name not in ("cpu", "cuda", "mps") and not name.startswith("cuda:"):
        raise GptinyError(f"--device {name!r} is invalid: use auto, cpu, cuda, cuda:N or mps")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GptinyError("--device cuda was asked for but CUDA is not available; use --device auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise GptinyError("--device mps was asked for but MPS is not available; use --device auto")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """True on CPUs with bf16 instructions (AVX512-BF16 or AMX), where bf16 beats fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) and _cpuinfo_has_bf16()
    except (AttributeError, RuntimeError):
        return False


def _cpuinfo_has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@dataclass(frozen=True)
class Precision:
    """The autocast dtype (None for plain fp32) and whether gradients need loss scaling."""

    dtype: torch.dtype
    device_type: str

    @property
    def name(self) -> str:
        return {v: k for k, v in DTYPES.items()}[self.dtype]

    @property
    def uses_scaler(self) -> bool:
        return self.dtype == torch.float16 and self.device_type == "cuda"

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)


def resolve_precision(setting: str, device: torch.device) -> Precision:
    """``train.dtype`` to a Precision; master weights always stay fp32."""
    if setting == "auto":
        if device.type == "cuda":
            setting = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        elif device.type == "cpu":
            setting = "bfloat16" if cpu_has_native_bf16() else "float32"
        else:
            setting = "float32"
    if setting == "float16" and device.type == "cpu":
        raise GptinyError("train.dtype = 'float16' is not supported on the CPU; use 'bfloat16' or 'auto'")
    return Precision(DTYPES[setting], device.type)


@functools.cache
def peak_flops(device: torch.device, dtype: torch.dtype) -> float:
    """Peak matmul FLOP/s: from a table for known GPUs, else a short measured matmul."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, flops in _KNOWN_PEAKS.items():
            if key in name:
                return flops if dtype != torch.float32 else flops / 2
    # Best of many short timings of a square matmul over ~0.4 s: a neighbour or a core still
    # waking up can only make one look slower, and a few windows were not always enough here.
    n, reps = 1024, 4
    # Its own generator: drawing from the global one would shift every later dropout mask, and
    # differently on the first call than on cached ones, so runs in one process would differ.
    gen = torch.Generator(device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    a @ b  # warm-up
    best, spent = float("inf"), 0.0
    while spent < 0.4:
        _synchronize(device)
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        _synchronize(device)
        elapsed = time.perf_counter() - start
        best, spent = min(best, elapsed), spent + elapsed
    return 2 * n**3 * reps / best


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
