"""One device set-up for every command that runs the model: train, eval, sample and serve.

They must agree: ``gptiny eval`` on the device a run trained on computes exactly the
whole-split loss training reported, which needs the same current GPU, the same float32
matmul mode and the same kernels (``place``), and on another device it uses what that device can run.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from gptiny_cli.hardware import kernels
from gptiny_cli.hardware.device import Precision, pick_device, resolve_precision


def use_device(device: torch.device, tf32: bool) -> torch.device:
    """Make ``device`` the current one and choose how CUDA computes float32 matmuls.

    ``torch.cuda.set_device`` makes capability checks and ``torch.cuda.*`` calls without an
    index look at this GPU, not cuda:0. TF32 (10-bit mantissas in float32 matmuls, several
    times faster on Ampere and later) is on for training and evaluation, which must match it,
    and off for sampling in float32, whose cached and plain loops print the same text only when
    their float32 matmuls are exact.
    """
    if device.type == "cuda":
        if device.index is not None:
            torch.cuda.set_device(device)
        torch.set_float32_matmul_precision("high" if tf32 else "highest")
    return device


def place(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` on ``device``, running the kernels that are faster there: ``kernels.for_cpu`` on a CPU.

    Every command that trains, evaluates or generates with a model puts it on its device through
    here, so that training's own losses and ``gptiny eval``'s agree to the last digit.
    """
    model = model.to(device)
    return kernels.for_cpu(model) if device.type == "cpu" else model


def for_evaluation(device: str, dtype: str) -> tuple[torch.device, Precision]:
    """The device ``--device`` names, set up as training set it up, and the run's ``train.dtype`` there.

    A dtype this device cannot run (float16 on a CPU, bfloat16 on macOS before 14) becomes
    float32 instead of an error: a run is evaluated wherever it is, not only where it trained.
    """
    dev = use_device(pick_device(device), tf32=True)
    return dev, resolve_precision(dtype, dev, fallback=True)


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU batch on ``device`` without making the CPU wait for the GPU.

    Copying from ordinary (pageable) memory makes the CPU wait until the GPU has reached the
    copy, that is until the previous step is done; from pinned memory the copy is queued
    (``non_blocking``) and the CPU goes on to draw the next batch while the GPU works.
    """
    if device.type != "cuda":
        return batch.to(device)
    return batch.pin_memory().to(device, non_blocking=True)
