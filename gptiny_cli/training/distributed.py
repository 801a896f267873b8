"""Data parallelism on torch.distributed: which process this is, and the few collectives training needs.

torchrun (or ``gptiny train --nproc N``) starts one process per device and tells each its place
through environment variables. A process started without them is a world of one: no process
group, no DDP, and every collective below returns its input, so the single-process path is
exactly what it was.
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, replace
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from gptiny_cli.errors import GptinyError
from gptiny_cli.hardware.device import pick_device

# A collective that waits longer than this for a peer fails instead of hanging: long enough for
# rank 0 to write a checkpoint or for torch.compile to finish on every rank.
DEFAULT_TIMEOUT_S = 300
TIMEOUT_ENV = "GPTINY_DIST_TIMEOUT"


@dataclass(frozen=True)
class World:
    """This process's place in the job; ``size == 1`` means plain single-process training."""

    device: torch.device
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    run_id: str | None = None  # torchrun's rendezvous id: the same for every restart of one job
    restart: int = 0  # how often torchrun has restarted the workers of this job

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sum(self, values: list[float]) -> list[float]:
        """Each value summed over all ranks (gloo has no average, so callers divide)."""
        if self.size == 1:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.tolist()

    def min(self, value: float) -> float:
        if self.size == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
        return tensor.item()

    def mean(self, value: float) -> float:
        return self.sum([value])[0] / self.size

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on one: ranks must agree to stop at the same step."""
        return self.sum([1.0 if flag else 0.0])[0] > 0

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def broadcast(self, text: str) -> str:
        """Rank 0's ``text`` on every rank (as UTF-8 bytes in a tensor: nothing is unpickled)."""
        if self.size == 1:
            return text
        data = text.encode("utf-8") if self.is_main else b""
        length = torch.tensor([len(data)], dtype=torch.int64, device=self.device)
        dist.broadcast(length, src=0)
        buffer = torch.zeros(int(length.item()), dtype=torch.uint8, device=self.device)
        if self.is_main and data:
            buffer.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        dist.broadcast(buffer, src=0)
        return bytes(buffer.cpu().tolist()).decode("utf-8")


def single(device: str = "auto") -> World:
    return World(pick_device(device))


def _env_int(env: Mapping[str, str], key: str, default: int) -> int:
    value = env.get(key)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise GptinyError(f"environment variable {key}={value!r} is not an integer") from None


def timeout_from_env(env: Mapping[str, str] = os.environ) -> timedelta:
    seconds = _env_int(env, TIMEOUT_ENV, DEFAULT_TIMEOUT_S)
    if seconds < 1:
        raise GptinyError(f"{TIMEOUT_ENV}={seconds} is invalid: give the collective timeout in seconds, at least 1")
    return timedelta(seconds=seconds)


def under_torchrun(env: Mapping[str, str] = os.environ) -> bool:
    return "TORCHELASTIC_RUN_ID" in env or "WORLD_SIZE" in env


def _device_for(world: World, name: str) -> torch.device:
    """cuda:LOCAL_RANK when GPUs train (cuda:0 when the process sees one GPU), else the CPU."""
    if name not in ("auto", "cuda", "cpu"):
        raise GptinyError(f"--device {name!r} cannot be used with several processes: each process takes "
                          "cuda:LOCAL_RANK; give --device auto, cuda or cpu")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise GptinyError("--device cuda was asked for but CUDA is not available; use --device auto")
    visible = torch.cuda.device_count()
    if visible == 1:  # e.g. SLURM's --gpus-per-task=1: each process sees its own GPU as cuda:0
        return torch.device("cuda", 0)
    if world.local_rank >= visible:
        raise GptinyError(f"local rank {world.local_rank} has no GPU: this process sees {visible}; "
                          "start at most that many processes per node")
    return torch.device("cuda", world.local_rank)


def init(device: str = "auto", env: Mapping[str, str] = os.environ) -> World:
    """This process's World as torchrun describes it (a world of one outside torchrun).

    With several processes it picks cuda:LOCAL_RANK or the CPU and joins the process group:
    nccl on CUDA, gloo on the CPU. Every collective times out (``GPTINY_DIST_TIMEOUT``), so a
    peer that stopped answering fails the job instead of hanging it.
    """
    size, rank = _env_int(env, "WORLD_SIZE", 1), _env_int(env, "RANK", 0)
    if not 0 <= rank < size:
        raise GptinyError(f"RANK={rank} is outside WORLD_SIZE={size}; start the job with torchrun")
    world = World(torch.device("cpu"), rank, size, _env_int(env, "LOCAL_RANK", 0), env.get("TORCHELASTIC_RUN_ID"),
                  _env_int(env, "TORCHELASTIC_RESTART_COUNT", 0))
    if size == 1:
        return replace(world, device=pick_device(device))
    world = replace(world, device=_device_for(world, device))
    timeout = timeout_from_env(env)
    store = _store(env, world, timeout)
    if world.device.type == "cuda":
        torch.cuda.set_device(world.device)
        raise_on_lost_peer()
        dist.init_process_group("nccl", store=store, rank=rank, world_size=size, timeout=timeout,
                                device_id=world.device)
    else:
        dist.init_process_group("gloo", store=store, rank=rank, world_size=size, timeout=timeout)
    return world


# Read by ProcessGroupNCCL when the group is created. By default (async error handling 3,
# "SkipCleanUp") a rank whose peer died blocks inside a GPU wait until the watchdog kills the
# process, so the graceful path never runs and run.json stays "running". With 2 ("CleanUpOnly")
# the watchdog, on a collective that outlives the group's timeout, aborts the communicators
# without killing the process: that unblocks a GPU stream stuck on the dead peer, and the next
# collective raises in Python, as gloo's do. TORCH_NCCL_BLOCKING_WAIT=1 would make every
# collective's wait hold the host until the GPU finished it, which costs the overlap of DDP's
# all-reduces with the backward pass on every step; it stays the user's choice (distributed.md).
NCCL_ERROR_ENV = {"TORCH_NCCL_ASYNC_ERROR_HANDLING": "2"}


def raise_on_lost_peer(environ: MutableMapping[str, str] = os.environ) -> None:
    """Make NCCL collectives raise on a lost peer (before ``init_process_group``); the user's own
    settings of these variables win, TORCH_NCCL_BLOCKING_WAIT among them."""
    for key, value in NCCL_ERROR_ENV.items():
        environ.setdefault(key, value)


def _store(env: Mapping[str, str], world: World, timeout: timedelta) -> dist.Store:
    """The key-value store through which the processes of this attempt of the job find each other.

    torchrun's agent can host one TCPStore for a job and keep it across restarts
    (TORCHELASTIC_USE_AGENT_STORE); restarted workers then read the previous attempt's peer
    addresses and fail to connect (torch 2.13, pytorch/pytorch#135712). So the keys are scoped
    by attempt. Without the agent's store, rank 0 hosts a fresh one, as torch's env:// does.
    """
    if "MASTER_ADDR" not in env or "MASTER_PORT" not in env:
        raise GptinyError("MASTER_ADDR and MASTER_PORT are not set; start several processes with torchrun")
    shared = env.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(env["MASTER_ADDR"], _env_int(env, "MASTER_PORT", 0), world.size,
                          is_master=not shared and world.is_main, timeout=timeout, multi_tenant=True)
    return dist.PrefixStore(f"gptiny/attempt-{world.restart}", store)


def shutdown() -> None:
    """Leave the process group, after the DDP wrappers that use it are gone.

    A DistributedDataParallel module still alive when its process group is destroyed (they
    hold reference cycles, so dropping the last name is not enough) made processes abort at
    exit ("terminate called without an active exception") in about one run in ten here.
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def wrap(module: nn.Module, world: World) -> DistributedDataParallel | None:
    """The DDP wrapper that averages gradients over ranks; None for a single process."""
    if world.size == 1:
        return None
    ids = [world.device.index] if world.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


def sync_gradients(ddp: DistributedDataParallel | None, now: bool) -> contextlib.AbstractContextManager:
    """Around a micro-step's forward and backward: all-reduce gradients only when ``now``.

    With gradient accumulation the all-reduce runs once, on the last micro-step, over the
    gradients summed locally until then.
    """
    if ddp is None or now:
        return contextlib.nullcontext()
    return ddp.no_sync()


def lost_peer(error: BaseException) -> bool:
    """Whether an error means another rank is gone (crashed, killed or timed out)."""
    if isinstance(error, getattr(dist, "DistError", ())):  # DistBackendError, DistNetworkError, ...
        return True
    # gloo reports a dead or silent peer as a plain RuntimeError
    text = str(error)
    return isinstance(error, RuntimeError) and any(
        sign in text for sign in ("Connection closed by peer", "Connection reset by peer", "Timed out"))


def lost_peer_error(error: BaseException) -> GptinyError:
    """What a rank that lost its peers says: the gist of the backend's error, without its source location."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", str(error).strip())
    reason = text.split(". ")[0].splitlines()[0] if text else type(error).__name__
    return GptinyError(f"lost contact with the other processes ({reason}); another rank probably stopped first, "
                       "and its own message says why")
