"""One device set-up for every command that runs the model: train, eval and sample.

They must agree: ``gptiny eval`` on the device a run trained on computes exactly the
whole-split loss training reported, which needs the same current GPU and the same float32
matmul mode, and on another device it uses what that device can run.
"""

from __future__ import annotations

import torch

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
