"""Helpers for the resume and fault tests: train in process or in a real `gptiny` process, compare results."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file

from gptiny_cli.config import RunConfig, config_from_dict
from gptiny_cli.training import loop
from gptiny_cli.training.resume import resume
from gptiny_cli.training.session import setup
from tests.conftest import cli_env, tiny_raw, write_config

CHECKPOINT = Path("checkpoint")


def long_raw(data_dir: Path, **train_keys: object) -> dict:
    """A tiny run whose learning rate does not depend on max_iters, so it can be cut anywhere and
    finished with --set train.max_iters=N exactly like a run that was given N from the start."""
    keys = {"lr_decay": "constant", "max_iters": 1_000_000, "log_interval": 1, "eval_interval": 10,
            "checkpoint_interval": 3, **train_keys}
    raw = tiny_raw(data_dir, **keys)
    raw["model"]["dropout"] = 0.1  # dropout is random too: a resumed run must draw the same masks
    return raw


def with_max_iters(raw: dict, max_iters: int) -> RunConfig:
    return config_from_dict({**raw, "train": {**raw["train"], "max_iters": max_iters}})


def train_straight(config: RunConfig, name: str = "straight") -> Path:
    session = setup(config, device="cpu", name=name)
    events = list(loop.run(session))
    assert events[-1].status == "completed"
    return session.run_dir


def train_until(config: RunConfig, stop_at: int, name: str = "cut") -> Path:
    """Train as if Ctrl-C came during the step that reaches ``stop_at``."""
    session = setup(config, device="cpu", name=name)
    events = list(loop.run(session, should_stop=lambda: session.iter >= stop_at))
    assert events[-1].status == "interrupted" and events[-1].iter == stop_at
    return session.run_dir


def resume_to_end(run_dir: Path, *overrides: str) -> list:
    events = list(loop.run(resume(run_dir, overrides=list(overrides), device="cpu")))
    assert events[-1].status == "completed"
    return events


def tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def assert_same_tensors(a: Path, b: Path) -> None:
    """Every tensor of two safetensors files equal, bit for bit."""
    first, second = tensors(a), tensors(b)
    assert first.keys() == second.keys()
    different = [k for k in first if first[k].dtype != second[k].dtype or not torch.equal(first[k], second[k])]
    assert not different, f"tensors differ: {different}"


def assert_same_run(straight: Path, other: Path) -> None:
    """The final weights (last and best), optimizer moments, and every logged loss."""
    for name in ("model-last.safetensors", "model.safetensors", "state.safetensors"):
        assert_same_tensors(straight / CHECKPOINT / name, other / CHECKPOINT / name)
    assert losses(straight) == losses(other)


def losses(run_dir: Path) -> list[tuple]:
    """Each metrics row's iteration and losses, without timings."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["iter"], r.get("loss"), r.get("train_loss"), r.get("val_loss"), r.get("ema_val_loss")) for r in rows]


def run_info(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def saved_step(run_dir: Path) -> int:
    return json.loads((run_dir / CHECKPOINT / "manifest.json").read_text())["step"]


def start_gptiny(*args: str, env: dict | None = None, **popen: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gptiny_cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env or cli_env(), **popen)


def train_process(data_dir: Path, raw: dict, *extra: str, **popen: object) -> subprocess.Popen:
    config = write_config(Path("long.toml"), raw)
    return start_gptiny("train", str(config), "--device", "cpu", "--name", "long", *extra, **popen)


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Poll until ``condition`` holds; fail with the process's output if it ends first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"gptiny exited with {proc.returncode} too early:\n{out}\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the training process")
        time.sleep(0.01)


def logged_iter(run_dir: Path) -> int:
    """The latest iteration in metrics.jsonl, 0 before any."""
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    for line in reversed(lines):
        try:
            return json.loads(line)["iter"]
        except ValueError:
            continue
    return 0


def the_run(runs_dir: Path = Path("runs")) -> Path:
    (run_dir,) = runs_dir.iterdir()
    return run_dir
