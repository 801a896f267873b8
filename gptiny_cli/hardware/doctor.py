"""What ``gptiny doctor`` reports: versions, devices, what ``auto`` would choose and why, CPU
features, a short matmul measurement and the optional extras, all as plain data (dicts, lists,
strings, numbers) that the command renders or prints as JSON.

Nothing here trains or loads a model; the one measurement lasts about a second.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform

import torch

from gptiny_cli.hardware import device as hw
from gptiny_cli.hardware import peaks

# Each optional extra and the modules it brings (found with find_spec, never imported).
EXTRAS = {"plot": ("matplotlib",), "tensorboard": ("tensorboard",), "hf": ("transformers", "tokenizers"),
          "onnx": ("onnx", "onnxscript", "onnxruntime"), "serve": ("fastapi", "uvicorn")}


def report(measure_seconds: float = 1.0) -> dict:
    """Everything doctor shows; ``measure_seconds`` is how long the matmul measurement runs."""
    chosen, _ = hw.auto_device()
    auto = auto_choices()
    return {"versions": versions(), "devices": devices(), "auto": auto, "cpu": cpu(),
            "matmul": matmul(chosen, hw.DTYPES[auto["train_dtype"]["value"]], measure_seconds),
            "extras": extras()}


def versions() -> dict:
    try:
        ours = importlib.metadata.version("gptiny")
    except importlib.metadata.PackageNotFoundError:
        ours = None  # run from a source tree that was never installed
    if torch.version.hip:
        build = f"ROCm {torch.version.hip}"
    elif torch.version.cuda:
        build = f"CUDA {torch.version.cuda}"
    else:
        build = "CPU" + (" + MPS" if torch.backends.mps.is_built() else "")
    return {"gptiny": ours, "python": platform.python_version(), "torch": torch.__version__, "torch_build": build,
            "platform": platform.platform()}


def devices() -> list[dict]:
    """The CPU, every CUDA GPU torch sees, and Apple's GPU when MPS is available."""
    found = [{"device": "cpu", "name": cpu_model(), "memory_gb": None, "capability": None,
              "bf16": _cpu_bf16()}]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            found.append({"device": f"cuda:{index}", "name": props.name,
                          "memory_gb": round(props.total_memory / 1e9, 1),
                          "capability": f"{props.major}.{props.minor}",
                          "bf16": "native" if hw.cuda_bf16_native(index) else "emulated (slow; fp16 is used)"})
    if torch.backends.mps.is_available():
        found.append({"device": "mps", "name": f"Apple GPU, macOS {platform.mac_ver()[0]}",
                      "memory_gb": round(torch.mps.recommended_max_memory() / 1e9, 1), "capability": None,
                      "bf16": "native" if hw.mps_has_bf16() else "unavailable (needs macOS 14)"})
    return found


def auto_choices() -> dict:
    """What ``auto`` means here for each setting that has it, with the reason."""
    dev, why = hw.auto_device()
    dtype, dtype_why = hw.auto_dtype(dev)
    compiles, compile_why = hw.auto_compile(dev)
    sample, sample_why = hw.auto_sample_precision(dev)
    return {"device": {"value": str(dev), "why": why},
            "train_dtype": {"value": dtype, "why": dtype_why},
            "compile": {"value": compiles, "why": compile_why},
            "sample_precision": {"value": sample, "why": sample_why}}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu() -> dict:
    """The CPU's vector and matrix features (None: unknown, where /proc/cpuinfo is missing) and threads."""
    flags = hw.cpu_flags()

    def has(*names: str) -> bool | None:
        return any(n in flags for n in names) if flags else None

    return {"model": cpu_model(), "class": hw.cpu_class(), "torch_capability": torch.backends.cpu.get_cpu_capability(),
            "onednn_limit": hw.onednn_isa_limit(), "held_down_by": _held_down_by(),
            "avx512": has("avx512f"), "avx512_bf16": has("avx512_bf16"), "amx": has("amx_tile", "amx_bf16"),
            "torch_threads": torch.get_num_threads(), "logical_cores": os.cpu_count()}


def _cpu_bf16() -> str:
    if hw.cpu_has_native_bf16():
        return "native"
    if {"avx512_bf16", "amx_bf16"} & hw.cpu_flags():
        held = " and ".join(_held_down_by())
        return f"not used: torch is held to the {hw.cpu_class()} class by {held} (slower than fp32)"
    return "no bf16 instructions (slower than fp32)"


def _held_down_by() -> list[str]:
    """The environment variables that hold torch to an older class of CPU than the chip's."""
    names = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
    return [f"{name}={os.environ[name]}" for name in names if os.environ.get(name)]


def matmul(dev: torch.device, dtype: torch.dtype, seconds: float) -> dict:
    """A square matmul timed for ``seconds`` on ``dev``, against the datasheet peak where there is one."""
    n = peaks.matmul_size(dev)
    try:
        flops = peaks.measured_matmul(dev, dtype, n, seconds)
    except torch.OutOfMemoryError:
        # A GPU that other processes fill: doctor still reports everything else.
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        return {"device": str(dev), "dtype": str(dtype).removeprefix("torch."), "size": n, "seconds": seconds,
                "flops": None, "peak_flops": None, "peak_source": None, "fraction_of_peak": None,
                "error": f"out of memory on {dev} for two {n}x{n} matrices: is another process using it?"}
    if dev.type == "cuda":
        known = peaks.table_peak(torch.cuda.get_device_name(dev), dtype)
    else:
        known = peaks.Peak(None, f"no datasheet figure for {dev.type}: training measures its peak like this")
    return {"device": str(dev), "dtype": str(dtype).removeprefix("torch."), "size": n, "seconds": seconds,
            "flops": flops, "peak_flops": known.flops, "peak_source": known.source,
            "fraction_of_peak": flops / known.flops if known.flops else None, "error": None}


def extras() -> dict[str, bool]:
    """Which optional extras are installed (every module of the extra found)."""
    return {name: all(importlib.util.find_spec(module) is not None for module in modules)
            for name, modules in EXTRAS.items()}
