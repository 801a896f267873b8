"""Resume: a run cut short anywhere, by Ctrl-C, SIGTERM or SIGKILL, continues to exactly the result of an uncut one."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gptiny_cli.cli import app
from gptiny_cli.config import config_from_dict
from gptiny_cli.errors import GptinyError
from gptiny_cli.store import manifest
from gptiny_cli.store.runs import load_run
from gptiny_cli.training import loop
from gptiny_cli.training.resume import resume
from gptiny_cli.training.session import setup
from tests.conftest import tiny_raw, write_config
from tests.runtools import (
    CHECKPOINT,
    assert_same_run,
    assert_same_tensors,
    logged_iter,
    long_raw,
    losses,
    resume_to_end,
    run_info,
    saved_step,
    start_gptiny,
    train_process,
    train_straight,
    train_until,
    wait_for,
    with_max_iters,
)

runner = CliRunner()

VARIANTS = {
    "adamw-dropout": ({"dropout": 0.1}, {}),
    "muon-tied-rope-accum": ({"tie_weights": True, "position": "rope", "dropout": 0.1},
                             {"optimizer": "muon", "grad_accum": 2}),
    "muon-ema": ({}, {"optimizer": "muon", "ema_decay": 0.8, "ema_start": 0.2}),  # the average begins before the cut
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_interrupted_and_resumed_run_ends_bit_identical_to_a_straight_one(data_dir, variant):
    model, train_keys = VARIANTS[variant]
    raw = tiny_raw(data_dir, checkpoint_interval=3, log_interval=1, **train_keys)
    raw["model"].update(model)
    config = config_from_dict(raw)
    straight = train_straight(config)
    cut = train_until(config, stop_at=7)
    resume_to_end(cut)
    assert_same_run(straight, cut)


def test_a_run_that_failed_after_its_checkpoint_resumes_to_the_same_result(data_dir, monkeypatch):
    config = config_from_dict(tiny_raw(data_dir, checkpoint_interval=3, log_interval=1))
    straight = train_straight(config)
    monkeypatch.setenv("GPTINY_FAULT_NAN_AT", "8")
    session = setup(config, device="cpu", name="crashed")
    with pytest.raises(GptinyError, match="iteration 8"):
        list(loop.run(session))
    assert saved_step(session.run_dir) == 6 and logged_iter(session.run_dir) == 7  # rows 7 will come again
    monkeypatch.delenv("GPTINY_FAULT_NAN_AT")
    resume_to_end(session.run_dir)
    assert_same_run(straight, session.run_dir)


def test_resume_appends_metrics_and_records_itself_in_run_json(data_dir):
    config = config_from_dict(tiny_raw(data_dir))
    run_dir = train_until(config, stop_at=7)
    assert run_info(run_dir)["status"] == "interrupted"
    resume_to_end(run_dir)
    info = run_info(run_dir)
    assert info["status"] == "completed" and info["iters"] == 20
    assert [r["at_iter"] for r in info["resumes"]] == [7]
    iters = [row[0] for row in losses(run_dir)]
    assert iters == sorted(iters) and iters[-1] == 20


def cli(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture
def completed_run(data_dir) -> Path:
    result = cli("train", str(write_config(Path("tiny.toml"), tiny_raw(data_dir))), "--device", "cpu")
    assert result.exit_code == 0, result.output
    (run_dir,) = Path("runs").iterdir()
    return run_dir


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def test_resuming_a_completed_run_says_so_and_changes_nothing(completed_run):
    before = snapshot(completed_run)
    result = cli("train", "--resume", str(completed_run), "--device", "cpu")
    assert result.exit_code == 0
    assert "already finished at iteration 20" in result.stderr and "--set train.max_iters=N" in result.stderr
    assert snapshot(completed_run) == before


def test_a_completed_run_trains_further_when_asked(completed_run):
    result = cli("train", "--resume", "latest", "--set", "train.max_iters=30", "--device", "cpu")
    assert result.exit_code == 0, result.output
    info = run_info(completed_run)
    assert info["status"] == "completed" and info["iters"] == 30
    assert info["resumes"][-1]["overrides"] == {"train.max_iters": 30}
    assert "max_iters = 30" in (completed_run / "config.toml").read_text()
    assert [row[0] for row in losses(completed_run) if row[3] is not None] == [0, 10, 20, 30]


def test_resume_refuses_to_change_what_the_run_is(completed_run):
    before = snapshot(completed_run)
    result = cli("train", "--resume", str(completed_run), "--set", "model.n_embd=32")
    assert result.exit_code == 1
    assert "--set model.n_embd cannot change when resuming; allowed:" in result.stderr
    assert "train.max_iters" in result.stderr
    assert snapshot(completed_run) == before


def test_resume_refuses_a_config_edited_by_hand(data_dir):
    run_dir = train_until(config_from_dict(tiny_raw(data_dir)), stop_at=5)
    config = run_dir / "config.toml"
    config.write_text(config.read_text().replace("seed = 1337", "seed = 7"))
    with pytest.raises(GptinyError, match="train.seed is 7 here but 1337 in the checkpoint"):
        resume(run_dir, device="cpu")


def test_resume_refuses_a_different_corpus_at_the_data_path(data_dir, tmp_path):
    from gptiny_cli.prepare.corpus import prepare_corpus

    run_dir = train_until(config_from_dict(tiny_raw(data_dir)), stop_at=5)
    other = tmp_path / "other.txt"
    other.write_text((tmp_path / "tiny.txt").read_text()[::-1], encoding="utf-8")  # same characters
    prepare_corpus(other, data_dir, val_fraction=0.1)
    with pytest.raises(GptinyError, match="not the corpus this run was trained on"):
        resume(run_dir, device="cpu")


def test_a_run_whose_data_moved_resumes_with_its_new_path(data_dir, tmp_path):
    config = config_from_dict(tiny_raw(data_dir))
    straight = train_straight(config)
    run_dir = train_until(config, stop_at=5)
    moved = tmp_path / "moved"
    shutil.move(data_dir, moved)
    resume_to_end(run_dir, f"data.path={moved}")
    last = CHECKPOINT / "model-last.safetensors"
    assert_same_tensors(straight / last, run_dir / last)


def test_a_run_being_trained_cannot_be_resumed_by_another_process(data_dir):
    session = setup(config_from_dict(tiny_raw(data_dir)), device="cpu")
    events = loop.run(session)
    next(events)  # the evaluation at iteration 0, checkpoint saved, run still in progress
    with pytest.raises(GptinyError, match="being trained by another process"):
        resume(session.run_dir, device="cpu")
    events.close()
    assert run_info(session.run_dir)["status"] == "interrupted"
    resume(session.run_dir, device="cpu").close()  # the lock went with the first session


def test_tied_weights_stay_tied_through_save_load_and_resume(data_dir):
    raw = tiny_raw(data_dir)
    raw["model"]["tie_weights"] = True
    run_dir = train_until(config_from_dict(raw), stop_at=5)
    model = load_run(run_dir, "last").model
    assert model.head.weight is model.tok_emb.weight
    session = resume(run_dir, device="cpu")
    assert session.model.head.weight is session.model.tok_emb.weight
    list(loop.run(session))
    assert session.model.head.weight is session.model.tok_emb.weight


def test_a_checkpoint_cut_between_its_two_renames_is_still_found(data_dir):
    """The one moment a save has no checkpoint/: the old one renamed away, the new one not yet in."""
    config = config_from_dict(tiny_raw(data_dir))
    straight = train_straight(config)
    run_dir = train_until(config, stop_at=5)
    (run_dir / manifest.CURRENT).rename(run_dir / manifest.PREVIOUS)
    (run_dir / f"{manifest.STAGING_PREFIX}x").mkdir()  # the new one, complete or not, is dropped
    assert load_run(run_dir, "last").model is not None
    resume_to_end(run_dir)
    assert not (run_dir / manifest.PREVIOUS).exists() and not (run_dir / f"{manifest.STAGING_PREFIX}x").exists()
    assert_same_run(straight, run_dir)


# Real processes: the signals, the exit codes and the message a user sees.


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signalled_training_process_saves_and_resumes_to_a_straight_runs_result(data_dir, signum, code):
    raw = long_raw(data_dir)
    proc = train_process(data_dir, raw)
    run_dir = Path("runs")
    wait_for(lambda: any(run_dir.glob("*/checkpoint/manifest.json")) and logged_iter(next(run_dir.iterdir())) >= 12,
             proc)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    (cut,) = run_dir.iterdir()
    assert proc.returncode == code, err
    assert f"Resume with: gptiny train --resume {cut}" in err
    assert run_info(cut)["status"] == "interrupted"
    stopped = saved_step(cut)
    assert stopped == run_info(cut)["iters"] >= 12
    resume_to_end(cut, f"train.max_iters={stopped + 8}")
    assert_same_run(train_straight(with_max_iters(raw, stopped + 8)), cut)


def test_a_second_ctrl_c_stops_at_once_and_keeps_the_last_checkpoint(data_dir):
    proc = train_process(data_dir, long_raw(data_dir, checkpoint_interval=1))
    runs_dir = Path("runs")
    wait_for(lambda: any(runs_dir.glob("*/checkpoint/manifest.json")) and logged_iter(next(runs_dir.iterdir())) >= 5,
             proc)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    (run_dir,) = runs_dir.iterdir()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and f"gptiny train --resume {run_dir}" in err
    assert run_info(run_dir)["status"] == "interrupted"
    load_run(run_dir, "last")
    resume(run_dir, device="cpu").close()


def test_sigkill_at_any_moment_leaves_a_checkpoint_that_loads_and_resumes_exactly(data_dir):
    raw = long_raw(data_dir, checkpoint_interval=1, eval_interval=4)  # a save every step: kills land in saves
    runs_dir = Path("runs")
    proc = train_process(data_dir, raw)
    for reached in (3, 11, 19):  # one process per kill, each resuming the one before
        wait_for(lambda: any(runs_dir.glob("*/checkpoint/manifest.json"))
                 and logged_iter(next(runs_dir.iterdir())) >= reached, proc)  # noqa: B023
        proc.kill()
        proc.wait(timeout=30)
        (run_dir,) = runs_dir.iterdir()
        assert run_info(run_dir)["status"] == "running"  # nobody was left to say otherwise
        for which in ("last", "best"):
            load_run(run_dir, which)
        if reached < 19:
            proc = start_gptiny("train", "--resume", str(run_dir), "--device", "cpu")
    end = saved_step(run_dir) + 6
    resume_to_end(run_dir, f"train.max_iters={end}")
    assert len(run_info(run_dir)["resumes"]) == 3
    assert_same_run(train_straight(with_max_iters(raw, end)), run_dir)


def test_interrupted_run_resumes_through_the_cli_in_its_own_directory(data_dir):
    config = config_from_dict(tiny_raw(data_dir))
    straight = train_straight(config)
    run_dir = train_until(config, stop_at=5)
    result = cli("train", "--resume", str(run_dir), "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert f"run: {run_dir}" in result.stdout
    assert sorted(p.name for p in Path("runs").iterdir()) == sorted([straight.name, run_dir.name])
    assert_same_run(straight, run_dir)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"


def test_resume_and_a_config_together_are_refused(completed_run):
    result = cli("train", "tiny.toml", "--resume", str(completed_run))
    assert result.exit_code == 1 and "not both" in result.stderr


def test_a_run_killed_during_its_final_evaluation_finishes_on_resume(completed_run):
    info = run_info(completed_run)
    info.update(status="running", final_val_loss=None)  # as the process left it
    (completed_run / "run.json").write_text(json.dumps(info))
    result = cli("train", "--resume", str(completed_run), "--device", "cpu")
    assert result.exit_code == 0, result.output
    info = run_info(completed_run)
    assert info["status"] == "completed" and info["iters"] == 20 and info["final_val_loss"] > 0


def test_an_early_stopped_run_says_so_and_goes_on_when_patience_is_raised(data_dir):
    raw = tiny_raw(data_dir, max_iters=200, eval_interval=1, learning_rate=0.5, patience=1, warmup_iters=0)
    result = cli("train", str(write_config(Path("eager.toml"), raw)), "--device", "cpu")
    assert result.exit_code == 0, result.output
    (run_dir,) = Path("runs").iterdir()
    stopped = run_info(run_dir)["iters"]
    result = cli("train", "--resume", str(run_dir), "--device", "cpu")
    assert result.exit_code == 0 and f"stopped early at iteration {stopped}" in result.stderr
    assert "--set train.patience=N with N > 1" in result.stderr
    result = cli("train", "--resume", str(run_dir), "--set", "train.patience=0", "--set", "train.max_iters=" +
                 str(stopped + 3), "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert run_info(run_dir)["iters"] == stopped + 3


def test_a_session_dropped_without_training_does_not_keep_its_run_locked(data_dir):
    run_dir = train_until(config_from_dict(tiny_raw(data_dir)), stop_at=3)
    session = resume(run_dir, device="cpu")
    del session
    resume(run_dir, device="cpu").close()
