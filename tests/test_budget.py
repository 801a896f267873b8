"""A time budget: the schedule runs on the fraction of it spent, and the run ends when it is up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gptiny_cli.cli import app
from gptiny_cli.config import config_from_dict, read_toml
from gptiny_cli.errors import GptinyError
from gptiny_cli.report.progress import TrainView
from gptiny_cli.store import manifest
from gptiny_cli.training import loop
from gptiny_cli.training.budget import Budget, parse_minutes, whole_split_ratio
from gptiny_cli.training.resume import resume
from gptiny_cli.training.schedule import learning_rate
from gptiny_cli.training.session import Session, setup
from tests.conftest import tiny_raw, write_config


def by_fraction(fraction: float, step: int = 1000, **keys: object) -> float:
    return learning_rate(step, base_lr=1.0, max_iters=10**9, warmup_iters=10, fraction=fraction, **keys)


def test_a_time_budget_warms_up_by_steps_then_decays_by_the_fraction_of_time_spent():
    assert [by_fraction(0.5, step) for step in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert by_fraction(0.0) == pytest.approx(1.0)
    assert by_fraction(0.5) == pytest.approx(0.55)  # cosine half-way between 1 and 0.1
    assert by_fraction(1.0) == pytest.approx(0.1)
    fractions = [i / 20 for i in range(21)]
    lrs = [by_fraction(f) for f in fractions]
    assert lrs == sorted(lrs, reverse=True)


def test_the_same_step_gets_the_same_rate_for_the_same_fraction():
    assert by_fraction(0.3, step=50) == by_fraction(0.3, step=50)
    assert by_fraction(0.3, step=50) == by_fraction(0.3, step=5000)  # the step does not matter once warm


def test_max_iters_ends_the_decay_when_it_comes_before_the_time():
    lr = learning_rate(109, base_lr=1.0, max_iters=110, warmup_iters=10, fraction=0.2)  # the last step
    assert lr == pytest.approx(0.1)


def test_wsd_holds_the_rate_then_decays_linearly_over_the_last_part():
    wsd = {"decay": "wsd", "decay_fraction": 0.4, "min_lr_fraction": 0.0}
    assert [by_fraction(f, **wsd) for f in (0.0, 0.3, 0.6)] == pytest.approx([1.0, 1.0, 1.0])
    assert [by_fraction(f, **wsd) for f in (0.7, 0.8, 1.0)] == pytest.approx([0.75, 0.5, 0.0])
    by_steps = learning_rate(69, base_lr=1.0, max_iters=110, warmup_iters=10, **wsd)  # 60 of 100 done
    assert by_steps == pytest.approx(1.0)


@pytest.mark.parametrize(("text", "minutes"), [("90s", 1.5), ("10m", 10.0), ("1h", 60.0), ("1.5h", 90.0),
                                               ("10", 10.0), (" 2M ", 2.0)])
def test_durations_read_as_minutes(text, minutes):
    assert parse_minutes(text) == pytest.approx(minutes)


@pytest.mark.parametrize("text", ["", "10x", "0m", "-1m", "m", "1h30m"])
def test_a_duration_that_is_not_one_is_refused(text):
    with pytest.raises(GptinyError, match="--time"):
        parse_minutes(text)


def test_a_negative_budget_is_refused_naming_its_key(data_dir):
    with pytest.raises(GptinyError, match="train.max_minutes"):
        config_from_dict(tiny_raw(data_dir, max_minutes=-1))


def step_clock(session: Session):
    """A clock in which every training step takes one second and nothing else takes any time."""
    return lambda: float(session.iter)


def budget_raw(data_dir: Path, **train: object) -> dict:
    return tiny_raw(data_dir, max_minutes=0.5, max_iters=1000, log_interval=1, **train)


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_run_with_a_budget_ends_when_its_time_is_up_at_the_final_rate(data_dir):
    session = setup(config_from_dict(budget_raw(data_dir)), device="cpu")
    *_, finished = loop.run(session, clock=step_clock(session))
    assert finished.status == "completed" and finished.iter == 30  # 30 one-second steps in 30 s
    rows = metrics(session.run_dir)
    assert [r["iter"] for r in rows if "val_loss" in r] == [0, 10, 20, 30]
    assert rows[-2]["lr"] == pytest.approx(1e-2 * 0.1)  # the last step trained at the final rate
    assert json.loads((session.run_dir / "run.json").read_text())["train_seconds"] <= 30


def test_max_iters_still_caps_a_run_with_a_budget(data_dir):
    session = setup(config_from_dict(tiny_raw(data_dir, max_minutes=0.5, max_iters=12)), device="cpu")
    *_, finished = loop.run(session, clock=step_clock(session))
    assert finished.iter == 12


def test_a_resumed_budget_run_continues_from_the_saved_fraction(data_dir):
    config = config_from_dict(budget_raw(data_dir, checkpoint_interval=5))
    straight = setup(config, device="cpu", name="straight")
    list(loop.run(straight, clock=step_clock(straight)))
    cut = setup(config, device="cpu", name="cut")
    *_, stopped = loop.run(cut, lambda: cut.iter >= 15, clock=step_clock(cut))
    assert stopped.status == "interrupted"
    again = resume(cut.run_dir, device="cpu")
    assert again.elapsed_s == 15.0
    *_, finished = loop.run(again, clock=step_clock(again))
    assert finished.iter == 30
    lrs = [(r["iter"], r["lr"], r["loss"]) for r in metrics(straight.run_dir) if "lr" in r]
    assert lrs == [(r["iter"], r["lr"], r["loss"]) for r in metrics(cut.run_dir) if "lr" in r]


def test_a_checkpoint_is_saved_when_the_evaluation_at_its_interval_does_not_fit(data_dir, monkeypatch):
    session = setup(config_from_dict(budget_raw(data_dir, eval_interval=2, checkpoint_interval=2)), device="cpu")
    evaluating = [0.0]
    estimate = loop.estimate_loss

    def slow_estimate(*args, **kwargs):  # every evaluation takes 4 s of the clock, a step 1 s
        evaluating[0] += 4.0
        return estimate(*args, **kwargs)

    monkeypatch.setattr(loop, "estimate_loss", slow_estimate)
    saved = {}  # after each step: the step of the checkpoint on disk
    for event in loop.run(session, clock=lambda: session.iter + evaluating[0]):
        if isinstance(event, loop.StepStats):
            saved[event.iter] = manifest.saved_step(session.run_dir)
    evaluated = {r["iter"] for r in metrics(session.run_dir) if "val_loss" in r}
    skipped = [i for i in range(2, max(saved), 2) if i not in evaluated]
    assert skipped, evaluated  # some evaluations did not fit the time left
    assert [saved[i + 1] for i in skipped] == skipped


def test_the_budget_holds_back_time_for_the_last_evaluation_and_the_whole_split(data_dir):
    session = setup(config_from_dict(budget_raw(data_dir)), device="cpu")
    now = [0.0]
    budget = Budget(session, lambda: now[0])
    session.eval_s, session.step_s = 2.0, 1.0
    end = 30 - 2.0 * (1 + whole_split_ratio(session))
    now[0] = end - 1.0
    budget.tick()
    assert not budget.up() and budget.step_fraction() == 1.0  # one more step fits: the last one
    assert not budget.eval_fits()  # an evaluation now would leave no time for it
    now[0] = end - 0.5
    budget.tick()
    assert budget.up()
    session.close()


def test_the_commands_start_up_is_held_back_from_the_budget_but_is_not_training_time(data_dir):
    # `time gptiny train` must end within max_minutes: the seconds before the loop count too
    session = setup(config_from_dict(budget_raw(data_dir)), device="cpu")
    now = [0.0]
    started_late, on_time = Budget(session, lambda: now[0], startup_s=5.0), Budget(session, lambda: now[0])
    session.eval_s, session.step_s = 2.0, 1.0
    now[0] = 30 - 5.0 - 2.0 * (1 + whole_split_ratio(session)) - 0.5
    started_late.tick()
    assert started_late.up() and not on_time.up()
    assert session.elapsed_s == now[0]  # the schedule's clock leaves the start-up out
    session.close()


def test_an_average_yet_to_begin_doubles_the_last_estimate_it_holds_back(data_dir):
    # The latest evaluation (2 s) covered the weights alone; the last one will also cover their average.
    session = setup(config_from_dict(budget_raw(data_dir, ema_decay=0.9, ema_start=0.8)), device="cpu")
    now = [0.0]
    budget = Budget(session, lambda: now[0])
    session.eval_s, session.step_s = 2.0, 1.0
    end = 30 - 2.0 * (2 + whole_split_ratio(session))
    now[0] = end - 1.0
    budget.tick()
    assert not budget.up()
    now[0] = end - 0.5
    budget.tick()
    assert budget.up()
    session.close()


def test_an_evaluation_that_covered_the_average_counts_as_two_models(data_dir):
    session = setup(config_from_dict(budget_raw(data_dir, ema_decay=0.9, ema_start=0.0)), device="cpu")
    now = [0.0]
    budget = Budget(session, lambda: now[0])
    session.average = session.model  # any model: only its presence matters to the budget
    with budget.evaluation():
        now[0] += 4.0  # both models estimated, 2 s each
    session.step_s = 1.0
    end = 30 - 2.0 * (2 + whole_split_ratio(session))  # not 4 s for each of the two: 2 s a model
    now[0] = end - 1.5
    budget.tick()
    assert not budget.up() and session.eval_s == 4.0
    now[0] = end - 0.5
    budget.tick()
    assert budget.up()
    session.close()


def test_resuming_a_run_whose_budget_is_spent_says_how_to_give_it_more(data_dir):
    session = setup(config_from_dict(budget_raw(data_dir)), device="cpu")
    list(loop.run(session, clock=step_clock(session)))
    with pytest.raises(GptinyError, match="time budget of 0.5 minutes"):
        resume(session.run_dir, device="cpu")
    again = resume(session.run_dir, device="cpu", overrides=["train.max_minutes=1"])
    *_, finished = loop.run(again, clock=step_clock(again))
    assert finished.iter == 60


def test_the_display_follows_the_time_of_a_budget_run():
    view = TrainView(max_iters=5000, budget_s=600.0)
    view.update(loop.StepStats(iter=40, loss=2.0, lr=1e-3, tokens_per_sec=1.0, mfu=0.0, elapsed_s=150.0))
    assert view.progress() == (150.0, 600.0)
    assert view.progress_label() == "2:30/10:00 (iter 40)"
    assert TrainView(max_iters=5000, iter=40).progress() == (40, 5000)


def test_time_on_the_command_line_is_the_budget_key(data_dir):
    config = write_config(Path("tiny.toml"), tiny_raw(data_dir, max_iters=10**6))
    result = CliRunner().invoke(app, ["train", str(config), "--device", "cpu", "--time", "2s"])
    assert result.exit_code == 0, result.output
    (run_dir,) = Path("runs").iterdir()
    assert config_from_dict(read_toml(run_dir / "config.toml")).train.max_minutes == pytest.approx(2 / 60)
    assert json.loads((run_dir / "run.json").read_text())["train_seconds"] <= 2.5


def test_a_bad_time_on_the_command_line_is_one_clear_line(data_dir):
    config = write_config(Path("tiny.toml"), tiny_raw(data_dir))
    result = CliRunner().invoke(app, ["train", str(config), "--device", "cpu", "--time", "ten minutes"])
    assert result.exit_code == 1
    assert "--time 'ten minutes' is invalid" in result.output and not Path("runs").exists()
