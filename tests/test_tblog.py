"""TensorBoard logging: ``[log] tensorboard = true`` writes event files beside metrics.jsonl."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from typer.testing import CliRunner

from gptiny_cli.cli import app
from gptiny_cli.config import config_from_dict
from gptiny_cli.errors import GptinyError
from gptiny_cli.report.tblog import logged
from gptiny_cli.training.loop import StepStats, run
from gptiny_cli.training.session import setup
from tests.conftest import tiny_raw, write_config
from tests.training import train_tiny


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_training_writes_the_losses_of_metrics_jsonl_to_tensorboard(data_dir):
    run_dir = train_tiny(data_dir, log={"tensorboard": True})
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [(r["iter"], r["val_loss"]) for r in rows if "val_loss" in r]
    steps = [(r["iter"], r["loss"]) for r in rows if "loss" in r]
    assert [(i, pytest.approx(v)) for i, v in evals] == scalars(run_dir, "loss/val")
    assert [(i, pytest.approx(v)) for i, v in steps] == scalars(run_dir, "train/batch_loss")
    ((step, final),) = scalars(run_dir, "loss/val_full_split")
    assert step == 20 and final == pytest.approx(json.loads((run_dir / "run.json").read_text())["final_val_loss"])


def test_tensorboard_is_off_by_default(data_dir):
    run_dir = train_tiny(data_dir)
    assert not list(run_dir.glob("events.out.tfevents.*"))


def test_without_the_package_training_stops_before_creating_a_run(data_dir, monkeypatch):
    raw = tiny_raw(data_dir)
    raw["log"] = {"tensorboard": True}
    config = write_config(Path("tb.toml"), raw)
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # what Python does when it is not installed
    result = CliRunner().invoke(app, ["train", str(config), "--device", "cpu"])
    assert result.exit_code == 1
    assert "pip install 'gptiny[tensorboard]'" in result.stderr
    assert not Path("runs").exists() or not list(Path("runs").iterdir())


def test_without_the_package_a_run_that_logs_is_not_resumed(data_dir, monkeypatch):
    run_dir = train_tiny(data_dir, log={"tensorboard": True})
    info = (run_dir / "run.json").read_text()
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    result = CliRunner().invoke(app, ["train", "--resume", str(run_dir), "--set", "train.max_iters=30"])
    assert result.exit_code == 1 and "gptiny[tensorboard]" in result.stderr
    assert (run_dir / "run.json").read_text() == info


@pytest.mark.parametrize(
    ("log", "message"),
    [
        ({"tensorboard": "yes"}, "log.tensorboard = 'yes' is invalid: must be bool"),
        ({"tensorbord": True}, "unknown key log.tensorbord; did you mean tensorboard?"),
    ],
)
def test_the_log_section_is_validated(data_dir, log, message):
    with pytest.raises(GptinyError, match=message):
        config_from_dict({**tiny_raw(data_dir), "log": log})


def test_a_resumed_run_replaces_what_was_logged_after_its_checkpoint_and_keeps_the_rest(data_dir):
    config = config_from_dict({**tiny_raw(data_dir), "log": {"tensorboard": True}})
    session = setup(config, device="cpu", runs_dir=Path("runs"), name="crash")
    events = logged(run(session), session.run_dir, session.iter)
    for event in events:
        if isinstance(event, StepStats) and event.iter == 15:
            break  # the process dies here; its last checkpoint is the evaluation at 10
    events.close()
    result = CliRunner().invoke(app, ["train", "--resume", str(session.run_dir)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (session.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert scalars(session.run_dir, "train/batch_loss") == [(r["iter"], pytest.approx(r["loss"])) for r in rows
                                                             if "loss" in r]
    assert [step for step, _ in scalars(session.run_dir, "loss/val")] == [0, 10, 20]
