"""``gptiny runs`` and the run history behind it: every run, newest first, without loading weights."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

from typer.testing import CliRunner

from gptiny_cli.cli import app
from gptiny_cli.store.history import list_runs, read_history
from tests.training import train_tiny

runner = CliRunner()


def write_run(runs_dir: Path, dir_name: str, **info: object) -> Path:
    run_dir = runs_dir / dir_name
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps(info))
    return run_dir


def test_a_trained_run_is_listed_with_what_it_recorded(data_dir):
    run_dir = train_tiny(data_dir)
    (record,) = list_runs(Path("runs"))
    info = json.loads((run_dir / "run.json").read_text())
    assert (record.id, record.name, record.status) == (run_dir.name, "tiny", "completed")
    assert (record.iters, record.max_iters) == (20, 20)
    assert record.best_val_loss == info["best_val_loss"] and record.parameters == info["parameters"]
    assert record.device == "cpu" and record.duration_s == info["train_seconds"]


def test_runs_are_ordered_by_start_time_newest_first_not_by_name():
    write_run(Path("runs"), "b-old", started_at="2024-01-01T10:00:00+00:00", status="completed")
    write_run(Path("runs"), "a-new", started_at="2024-06-01T10:00:00+00:00", status="completed")
    write_run(Path("runs"), "c-middle", started_at="2024-03-01T10:00:00+00:00", status="failed")
    assert [r.id for r in list_runs(Path("runs"))] == ["a-new", "c-middle", "b-old"]


def test_a_directory_without_run_json_is_not_a_run():
    write_run(Path("runs"), "real", status="completed")
    (Path("runs") / "notes").mkdir()
    assert [r.id for r in list_runs(Path("runs"))] == ["real"]


def test_a_damaged_run_json_is_listed_as_damaged_and_hides_no_other_run():
    write_run(Path("runs"), "good", status="completed", started_at="2024-01-01T10:00:00+00:00")
    broken = Path("runs") / "broken"
    broken.mkdir()
    (broken / "run.json").write_text("{ not json")
    statuses = {r.id: r.status for r in list_runs(Path("runs"))}
    assert statuses == {"good": "completed", "broken": "damaged"}


def test_a_running_run_lasts_until_now_and_a_failed_one_until_it_ended():
    now = datetime(2024, 1, 1, 12, 0, tzinfo=timezone.utc)
    start = (now - timedelta(seconds=90)).isoformat()
    write_run(Path("runs"), "live", status="running", started_at=start)
    write_run(Path("runs"), "dead", status="failed", started_at=start,
              ended_at=(now - timedelta(seconds=60)).isoformat())
    durations = {r.id: r.duration_s for r in list_runs(Path("runs"), now=now)}
    assert durations == {"live": 90.0, "dead": 30.0}


def test_history_skips_a_line_torn_by_a_crash():
    run_dir = Path("run")
    run_dir.mkdir()
    rows = [{"iter": 0, "train_loss": 4.0, "val_loss": 4.1}, {"iter": 5, "loss": 3.5, "lr": 0.1}]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"iter": 10, "lo')
    history = read_history(run_dir)
    assert history.evals == [(0, 4.0, 4.1)] and history.steps == [(5, 3.5)]


def test_history_keeps_the_val_loss_of_the_weights_average_where_a_run_logged_one():
    run_dir = Path("run")
    run_dir.mkdir()
    rows = [{"iter": 0, "train_loss": 4.0, "val_loss": 4.1}, {"iter": 9, "train_loss": 2.0, "val_loss": 2.2,
                                                            "ema_val_loss": 2.1}]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_history(run_dir).averages == [(9, 2.1)]


def test_runs_command_prints_a_table_and_json_with_the_same_runs(data_dir):
    first = train_tiny(data_dir, name="first")
    second = train_tiny(data_dir, name="second", max_iters=10)
    table = runner.invoke(app, ["runs"])
    assert table.exit_code == 0, table.output
    assert first.name in table.stdout and second.name in table.stdout and "completed" in table.stdout
    rows = json.loads(runner.invoke(app, ["runs", "--json"]).stdout)
    assert [row["id"] for row in rows] == [second.name, first.name]
    assert [row["iters"] for row in rows] == [10, 20]


def test_runs_command_with_no_runs_says_how_to_make_one():
    result = runner.invoke(app, ["runs", "--runs-dir", "nowhere"])
    assert result.exit_code == 0 and "gptiny train" in result.stderr
    assert json.loads(runner.invoke(app, ["runs", "--runs-dir", "nowhere", "--json"]).stdout) == []


def test_runs_command_shows_names_with_brackets_as_they_are():
    write_run(Path("runs"), "20240101-000000-lr[3e-4]", name="lr[3e-4]", status="completed")
    result = runner.invoke(app, ["runs"])
    assert "20240101-000000-lr[3e-4]" in result.stdout
