"""Training: the loop learns, writes a complete run directory, and is reproducible."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from safetensors import safe_open

from gptiny_cli.config import config_from_dict
from gptiny_cli.training import loop
from gptiny_cli.training.session import checkpoint_bytes, setup
from tests.conftest import tiny_raw


def run_to_end(config, runs_dir: Path = Path("runs"), name: str = "t") -> tuple[Path, list]:
    session = setup(config, device="cpu", runs_dir=runs_dir, name=name)
    events = list(loop.run(session))
    return session.run_dir, events


def test_loss_falls_on_a_repetitive_corpus(data_dir):
    config = config_from_dict(tiny_raw(data_dir, max_iters=60, eval_interval=30))
    _, events = run_to_end(config)
    evals = [e for e in events if isinstance(e, loop.EvalStats)]
    assert evals[0].val_loss > math.log(20)  # near uniform over the vocabulary at the start
    assert evals[-1].val_loss < evals[0].val_loss - 1.0


def test_run_directory_holds_every_file(tiny_config):
    run_dir, events = run_to_end(tiny_config)
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.toml", "vocab.json", "checkpoint", "metrics.jsonl", "run.json"} <= names
    assert {p.name for p in (run_dir / "checkpoint").iterdir()} == {
        "model.safetensors", "model-last.safetensors", "state.safetensors", "state.json", "manifest.json"}
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "completed"
    assert info["iters"] == 20
    assert info["parameters"] > 0
    assert math.isfinite(info["final_val_loss"])
    assert isinstance(events[-1], loop.Finished)


def test_metrics_rows_have_the_documented_fields(tiny_config):
    run_dir, _ = run_to_end(tiny_config)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "val_loss" in r]
    steps = [r for r in rows if "loss" in r]
    assert [r["iter"] for r in evals] == [0, 10, 20]
    assert all({"iter", "train_loss", "val_loss", "elapsed_s"} <= r.keys() for r in evals)
    assert all({"iter", "loss", "lr", "tokens_per_sec"} <= r.keys() for r in steps)


def test_weights_describe_themselves(tiny_config):
    run_dir, _ = run_to_end(tiny_config)
    with safe_open(str(run_dir / "checkpoint" / "model.safetensors"), framework="pt") as f:
        meta = f.metadata()
        names = set(f.keys())
    assert json.loads(meta["model_config"])["n_embd"] == 16
    assert "blocks.0.attn.qkv.weight" in names


def test_same_seed_gives_the_same_losses(tiny_config):
    def losses():
        run_dir, _ = run_to_end(tiny_config)
        return [json.loads(line).get("loss") for line in (run_dir / "metrics.jsonl").read_text().splitlines()]

    assert losses() == losses()


def test_different_seeds_give_different_losses(data_dir):
    a = run_to_end(config_from_dict(tiny_raw(data_dir, seed=1)))[1][-1]
    b = run_to_end(config_from_dict(tiny_raw(data_dir, seed=2)))[1][-1]
    assert a.best_val_loss != b.best_val_loss


def test_two_runs_in_the_same_second_get_distinct_directories(tiny_config):
    first = setup(tiny_config, device="cpu", name="same").run_dir
    second = setup(tiny_config, device="cpu", name="same").run_dir
    assert first != second and first.is_dir() and second.is_dir()


def test_patience_stops_training_early(data_dir):
    config = config_from_dict(tiny_raw(data_dir, max_iters=200, eval_interval=1, learning_rate=0.5,
                                       patience=1, warmup_iters=0))
    _, events = run_to_end(config)
    finished = events[-1]
    assert finished.early_stopped and finished.iter < 200


def test_bigram_baseline_learns(data_dir):
    raw = tiny_raw(data_dir, learning_rate=0.1, max_iters=60, eval_interval=60)
    raw["model"]["arch"] = "bigram"
    _, events = run_to_end(config_from_dict(raw))
    evals = [e for e in events if isinstance(e, loop.EvalStats)]
    assert evals[-1].val_loss < evals[0].val_loss - 0.5


def test_muon_optimizer_trains(data_dir):
    config = config_from_dict(tiny_raw(data_dir, optimizer="muon", max_iters=60, eval_interval=30))
    _, events = run_to_end(config)
    evals = [e for e in events if isinstance(e, loop.EvalStats)]
    assert evals[-1].val_loss < evals[0].val_loss - 1.0


def tensor_bytes(path: Path) -> int:
    with safe_open(str(path), framework="pt") as f:
        return sum(f.get_tensor(name).numel() * f.get_tensor(name).element_size() for name in f.keys())


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_the_disk_check_counts_the_tensors_a_checkpoint_writes(data_dir, optimizer):
    config = config_from_dict(tiny_raw(data_dir, optimizer=optimizer, ema_decay=0.9, ema_start=0.5))
    session = setup(config, device="cpu")
    expected = checkpoint_bytes(session)  # before training, as the check runs
    list(loop.run(session))
    checkpoint = session.run_dir / "checkpoint"
    written = sum(tensor_bytes(checkpoint / name)  # the best weights at most a copy of the last
                  for name in ("model.safetensors", "model-last.safetensors", "state.safetensors"))
    assert "ema.tok_emb.weight" in safe_open(str(checkpoint / "state.safetensors"), framework="pt").keys()
    assert expected == written


def test_tying_the_head_saves_parameters_but_no_flops(data_dir):
    def flops(tie: bool) -> float:
        raw = tiny_raw(data_dir)
        raw["model"]["tie_weights"] = tie
        return setup(config_from_dict(raw), device="cpu", name=f"tie-{tie}").flops_per_token

    assert flops(True) == flops(False)
