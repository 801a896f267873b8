"""On a CUDA GPU: what only a GPU can show (``pytest -m cuda``; benchmarks/gpu_check.sh runs these).

Skipped where torch sees no CUDA GPU, which is everywhere CI runs.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from gptiny_cli.cli import app
from gptiny_cli.config import ModelConfig, config_from_dict
from gptiny_cli.generation.sample import generate
from gptiny_cli.hardware.setup import use_device
from gptiny_cli.model import build_model
from gptiny_cli.training import loop
from gptiny_cli.training.resume import resume
from gptiny_cli.training.session import setup
from tests.conftest import tiny_raw, write_config

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    return result


def train_on_gpu(data_dir: Path, name: str, **train: object) -> Path:
    raw = tiny_raw(data_dir, **{"dtype": "bfloat16", "compile": True, **train})
    result = cli("train", str(write_config(Path(f"{name}.toml"), raw)), "--device", "cuda", "--name", name)
    assert result.exit_code == 0, result.output
    (run_dir,) = Path("runs").glob(f"*-{name}")
    return run_dir


def losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["iter"]: r["loss"] for r in rows if "loss" in r}


def test_a_few_compiled_bf16_steps_train_and_save_plain_parameter_names(data_dir):
    run_dir = train_on_gpu(data_dir, "compiled")
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "completed" and info["dtype"] == "bfloat16" and info["device"].startswith("cuda")
    assert all(v < 5 for v in losses(run_dir).values())
    with safe_open(str(run_dir / "checkpoint" / "model.safetensors"), framework="pt") as f:
        assert not [k for k in f.keys() if "_orig_mod" in k]


def test_a_resumed_gpu_run_continues_with_the_same_losses(data_dir):
    config = config_from_dict(tiny_raw(data_dir, dtype="bfloat16", checkpoint_interval=5))  # eager: compiling
    # three sessions would take most of the check's time, and compiled steps are the first test's
    straight = setup(config, device="cuda", runs_dir=Path("runs"), name="straight")
    assert list(loop.run(straight))[-1].status == "completed"
    cut = setup(config, device="cuda", runs_dir=Path("runs"), name="cut")
    assert list(loop.run(cut, should_stop=lambda: cut.iter >= 12))[-1].status == "interrupted"
    assert list(loop.run(resume(cut.run_dir, device="cuda")))[-1].status == "completed"
    resumed, expected = losses(cut.run_dir), losses(straight.run_dir)
    assert resumed.keys() == expected.keys()
    assert resumed == pytest.approx(expected, abs=2e-2)  # GPU kernels may reduce in another order


def test_eval_on_the_gpu_equals_the_final_loss_training_reported(data_dir):
    run_dir = train_on_gpu(data_dir, "evaluated", compile=False)
    final = json.loads((run_dir / "run.json").read_text())["final_val_loss"]
    result = cli("eval", str(run_dir), "--device", "cuda", "--precision", "auto", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["loss"] == pytest.approx(final, rel=1e-6)


@pytest.mark.parametrize("position", ["learned", "rope"])
def test_the_kv_cache_generates_what_the_plain_loop_does_in_float32(position):
    device = use_device(torch.device("cuda"), tf32=False)
    torch.manual_seed(0)
    config = ModelConfig(n_embd=64, block_size=32, n_layer=2, n_head=4, dropout=0.0, position=position)
    model = build_model(config, 20).to(device)
    texts = []
    for use_cache in (True, False):
        generator = torch.Generator(device).manual_seed(1)
        steps = generate(model, [1, 2, 3], 28, generator=generator, use_cache=use_cache, temperature=0.8)
        texts.append(torch.stack(list(steps)).tolist())
    assert texts[0] == texts[1]


def test_sampling_in_bfloat16_on_the_gpu_and_int8_refused_there(data_dir):
    run_dir = train_on_gpu(data_dir, "sampled", compile=False)
    result = cli("sample", str(run_dir), "--device", "cuda", "--precision", "bfloat16", "--tokens", "200",
                 "--seed", "1", "--no-stream")
    assert result.exit_code == 0, result.output
    refused = cli("sample", str(run_dir), "--device", "cuda", "--precision", "int8")
    assert refused.exit_code == 1 and "--precision int8 runs on the CPU only, not cuda" in refused.output


def test_a_training_step_never_waits_for_the_gpu(data_dir):
    config = config_from_dict(tiny_raw(data_dir, dtype="bfloat16", max_iters=100))
    session = setup(config, device="cuda", runs_dir=Path("runs"), name="waits")
    try:
        for _ in range(3):  # warm-up: first allocations, cuBLAS handles
            loop.train_step(session)
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                for _ in range(5):
                    loop.train_step(session)
            finally:
                torch.cuda.set_sync_debug_mode("default")
    finally:
        session.close()
    waits = [str(w.message) for w in caught if "synchroniz" in str(w.message)]
    assert waits == [], f"{len(waits)} GPU waits in 5 steps, e.g. {waits[:1]}"


def test_this_gpu_has_a_datasheet_peak_so_mfu_is_known():
    from gptiny_cli.hardware.peaks import peak

    found = peak(torch.device("cuda"), torch.bfloat16)
    assert found.flops, found.source
