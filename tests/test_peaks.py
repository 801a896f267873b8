"""Peak FLOP/s for MFU: GPUs found by their whole name, unknown ones left unknown, the rest measured."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from gptiny_cli.hardware.peaks import normalise, peak, table_peak
from gptiny_cli.report.progress import plain_line
from gptiny_cli.training import faults, loop
from gptiny_cli.training.session import setup

BF16, FP32 = torch.bfloat16, torch.float32


@pytest.mark.parametrize(("name", "tflops"), [
    ("NVIDIA L4", 121), ("NVIDIA L40S", 362), ("NVIDIA L40", 181),
    ("NVIDIA H100 80GB HBM3", 989), ("NVIDIA H100 PCIe", 756), ("NVIDIA H100 NVL", 835),
    ("NVIDIA H200", 989), ("NVIDIA H200 NVL", 835), ("NVIDIA B200", 2250),
    ("NVIDIA A100-SXM4-80GB", 312), ("NVIDIA A100 80GB PCIe", 312), ("NVIDIA A10", 125),
    ("Tesla T4", 65), ("Tesla V100-SXM2-16GB", 125), ("Tesla V100-PCIE-32GB", 112),
    ("NVIDIA GeForce RTX 3090", 71), ("NVIDIA GeForce RTX 4090", 165.2), ("NVIDIA GeForce RTX 5090", 209.5),
])
def test_known_gpus_get_their_dense_datasheet_peak(name, tflops):
    assert table_peak(name, BF16).flops == pytest.approx(tflops * 1e12)


@pytest.mark.parametrize("name", ["NVIDIA T400", "NVIDIA RTX A1000", "NVIDIA A10G", "NVIDIA GeForce RTX 3090 Ti",
                                  "NVIDIA H100 80GB HBM3 MIG 1g.10gb", "NVIDIA H800"])
def test_a_name_that_only_contains_a_known_one_is_unknown(name):
    found = table_peak(name, BF16)
    assert found.flops is None and found.source.startswith("unknown")


def test_fp32_peaks_are_tf32_where_the_gpu_has_it_and_plain_fp32_where_not():
    assert table_peak("NVIDIA A100-SXM4-40GB", FP32).flops == pytest.approx(156e12)  # TF32
    assert table_peak("Tesla V100-SXM2-16GB", FP32).flops == pytest.approx(15.7e12)  # no TF32
    assert table_peak("Tesla T4", FP32).flops == pytest.approx(8.1e12)


def test_names_are_compared_without_vendor_words_and_memory_size():
    assert normalise("NVIDIA A100-SXM4-80GB") == "A100 SXM4"
    assert normalise("NVIDIA GeForce RTX 4090") == "RTX 4090"


def test_the_gpu_table_is_asked_with_the_device_name(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA L4")
    found = peak(torch.device("cuda", 0), BF16)
    assert found.flops == pytest.approx(121e12) and found.source == "datasheet: L4, dense bf16/fp16"


def test_a_cpu_peak_is_measured_and_says_so():
    found = peak(torch.device("cpu"), FP32)
    assert found.flops > 0 and found.source.startswith("measured: best 1024x1024 float32 matmul")


def test_mfu_of_an_unknown_gpu_shows_as_unknown():
    line = plain_line(loop.StepStats(iter=10, loss=2.0, lr=1e-3, tokens_per_sec=5000.0, mfu=None))
    assert line.endswith("5,000 tok/s mfu unknown")


class QueuedLoss:
    """A loss whose device work is still queued: reading it waits, as ``.item()`` waits for a GPU."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def item(self) -> float:
        time.sleep(self.seconds)
        return 2.0


def test_throughput_counts_the_wait_for_the_last_step(tiny_config):
    session = setup(tiny_config, device="cpu", runs_dir=Path("runs"), name="clock")
    try:
        start = time.perf_counter()
        stats = loop._log_step(session, QueuedLoss(0.2), 1e-3, 1000, start, faults.LossWatch(session.device))
    finally:
        session.close()
    assert stats.tokens_per_sec <= 1000 / 0.2
