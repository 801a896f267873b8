"""The automatic choices follow the class of CPU torch computes as, so a machine held down with
ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA is chosen for exactly as a CPU of that class would be.

Each case runs in a fresh process: torch reads both variables once, when it starts.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gptiny_cli.hardware import device as hw
from tests.conftest import cli_env

PROBE = """
import json, torch
from gptiny_cli.hardware import device as hw
from gptiny_cli.hardware import doctor
cpu = torch.device("cpu")
print(json.dumps({"class": hw.cpu_class(), "train_dtype": hw.auto_dtype(cpu)[0],
                  "muon_matmul": str(hw.matmul_dtype(cpu)), "sample": hw.auto_sample_precision(cpu)[0],
                  "compile": hw.auto_compile(cpu)[0], "held_down_by": doctor.cpu()["held_down_by"]}))
"""

NATIVE_BF16 = hw.cpu_has_native_bf16()


def choices(**env: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE], env={**cli_env(), **env}, capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout)


def test_avx2_class_trains_in_float32_with_float32_newton_schulz():
    found = choices(ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2")
    assert found["class"] == "avx2"
    assert (found["train_dtype"], found["muon_matmul"]) == ("float32", "torch.float32")
    assert (found["sample"], found["compile"]) == ("int8", False)
    assert found["held_down_by"] == ["ATEN_CPU_CAPABILITY=avx2", "ONEDNN_MAX_CPU_ISA=AVX2"]


@pytest.mark.skipif("avx512f" not in hw.cpu_flags(), reason="this CPU has no AVX-512")
def test_avx512_without_bf16_is_its_own_class_and_trains_in_float32():
    found = choices(ONEDNN_MAX_CPU_ISA="AVX512_CORE")
    assert (found["class"], found["train_dtype"], found["muon_matmul"]) == ("avx512", "float32", "torch.float32")


def test_the_default_class_is_float32():
    found = choices(ATEN_CPU_CAPABILITY="default", ONEDNN_MAX_CPU_ISA="SSE41")
    assert (found["class"], found["train_dtype"], found["muon_matmul"]) == ("default", "float32", "torch.float32")


@pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no bf16 instructions")
def test_a_bf16_cpu_left_alone_trains_in_bfloat16():
    found = choices()
    assert (found["class"], found["train_dtype"], found["muon_matmul"]) == ("avx512-bf16", "bfloat16",
                                                                            "torch.bfloat16")
    assert found["held_down_by"] == []


def test_onednn_names_that_include_bf16_allow_it():
    assert hw._onednn_allows_bf16(None) and hw._onednn_allows_bf16("AVX512_CORE_BF16")
    assert hw._onednn_allows_bf16("AVX512_CORE_AMX") and hw._onednn_allows_bf16("AVX10_1_512")
    assert not hw._onednn_allows_bf16("AVX2") and not hw._onednn_allows_bf16("AVX512_CORE_VNNI")


def test_doctor_says_which_class_and_what_holds_it_down():
    done = subprocess.run([sys.executable, "-m", "gptiny_cli", "doctor", "--seconds", "0.05"], capture_output=True,
                          text=True, env={**cli_env(), "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert done.returncode == 0, done.stderr
    assert "computes as class avx2 (held down by ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2)" in done.stdout
    assert "train.dtype = float32: this CPU computes as class avx2" in done.stdout
