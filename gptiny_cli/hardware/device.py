"""Where and in what number format code runs: device choice, precision, and what ``auto`` picks and why.

Each ``auto_*`` function returns its choice with the reason, one sentence a person can read:
training, evaluation and sampling use the choice, ``gptiny doctor`` shows both.
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass

import torch

from gptiny_cli.errors import GptinyError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def auto_device() -> tuple[torch.device, str]:
    """``--device auto``: CUDA, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda"), f"CUDA is available ({torch.cuda.device_count()} GPU(s))"
    if torch.backends.mps.is_available():
        return torch.device("mps"), "no CUDA; Apple's MPS is available"
    return torch.device("cpu"), "neither CUDA nor MPS is available"


def pick_device(name: str = "auto") -> torch.device:
    """The device ``--device NAME`` means, checked: auto, cpu, cuda, cuda:N or mps."""
    if name == "auto":
        return auto_device()[0]
    index = name.removeprefix("cuda:")
    if name not in ("cpu", "cuda", "mps") and not (name.startswith("cuda:") and index.isdigit()):
        raise GptinyError(f"--device {name!r} is invalid: use auto, cpu, cuda, cuda:N or mps")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GptinyError(f"--device {name} was asked for but CUDA is not available; use --device auto")
    if name.startswith("cuda:") and int(index) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise GptinyError(f"--device {name} does not exist: this machine has {count} GPU(s), cuda:0 to "
                          f"cuda:{count - 1}")
    if name == "mps" and not torch.backends.mps.is_available():
        raise GptinyError("--device mps was asked for but MPS is not available; use --device auto")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """True where torch computes bf16 with the CPU's bf16 instructions (AVX512-BF16 or AMX), the one
    class of CPU on which bf16 beats fp32 (elsewhere bf16 is emulated, several times slower).

    It follows what torch is allowed to use, not only what the chip has: ``ATEN_CPU_CAPABILITY``
    below AVX512 or ``ONEDNN_MAX_CPU_ISA`` below AVX512_CORE_BF16 hold torch down to an older
    class, and then gptiny chooses exactly as on a CPU of that class.
    """
    try:
        onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
    return (onednn and bool({"avx512_bf16", "amx_bf16"} & cpu_flags())
            and torch.backends.cpu.get_cpu_capability() == "AVX512" and _onednn_allows_bf16(onednn_isa_limit()))


def onednn_isa_limit() -> str | None:
    """The instruction set oneDNN (torch's CPU matmuls) is held to by ``ONEDNN_MAX_CPU_ISA``; None: no limit."""
    value = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").strip().upper()
    return value if value and value not in ("ALL", "DEFAULT") else None


def _onednn_allows_bf16(limit: str | None) -> bool:
    """oneDNN's names of the sets that include bf16 instructions: AVX512_CORE_BF16 and every later one."""
    return limit is None or any(word in limit for word in ("BF16", "FP16", "AMX", "AVX10"))


def cpu_class() -> str:
    """The class of CPU torch computes as here: ``avx512-bf16``, ``avx512``, ``avx2`` or ``default``
    (lower, or not x86); the figures in benchmarks/README.md are given per class."""
    if cpu_has_native_bf16():
        return "avx512-bf16"
    capability = torch.backends.cpu.get_cpu_capability()
    limit = onednn_isa_limit()
    if capability == "AVX512" and (limit is None or limit.startswith("AVX512") or "AVX10" in limit):
        return "avx512"
    if capability in ("AVX512", "AVX2") and (limit is None or limit.startswith(("AVX2", "AVX512", "AVX10"))):
        return "avx2"
    return "default"


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (Linux); empty elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cuda_bf16_native(index: int | None = None) -> bool:
    """Whether a CUDA GPU computes bf16 in hardware (Ampere, compute capability 8.0, and later).

    ``torch.cuda.is_bf16_supported()`` alone also counts bf16 that is emulated (T4, V100),
    which is far slower than fp16 there. ROCm GPUs that torch runs on all have bf16.
    """
    if torch.version.hip:
        return True
    major, _ = torch.cuda.get_device_capability(index)
    return major >= 8


def mps_has_bf16() -> bool:
    """bf16 on Apple's GPUs needs macOS 14 (Sonoma); before it, bf16 kernels raise."""
    return torch.backends.mps.is_macos_or_newer(14, 0)


def bf16_usable(device: torch.device) -> bool:
    """Whether bf16 tensors work on ``device`` at all (natively or not)."""
    return device.type != "mps" or mps_has_bf16()


def matmul_dtype(device: torch.device) -> torch.dtype:
    """Muon's Newton–Schulz step: bf16 where it is fast, else fp32 (MPS before macOS 14, CPUs without
    bf16 instructions, where bf16 matmuls are emulated: 70% of an AVX2 CPU's training step)."""
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    return torch.bfloat16 if bf16_usable(device) else torch.float32


@dataclass(frozen=True)
class Precision:
    """The autocast dtype (float32: no autocast) and whether gradients need loss scaling."""

    dtype: torch.dtype
    device_type: str

    @property
    def name(self) -> str:
        return {v: k for k, v in DTYPES.items()}[self.dtype]

    @property
    def uses_scaler(self) -> bool:
        """fp16 gradients underflow without loss scaling; torch's GradScaler works on CUDA and MPS."""
        return self.dtype == torch.float16 and self.device_type in ("cuda", "mps")

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)


def auto_dtype(device: torch.device) -> tuple[str, str]:
    """``train.dtype = "auto"`` on ``device``."""
    if device.type == "cuda":
        if cuda_bf16_native(device.index):
            return "bfloat16", "this GPU computes bf16 natively"
        return "float16", "this GPU has no native bf16 (emulated bf16 is slow): fp16 with loss scaling"
    if device.type == "cpu":
        if cpu_has_native_bf16():
            return "bfloat16", "this CPU has bf16 instructions (AVX512-BF16 or AMX)"
        return "float32", (f"this CPU computes as class {cpu_class()}, without bf16 instructions, where bf16 is "
                           "emulated and slower than fp32")
    return "float32", f"mixed precision is not chosen by itself on {device.type}"


def resolve_precision(setting: str, device: torch.device, fallback: bool = False) -> Precision:
    """``train.dtype`` on ``device``; master weights always stay fp32.

    With ``fallback`` (evaluating a run on another device than it trained on) a dtype the
    device cannot run becomes float32, the exact one, instead of an error.
    """
    if setting == "auto":
        setting = auto_dtype(device)[0]
    problem = _unsupported(setting, device)
    if problem and fallback:
        setting = "float32"
    elif problem:
        raise GptinyError(problem)
    return Precision(DTYPES[setting], device.type)


def _unsupported(setting: str, device: torch.device) -> str | None:
    if setting == "float16" and device.type == "cpu":
        return "train.dtype = 'float16' is not supported on the CPU; use 'bfloat16' or 'auto'"
    if setting == "bfloat16" and not bf16_usable(device):
        return "train.dtype = 'bfloat16' needs macOS 14 or later on Apple's GPUs; use 'float32' or 'auto'"
    return None


def auto_compile(device: torch.device) -> tuple[bool, str]:
    """``train.compile = "auto"``: on CPUs torch.compile gained at most a few percent for tens of
    seconds of compiling (measured), and on MPS it is not mature, so it compiles on CUDA only."""
    if device.type == "cuda":
        return True, "CUDA: compiling pays for itself within a run"
    return False, f"on {device.type} compiling costs more than it gains"


def auto_sample_precision(device: torch.device) -> tuple[str, str]:
    """``gptiny sample --precision auto``: int8 on CPUs, the fastest there; float32 elsewhere."""
    if device.type == "cpu":
        return "int8", "on a CPU int8 weights generate about 3x faster than float32"
    return "float32", "the int8 kernel is a CPU one; float32 is exact"


def sum_dtype(device: torch.device) -> torch.dtype:
    """For sums of losses kept on the device: float64, as Python's floats, except on MPS, which has none."""
    return torch.float32 if device.type == "mps" else torch.float64
