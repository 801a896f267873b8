"""``gptiny doctor``: what it finds on this CPU machine, and on a GPU machine faked by its queries."""

from __future__ import annotations

import json
from types import SimpleNamespace

import torch
from typer.testing import CliRunner

from gptiny_cli.cli import app
from gptiny_cli.hardware import device as hw
from gptiny_cli.hardware import doctor


def run_doctor(*args: str):
    return CliRunner().invoke(app, ["doctor", "--seconds", "0.05", *args])


def test_json_holds_every_section_with_its_fields():
    result = run_doctor("--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    assert set(found) == {"versions", "devices", "auto", "cpu", "matmul", "extras"}
    assert found["versions"]["torch"] == torch.__version__ and found["versions"]["torch_build"].startswith("CPU")
    assert set(found["auto"]) == {"device", "train_dtype", "compile", "sample_precision"}
    assert all(set(choice) == {"value", "why"} and choice["why"] for choice in found["auto"].values())
    assert {"avx512", "avx512_bf16", "amx", "torch_threads", "logical_cores", "torch_capability"} <= set(found["cpu"])
    assert set(found["extras"]) == {"plot", "tensorboard", "hf", "onnx", "serve"}


def test_on_this_cpu_machine_auto_means_the_cpu_and_int8_sampling():
    found = json.loads(run_doctor("--json").output)
    assert [d["device"] for d in found["devices"]] == ["cpu"]
    assert found["auto"]["device"]["value"] == "cpu" and found["auto"]["compile"]["value"] is False
    assert found["auto"]["sample_precision"]["value"] == "int8"
    assert found["auto"]["train_dtype"]["value"] == ("bfloat16" if hw.cpu_has_native_bf16() else "float32")


def test_the_matmul_is_measured_and_a_cpu_has_no_datasheet_peak():
    m = json.loads(run_doctor("--json").output)["matmul"]
    assert m["device"] == "cpu" and m["size"] == 1024 and m["flops"] > 1e8
    assert m["peak_flops"] is None and m["fraction_of_peak"] is None and "no datasheet figure" in m["peak_source"]


def test_the_dev_install_has_the_plot_and_tensorboard_extras():
    extras = doctor.extras()
    assert extras["plot"] and extras["tensorboard"]


def test_a_t4_shows_as_emulated_bf16_and_auto_picks_fp16_and_compiling(monkeypatch):
    props = SimpleNamespace(name="Tesla T4", total_memory=15_835_660_288, major=7, minor=5)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index=None: props)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: (7, 5))
    monkeypatch.setattr(torch.version, "hip", None)
    gpu = doctor.devices()[1]
    assert gpu == {"device": "cuda:0", "name": "Tesla T4", "memory_gb": 15.8, "capability": "7.5",
                   "bf16": "emulated (slow; fp16 is used)"}
    auto = doctor.auto_choices()
    assert [auto[k]["value"] for k in ("device", "train_dtype", "compile", "sample_precision")] == [
        "cuda", "float16", True, "float32"]


def test_cpu_features_come_from_the_flags_and_are_unknown_without_them(monkeypatch):
    monkeypatch.setattr(hw, "cpu_flags", lambda: frozenset({"avx512f", "avx2"}))
    assert [doctor.cpu()[k] for k in ("avx512", "avx512_bf16", "amx")] == [True, False, False]
    monkeypatch.setattr(hw, "cpu_flags", lambda: frozenset())
    assert [doctor.cpu()[k] for k in ("avx512", "avx512_bf16", "amx")] == [None, None, None]


def test_the_text_report_says_what_auto_chooses_and_why():
    result = run_doctor()
    assert result.exit_code == 0, result.output
    assert "auto chooses:" in result.output and "--device = cpu: neither CUDA nor MPS is available" in result.output
    assert "matmul: 1024x1024" in result.output and "extras: plot installed" in result.output


def test_a_device_out_of_memory_for_the_matmul_is_reported_and_the_rest_still_shown(monkeypatch):
    # A GPU full of another process's tensors cannot be faked on a CPU machine but by its error.
    def full(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 32.00 MiB")

    monkeypatch.setattr(doctor.peaks, "measured_matmul", full)
    result = run_doctor()
    assert result.exit_code == 0, result.output
    assert "matmul: not measured: out of memory on cpu for two 1024x1024 matrices" in result.output
    assert "extras: plot installed" in result.output
    assert json.loads(run_doctor("--json").output)["matmul"]["flops"] is None
