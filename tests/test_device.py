"""What each device gets, decided on this CPU machine by faking the answers of torch's device queries."""

from __future__ import annotations

import pytest
import torch

from gptiny_cli.config import ModelConfig, TrainConfig
from gptiny_cli.errors import GptinyError
from gptiny_cli.generation.inference import for_inference
from gptiny_cli.generation.sample import Sampler
from gptiny_cli.hardware import device, setup
from gptiny_cli.hardware.device import Precision, pick_device, resolve_precision
from gptiny_cli.model import build_model
from gptiny_cli.training import distributed
from gptiny_cli.training.optim import make_optimizer
from tests.conftest import tiny_raw

CUDA, MPS, CPU = torch.device("cuda"), torch.device("mps"), torch.device("cpu")


@pytest.fixture
def gpu(monkeypatch):
    """A machine with CUDA GPUs of a given compute capability (default: two Turing GPUs, like a T4)."""
    def fake(count: int = 2, capability: tuple[int, int] = (7, 5)) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
        monkeypatch.setattr(torch.version, "hip", None)
    return fake


@pytest.fixture
def old_macos(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.mps, "is_macos_or_newer", lambda major, minor: (major, minor) < (14, 0))


def test_auto_picks_fp16_with_loss_scaling_on_a_gpu_whose_bf16_is_emulated(gpu):
    gpu(capability=(7, 5))  # T4: torch.cuda.is_bf16_supported() says True, by emulation
    precision = resolve_precision("auto", CUDA)
    assert precision.dtype == torch.float16 and precision.uses_scaler


def test_auto_picks_bf16_on_a_gpu_that_computes_it(gpu):
    gpu(capability=(8, 0))
    precision = resolve_precision("auto", CUDA)
    assert precision.dtype == torch.bfloat16 and not precision.uses_scaler


def test_fp16_on_mps_is_trained_with_loss_scaling():
    assert Precision(torch.float16, "mps").uses_scaler
    assert torch.amp.GradScaler("mps").is_enabled()


def test_bf16_on_mps_before_macos_14_is_refused_where_asked_for(old_macos):
    with pytest.raises(GptinyError, match="train.dtype = 'bfloat16' needs macOS 14"):
        resolve_precision("bfloat16", MPS)
    with pytest.raises(GptinyError, match="--precision bfloat16 needs macOS 14"):
        for_inference(build_model(_tiny_model(), 10), "bfloat16", MPS)


def test_muon_orthogonalizes_in_fp32_on_mps_before_macos_14(old_macos):
    assert device.matmul_dtype(MPS) == torch.float32
    assert device.matmul_dtype(CPU) == torch.bfloat16


def test_evaluating_an_fp16_run_on_a_cpu_falls_back_to_fp32():
    dev, precision = setup.for_evaluation("cpu", "float16")
    assert dev == CPU and precision.dtype == torch.float32
    with pytest.raises(GptinyError, match="not supported on the CPU"):
        resolve_precision("float16", CPU)  # training there is still refused


def test_adamw_is_fused_on_mps(data_dir):
    train = TrainConfig(**tiny_raw(data_dir)["train"])
    model = build_model(_tiny_model(), 10)
    assert make_optimizer(model, train, MPS).defaults["fused"] is True
    assert not make_optimizer(model, train, CPU).defaults["fused"]


def test_a_gpu_index_is_checked_against_the_gpus_there(gpu):
    gpu(count=2)
    assert pick_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(GptinyError, match=r"cuda:2 does not exist: this machine has 2 GPU\(s\), cuda:0 to cuda:1"):
        pick_device("cuda:2")
    with pytest.raises(GptinyError, match="is invalid"):
        pick_device("cuda:one")


def test_using_a_gpu_makes_it_current_and_sets_tf32(gpu, monkeypatch):
    gpu(count=2)
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    before = torch.get_float32_matmul_precision()
    try:
        setup.use_device(torch.device("cuda", 1), tf32=True)
        assert chosen == [torch.device("cuda", 1)] and torch.get_float32_matmul_precision() == "high"
        setup.use_device(torch.device("cuda", 1), tf32=False)
        assert torch.get_float32_matmul_precision() == "highest"
    finally:
        torch.set_float32_matmul_precision(before)


def test_a_process_that_sees_one_gpu_takes_it_whatever_its_local_rank(gpu):
    gpu(count=1)  # SLURM --gpus-per-task=1
    world = distributed.World(CPU, rank=3, size=4, local_rank=3)
    assert distributed._device_for(world, "auto") == torch.device("cuda", 0)


def test_a_local_rank_beyond_the_visible_gpus_is_refused(gpu):
    gpu(count=2)
    with pytest.raises(GptinyError, match="local rank 2 has no GPU: this process sees 2"):
        distributed._device_for(distributed.World(CPU, rank=2, size=3, local_rank=2), "cuda")


def test_nccl_is_told_to_raise_on_a_lost_peer_unless_the_user_chose_otherwise():
    env = {"TORCH_NCCL_ASYNC_ERROR_HANDLING": "1"}
    distributed.raise_on_lost_peer(env)
    assert env == {"TORCH_NCCL_ASYNC_ERROR_HANDLING": "1"}
    fresh: dict[str, str] = {}
    distributed.raise_on_lost_peer(fresh)
    assert fresh == {"TORCH_NCCL_ASYNC_ERROR_HANDLING": "2"}


def test_blocking_waits_are_the_users_choice_never_gptinys():
    fresh: dict[str, str] = {}
    distributed.raise_on_lost_peer(fresh)
    assert "TORCH_NCCL_BLOCKING_WAIT" not in fresh  # it would hold the host on every all-reduce
    chosen = {"TORCH_NCCL_BLOCKING_WAIT": "1"}
    distributed.raise_on_lost_peer(chosen)
    assert chosen == {"TORCH_NCCL_BLOCKING_WAIT": "1", "TORCH_NCCL_ASYNC_ERROR_HANDLING": "2"}


def test_a_cpu_generator_can_drive_a_model_on_another_device():
    generator = torch.Generator().manual_seed(0)
    sampler = Sampler(2, 5, generator=generator, device=torch.device("meta"))
    assert sampler(torch.zeros(2, 5, device="meta")).device.type == "meta"


def test_auto_compiles_on_cuda_only_and_samples_int8_on_cpus_only():
    assert device.auto_compile(CUDA)[0] and not device.auto_compile(CPU)[0] and not device.auto_compile(MPS)[0]
    assert device.auto_sample_precision(CPU)[0] == "int8" and device.auto_sample_precision(CUDA)[0] == "float32"


def _tiny_model() -> ModelConfig:
    return ModelConfig(n_embd=32, block_size=8, n_layer=1, n_head=2, dropout=0.0)
