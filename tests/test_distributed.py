"""Data-parallel training: real torchrun jobs on gloo, checked against one process doing the same work.

The property behind the comparisons: micro-batch g of a step (g = rank × grad_accum + micro-step)
is drawn, data and dropout, from seeds of (seed, step, g) alone. So 2 processes with 1 micro-batch
each train on exactly the batches 1 process accumulating 2 does, and their losses agree up to the
order of floating-point sums.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from gptiny_cli.cli import app
from gptiny_cli.config import config_from_dict
from gptiny_cli.errors import GptinyError
from gptiny_cli.prepare.corpus import prepare_corpus
from gptiny_cli.training import loop
from gptiny_cli.training.distributed import World
from gptiny_cli.training.resume import resume
from gptiny_cli.training.session import setup
from tests.conftest import TINY_TEXT, cli_env, tiny_raw, write_config

# Bounds every job: a hang fails the test instead of stalling the suite.
JOB_TIMEOUT_S = 240


def raw_config(data_dir: Path, **train_keys: object) -> dict:
    # A constant learning rate keeps the schedule of the first steps independent of max_iters.
    return tiny_raw(data_dir, lr_decay="constant", **train_keys)


def job_env(**extra: str) -> dict[str, str]:
    return {**cli_env(), "GPTINY_DIST_TIMEOUT": "120", **extra}


def torchrun(cwd: Path, *train_args: str, launcher: tuple[str, ...] = (), env: dict | None = None):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               *launcher, "-m", "gptiny_cli", "train", *train_args, "--device", "cpu"]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env or job_env(),
                          timeout=JOB_TIMEOUT_S)


def curve(run_dir: Path) -> dict[tuple[str, int], float]:
    """Every logged loss of a run by (kind, iteration); a duplicated row fails the test."""
    points: dict[tuple[str, int], float] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        for kind in ("loss", "train_loss", "val_loss"):
            if kind in row:
                assert (kind, row["iter"]) not in points, f"{kind} at iteration {row['iter']} logged twice"
                points[(kind, row["iter"])] = row[kind]
    return points


def assert_same_curve(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert math.isclose(got[key], value, rel_tol=1e-5), f"{key}: {got[key]} vs {value}"


def single_process_run(raw: dict, runs_dir: Path) -> Path:
    session = setup(config_from_dict(raw), device="cpu", runs_dir=runs_dir, name="single")
    list(loop.run(session))
    return session.run_dir


@dataclass
class Job:
    root: Path
    data_dir: Path
    config: Path
    result: subprocess.CompletedProcess
    run_dir: Path


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Job:
    """One two-process run of 20 steps, batch 4 per process, shared by the tests that read it."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ddp")
    (root / "tiny.txt").write_text(TINY_TEXT, encoding="utf-8")
    data_dir = root / "data"
    prepare_corpus(root / "tiny.txt", data_dir, val_fraction=0.1)
    config = write_config(root / "tiny.toml", raw_config(data_dir))
    result = torchrun(root, str(config))
    assert result.returncode == 0, result.stderr
    (run_dir,) = (root / "runs").iterdir()
    return Job(root, data_dir, config, result, run_dir)


def test_two_processes_write_one_run_directory_with_one_set_of_files(job, tmp_path):
    reference = single_process_run(raw_config(job.data_dir), tmp_path / "single")
    assert sorted(p.name for p in job.run_dir.iterdir()) == sorted(p.name for p in reference.iterdir())
    info = json.loads((job.run_dir / "run.json").read_text())
    assert info["status"] == "completed" and info["iters"] == 20
    assert (info["world_size"], info["grad_accum"], info["global_batch"]) == (2, 1, 8)
    curve(job.run_dir)  # every row once: only rank 0 wrote


def test_only_rank_zero_shows_training(job):
    out, err = job.result.stdout, job.result.stderr
    assert out.count("eval iter 0:") == 1 and out.count("done: 20 iterations") == 1
    assert err.count("global batch 8 sequences (4 × 1 accumulated × 2 processes)") == 1


def test_two_processes_follow_the_loss_curve_of_one_process_accumulating_their_batches(job, tmp_path):
    reference = single_process_run(raw_config(job.data_dir, grad_accum=2), tmp_path / "single")
    assert_same_curve(curve(job.run_dir), curve(reference))


def test_a_two_process_run_resumes_on_one_process_with_the_same_global_batch(job, tmp_path):
    run_dir = shutil.copytree(job.run_dir, tmp_path / "copy")
    session = resume(run_dir, overrides=["train.max_iters=30"], device="cpu")
    assert session.config.train.grad_accum == 2 and session.info["global_batch"] == 8
    list(loop.run(session))
    (entry,) = json.loads((run_dir / "run.json").read_text())["resumes"]
    assert entry["overrides"] == {"train.max_iters": 30, "train.grad_accum": 2} and entry["world_size"] == 1
    straight = single_process_run(raw_config(job.data_dir, grad_accum=2, max_iters=30), tmp_path / "single")
    assert_same_curve(curve(run_dir), curve(straight))


def test_resuming_on_processes_that_cannot_share_the_batch_says_which_can(job, tmp_path):
    run_dir = shutil.copytree(job.run_dir, tmp_path / "copy")
    three = World(torch.device("cpu"), rank=0, size=3)
    with pytest.raises(GptinyError, match="3 processes cannot share evenly; resume it on 1 or 2 processes"):
        resume(run_dir, overrides=["train.max_iters=30"], world=three)


def test_a_killed_rank_stops_the_job_promptly_and_is_named(job, tmp_path):
    command = [sys.executable, "-m", "gptiny_cli", "train", str(job.config), "--device", "cpu", "--nproc", "2",
               "--runs-dir", str(tmp_path / "runs"), "--set", "train.max_iters=100000"]
    start = time.monotonic()
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True,
                            env=job_env(GPTINY_FAULT_KILL="1:3"), timeout=JOB_TIMEOUT_S)
    assert result.returncode == 1
    assert time.monotonic() - start < 120
    assert result.stderr.strip().splitlines()[-1] == (
        "error: rank 1 (local rank 1) was killed by SIGKILL; torchrun stopped the other ranks and the job")
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"


def test_a_restarted_job_continues_its_run_from_the_last_checkpoint(job):
    # Rank 1 dies at step 13 on the first attempt; the last checkpoint before is step 10.
    result = torchrun(job.root, str(job.config), "--runs-dir", "restarted", "--set", "train.checkpoint_interval=5",
                      launcher=("--max-restarts", "1"), env=job_env(GPTINY_FAULT_KILL="1:13"))
    assert result.returncode == 0, result.stderr
    (run_dir,) = (job.root / "restarted").iterdir()
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "completed" and info["iters"] == 20 and "error" not in info
    assert [(r["at_iter"], r["restart"]) for r in info["resumes"]] == [(10, 1)]
    assert_same_curve(curve(run_dir), curve(job.run_dir))


runner = CliRunner()


def test_nproc_is_refused_inside_torchrun(tmp_path, monkeypatch, data_dir):
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job")
    config = write_config(Path("c.toml"), raw_config(data_dir))
    result = runner.invoke(app, ["train", str(config), "--nproc", "2"])
    assert result.exit_code == 1
    assert "--nproc starts torchrun itself" in result.stderr
    assert not Path("runs").exists()


def test_a_named_run_directory_is_created_then_continued(data_dir):
    config = write_config(Path("c.toml"), raw_config(data_dir))
    first = runner.invoke(app, ["train", str(config), "--device", "cpu", "--run-dir", "mine"])
    assert first.exit_code == 0, first.output
    assert json.loads(Path("mine/run.json").read_text())["iters"] == 20
    again = runner.invoke(app, ["train", str(config), "--device", "cpu", "--run-dir", "mine",
                                "--set", "train.max_iters=25"])
    assert again.exit_code == 0, again.output
    info = json.loads(Path("mine/run.json").read_text())
    assert info["iters"] == 25 and [r["at_iter"] for r in info["resumes"]] == [20]


def test_a_named_run_directory_refuses_a_different_config(data_dir):
    config = write_config(Path("c.toml"), raw_config(data_dir))
    assert runner.invoke(app, ["train", str(config), "--device", "cpu", "--run-dir", "mine"]).exit_code == 0
    result = runner.invoke(app, ["train", str(config), "--device", "cpu", "--run-dir", "mine",
                                 "--set", "model.n_embd=32"])
    assert result.exit_code == 1
    assert "mine holds a run with a different config: model.n_embd (16 there, 32 here)" in result.stderr
