"""Planning a start: which run a request trains and with which config, decided before anything is built."""

from __future__ import annotations

from pathlib import Path

import pytest

from gptiny_cli.config import config_from_dict
from gptiny_cli.errors import GptinyError
from gptiny_cli.training.distributed import single
from gptiny_cli.training.plan import TrainRequest, plan
from tests.conftest import tiny_raw, write_config
from tests.runtools import train_straight

ONE = single("cpu")


def _files(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def test_a_config_plans_a_new_run_named_after_its_file(data_dir):
    config = write_config(Path("tiny.toml"), tiny_raw(data_dir))
    planned = plan(TrainRequest(config, ["train.max_iters=7"]), ONE)
    assert (planned.kind, planned.run_dir, planned.name) == ("new", None, "tiny")
    assert planned.config.train.max_iters == 7


def test_a_resume_plans_the_run_with_its_own_config_and_the_overrides(data_dir):
    run_dir = train_straight(config_from_dict(tiny_raw(data_dir)))
    planned = plan(TrainRequest(resume="latest", overrides=["train.max_iters=30"]), ONE)
    assert (planned.kind, planned.run_dir) == ("resume", run_dir)
    assert planned.config.train.max_iters == 30 and dict(planned.changes) == {"train.max_iters": 30}


def test_a_run_directory_with_a_checkpoint_is_continued_and_one_without_is_new(data_dir, tmp_path):
    config = write_config(Path("tiny.toml"), tiny_raw(data_dir))
    empty = tmp_path / "empty"
    assert plan(TrainRequest(config, run_dir=empty), ONE).kind == "new"
    trained = train_straight(config_from_dict(tiny_raw(data_dir)))
    assert plan(TrainRequest(config, run_dir=trained), ONE).kind == "continue"


def test_a_run_on_more_processes_keeps_its_global_batch_through_grad_accum(data_dir):
    train_straight(config_from_dict(tiny_raw(data_dir, grad_accum=2)))
    planned = plan(TrainRequest(resume="latest"), ONE, processes=2)
    assert planned.config.train.grad_accum == 1 and dict(planned.changes) == {"train.grad_accum": 1}


def test_planning_a_resume_changes_nothing_in_the_run_directory(data_dir):
    run_dir = train_straight(config_from_dict(tiny_raw(data_dir)))
    before = _files(run_dir)
    plan(TrainRequest(resume=str(run_dir), overrides=["train.max_iters=30"]), ONE)
    assert _files(run_dir) == before


def test_a_resume_override_that_would_make_another_run_is_refused_by_the_plan(data_dir):
    run_dir = train_straight(config_from_dict(tiny_raw(data_dir)))
    with pytest.raises(GptinyError, match="--set model.n_embd cannot change when resuming"):
        plan(TrainRequest(resume=str(run_dir), overrides=["model.n_embd=32"]), ONE)
