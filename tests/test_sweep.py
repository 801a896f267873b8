"""gptiny sweep: a study over config keys, each trial a normal run under the sweep's directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gptiny_cli.cli import app
from gptiny_cli.config import load_config
from gptiny_cli.errors import GptinyError
from gptiny_cli.sweep import results
from gptiny_cli.sweep.spec import Param, parse_param
from tests.conftest import cli_env, tiny_raw, write_config
from tests.runtools import wait_for

pytest.importorskip("optuna")
runner = CliRunner()


def gptiny(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture
def config_path(data_dir) -> Path:
    return write_config(Path("tiny.toml"), tiny_raw(data_dir))


def the_sweep() -> Path:
    (sweep_dir,) = Path("runs").iterdir()
    return sweep_dir


def trials(sweep_dir: Path) -> list[dict]:
    return results.read(sweep_dir)


# --param KEY=SPEC


def test_a_param_is_a_list_of_values_an_integer_range_or_a_log_range(data_dir):
    base = tiny_raw(data_dir)
    assert parse_param("train.learning_rate=1e-3,2e-3", base) == Param("train.learning_rate", values=(1e-3, 2e-3))
    assert parse_param("model.n_layer=1..3", base).grid() == [1, 2, 3]
    assert parse_param("train.learning_rate=log:1e-4..1e-2", base) == Param("train.learning_rate", low=1e-4,
                                                                            high=1e-2, log=True)


@pytest.mark.parametrize(("text", "says"), [
    ("train.learning_rate", "expected KEY=SPEC"),
    ("train.learning_rate=3..1", "is empty"),
    ("train.learning_rate=log:0..1", "above 0"),
    ("model.n_layer=1.5..3", "integer range"),
    ("train.learning_rate=log:1e-4", "log:LOW..HIGH"),
    ("train.lerning_rate=1e-3,2e-3", "lerning_rate"),
    ("model.n_layer=1,0", "model.n_layer"),
    ("model.n_layer=1,1", "given twice"),
])
def test_a_bad_param_is_one_line_naming_it(data_dir, text, says):
    with pytest.raises(GptinyError, match=r"^--param ") as caught:
        parse_param(text, tiny_raw(data_dir))
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_a_grid_over_a_continuous_range_is_refused_before_anything_is_written(config_path):
    result = gptiny("sweep", str(config_path), "--param", "train.learning_rate=log:1e-4..1e-2", "--search", "grid")
    assert result.exit_code == 1 and "--search random or tpe" in result.stderr
    assert not Path("runs").exists()


# A sweep end to end


def test_a_learning_rate_sweep_with_two_seeds_writes_results_a_leaderboard_and_best_toml(config_path):
    result = gptiny("sweep", str(config_path), "--param", "train.learning_rate=1e-3,3e-3,1e-2", "--seeds", "2")
    assert result.exit_code == 0, result.output
    sweep_dir = the_sweep()
    found = trials(sweep_dir)
    assert [t["state"] for t in found] == ["done"] * 3
    assert all(len(t["seeds"]) == 2 and t["std"] is not None for t in found)
    assert len(list(sweep_dir.glob("t*-s*/run.json"))) == 6
    best = min(found, key=lambda t: t["val"])
    assert "leaderboard" in result.output and "best" in result.output
    config = load_config(sweep_dir / "best.toml")
    assert config.train.learning_rate == best["values"]["train.learning_rate"]


def test_a_sweep_over_data_of_two_tokenizers_ranks_them_per_character(data_dir, corpus_file):
    from gptiny_cli.prepare.corpus import PrepareOptions, prepare_corpus

    bpe = Path("data/bpe")
    prepare_corpus(corpus_file, bpe, options=PrepareOptions(tokenizer="bpe", vocab_size=300))
    config = write_config(Path("tiny.toml"), tiny_raw(data_dir))
    result = gptiny("sweep", str(config), "--param", f"data.path={data_dir},{bpe}")
    assert result.exit_code == 0, result.output
    for trial in trials(the_sweep()):
        (run,) = trial["runs"]
        info = json.loads((the_sweep() / run / "run.json").read_text())
        per_char = info["val_text"]["tokens"] / info["val_text"]["chars"]
        assert trial["val"] == pytest.approx(info["final_val_loss"] * per_char)
        assert (per_char < 1) == (info["tokenizer"] == "bpe")


def test_the_runs_of_a_sweep_are_listed_and_latest_finds_them(config_path):
    gptiny("sweep", str(config_path), "--param", "train.learning_rate=1e-3,1e-2")
    listed = json.loads(gptiny("runs", "--json").stdout)
    assert sorted(r["id"].split("/")[1] for r in listed) == ["t000-s0", "t001-s0"]
    assert gptiny("eval", "latest").exit_code == 0


def test_pruning_stops_a_hopeless_trial_before_its_budget(data_dir):
    config = write_config(Path("tiny.toml"), tiny_raw(data_dir, max_iters=30, eval_interval=5))
    result = gptiny("sweep", str(config), "--param", "train.learning_rate=1e-2,1e-6", "--prune")
    assert result.exit_code == 0, result.output
    good, bad = trials(the_sweep())
    assert good["state"] == "done" and good["steps"] == 30
    assert bad["state"] == "pruned" and bad["steps"] < 30
    run = json.loads((the_sweep() / "t001-s0" / "run.json").read_text())
    assert run["status"] == "pruned" and run["iters"] < 30


def test_a_failing_trial_is_recorded_with_its_reason_and_the_sweep_goes_on(config_path):
    # a block of 1000 characters is a valid config, but longer than this corpus's val split
    result = gptiny("sweep", str(config_path), "--param", "model.block_size=1000,8")
    assert result.exit_code == 0, result.output
    failed, done = trials(the_sweep())
    assert failed["state"] == "failed" and "block_size" in failed["reason"]
    assert done["state"] == "done"


# Real processes: Ctrl-C and --resume, two workers on one study


def sweep_process(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gptiny_cli", "sweep", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=cli_env())


def test_ctrl_c_stops_the_running_trial_and_resume_reruns_nothing_finished(data_dir):
    config = write_config(Path("tiny.toml"), tiny_raw(data_dir, max_iters=300, eval_interval=50))
    proc = sweep_process(str(config), "--param", "train.learning_rate=1e-2,3e-3,1e-3")
    wait_for(lambda: Path("runs").is_dir() and any(t["state"] == "done" for d in Path("runs").iterdir()
                                                    for t in trials(d)), proc)
    proc.send_signal(2)  # SIGINT, as Ctrl-C sends it
    _, err = proc.communicate(timeout=60)
    sweep_dir = the_sweep()
    assert proc.returncode == 130, err
    assert f"gptiny sweep --resume {sweep_dir}" in err and "Traceback" not in err
    finished = {t["trial"]: (sweep_dir / run / "metrics.jsonl").read_bytes()
                for t in trials(sweep_dir) if t["state"] == "done" for run in t["runs"]}
    result = gptiny("sweep", "--resume", str(sweep_dir))
    assert result.exit_code == 0, result.output
    assert [t["state"] for t in trials(sweep_dir)] == ["done"] * 3
    assert len(list(sweep_dir.glob("t*-s*"))) == 3  # the interrupted trial went on in its own run
    for trial, metrics in finished.items():
        assert (sweep_dir / f"t{trial:03d}-s0" / "metrics.jsonl").read_bytes() == metrics


def test_two_workers_share_one_sqlite_study(data_dir):
    from gptiny_cli.sweep import study

    config = write_config(Path("tiny.toml"), tiny_raw(data_dir, max_iters=150, eval_interval=50))
    sweep = study.create(config, ["train.learning_rate=1e-3,2e-3,3e-3,4e-3,5e-3,6e-3"], Path("runs"), 1, None,
                         None, None, False, None, None)
    workers = [sweep_process("--resume", str(sweep.dir)) for _ in range(2)]
    for worker in workers:
        _, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
    found = trials(sweep.dir)
    assert sorted(t["values"]["train.learning_rate"] for t in found) == [1e-3, 2e-3, 3e-3, 4e-3, 5e-3, 6e-3]
    assert all(t["state"] == "done" for t in found)
    assert len({t["worker"] for t in found}) == 2


CLAIMER = """
import sys, time
from pathlib import Path
from gptiny_cli.sweep import driver, study
sweep = study.reopen(Path(sys.argv[1]))
while time.time() < float(sys.argv[2]):  # start together, so the claims overlap
    pass
taken = []
while (trial := driver.claim(sweep)) is not None:
    taken.append(trial.number)
    sweep.study.tell(trial, 1.0)
print(taken)
"""


def test_workers_claiming_at_once_never_take_the_same_trial(data_dir):
    import time

    from gptiny_cli.sweep import study

    config = write_config(Path("tiny.toml"), tiny_raw(data_dir))
    sweep = study.create(config, ["train.seed=" + ",".join(str(k) for k in range(24))], Path("runs"), 1, None,
                         None, None, False, None, None)
    start = str(time.time() + 4)
    workers = [subprocess.Popen([sys.executable, "-c", CLAIMER, str(sweep.dir), start], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=cli_env()) for _ in range(3)]
    taken = []
    for worker in workers:
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
        taken += json.loads(out)
    assert sorted(taken) == list(range(24))


# gptiny plot SWEEP, gptiny compare


def test_plot_of_a_sweep_draws_its_trials(config_path):
    pytest.importorskip("matplotlib")
    gptiny("sweep", str(config_path), "--param", "model.n_embd=8,16")
    result = gptiny("plot", str(the_sweep()), "--out", "sweep.png")
    assert result.exit_code == 0, result.output
    assert Path("sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_shows_only_the_keys_that_differ(config_path):
    gptiny("sweep", str(config_path), "--param", "train.learning_rate=1e-3,1e-2", "--param", "model.n_embd=8,16")
    found = json.loads(gptiny("compare", str(the_sweep()), "--json").stdout)
    assert found["keys"] == ["model.n_embd", "train.learning_rate"]
    assert len(found["runs"]) == 4 and all(r["parameters"] and r["val"] and r["bits_per_char"] for r in found["runs"])
    two = json.loads(gptiny("compare", *(r["path"] for r in found["runs"][:2]), "--json").stdout)
    assert two["keys"] == ["model.n_embd"]
    table = gptiny("compare", str(the_sweep()))
    assert "model.n_embd" in table.stdout and "train.batch_size" not in table.stdout


def test_compare_needs_two_runs(config_path):
    gptiny("sweep", str(config_path), "--param", "train.learning_rate=1e-3")
    result = gptiny("compare", str(next(the_sweep().glob("t*"))))
    assert result.exit_code == 1 and "at least two runs" in result.stderr


def test_without_optuna_the_sweep_says_which_extra_to_install(config_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # what an install without the extra looks like to import
    result = gptiny("sweep", str(config_path), "--param", "train.learning_rate=1e-3,1e-2")
    assert result.exit_code == 1 and "pip install 'gptiny[sweep]'" in result.stderr
    assert not Path("runs").exists()


def test_the_live_table_shows_each_trial_with_its_values_steps_val_and_state():
    from rich.console import Console

    from gptiny_cli.report.sweep_table import render

    rows = [{"trial": 0, "values": {"train.learning_rate": 0.01}, "state": "done", "steps": 20, "val": 2.5,
             "std": 0.01, "seeds": [2.49, 2.51]},
            {"trial": 1, "values": {"train.learning_rate": 1e-6}, "state": "pruned", "steps": 5, "val": None,
             "val_now": 4.1, "seeds": []},
            {"trial": 2, "values": {"train.learning_rate": 0.1}, "state": "failed", "steps": 0, "val": None,
             "seeds": [], "reason": "val loss is nan"}]
    console = Console(width=120, record=True)
    console.print(render(rows))
    text = console.export_text()
    assert "learning_rate=0.01" in text and "2.5000 ± 0.0100" in text and "done" in text
    assert "(4.1000)" in text and "pruned" in text
    assert "failed: val loss is nan" in text
