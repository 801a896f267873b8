"""The command line: what a user types and what they see, through Typer's runner and a real process."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open
from typer.testing import CliRunner

from gptiny_cli.cli import app
from tests.conftest import TINY_TEXT, cli_env, tiny_raw, write_config

runner = CliRunner()


def gptiny(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture
def config_path(data_dir) -> Path:
    return write_config(Path("tiny.toml"), tiny_raw(data_dir))


@pytest.fixture
def trained_run(config_path) -> Path:
    result = gptiny("train", str(config_path), "--device", "cpu")
    assert result.exit_code == 0, result.output
    (run_dir,) = Path("runs").iterdir()
    return run_dir


def test_prepare_prints_a_summary_and_writes_the_default_directory(corpus_file):
    result = gptiny("prepare", str(corpus_file))
    assert result.exit_code == 0, result.output
    assert "vocabulary" in result.stdout and "train tokens" in result.stdout
    assert (Path("data") / "tiny" / "meta.json").is_file()


def test_prepare_rejects_a_missing_file_in_one_line():
    result = gptiny("prepare", "missing.txt")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: input not found: missing.txt"


def test_train_writes_a_run_and_says_how_to_sample_it(trained_run):
    config = (trained_run / "config.toml").read_text()
    assert "max_iters = 20" in config and "weight_decay" in config  # defaults written out
    assert trained_run.name.endswith("-tiny")


def test_train_prints_plain_lines_when_not_on_a_terminal(config_path):
    result = gptiny("train", str(config_path), "--device", "cpu", "--name", "plain")
    assert "eval iter 0:" in result.stdout and "eval iter 20:" in result.stdout
    assert "gptiny sample runs/" in result.stdout


def test_train_overrides_from_the_command_line(config_path):
    result = gptiny("train", str(config_path), "--set", "train.max_iters=5", "--set", "train.eval_interval=5")
    assert result.exit_code == 0, result.output
    (run_dir,) = Path("runs").iterdir()
    assert json.loads((run_dir / "run.json").read_text())["iters"] == 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "model.n_heads=2"], "unknown key model.n_heads; did you mean n_head?"),
        (["--set", "model.block_size=1000"], "model.block_size = 1000 is invalid: it must be smaller than"),
        (["--set", "oops"], "use SECTION.KEY=VALUE"),
        (["--device", "tpu"], "--device 'tpu' is invalid"),
        (["--name", "../elsewhere"], "--name '../elsewhere' is invalid"),
        (["--name", "a/b"], "--name 'a/b' is invalid"),
    ],
)
def test_train_refuses_bad_settings_without_creating_a_run(config_path, args, message):
    result = gptiny("train", str(config_path), *args)
    assert result.exit_code == 1
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not Path("runs").exists() or list(Path("runs").iterdir()) == []


def test_train_without_prepared_data_says_to_prepare(tmp_path):
    path = write_config(Path("c.toml"), {"data": {"path": "data/none"}})
    result = gptiny("train", str(path))
    assert result.exit_code == 1 and "gptiny prepare" in result.stderr


def test_sample_prints_prompt_and_exactly_the_asked_characters(trained_run):
    result = gptiny("sample", str(trained_run), "--tokens", "37", "--prompt", "BOB:", "--seed", "3")
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert text.startswith("BOB:") and text.endswith("\n")
    generated = text[len("BOB:"):-1]
    assert len(generated) == 37
    assert set(generated) <= set(TINY_TEXT)


def test_sample_is_reproducible_with_a_seed(trained_run):
    first = gptiny("sample", "latest", "--tokens", "50", "--seed", "7").stdout
    assert first == gptiny("sample", "latest", "--tokens", "50", "--seed", "7").stdout


def test_greedy_sampling_is_deterministic(trained_run):
    first = gptiny("sample", "latest", "--tokens", "30", "--temperature", "0").stdout
    assert first == gptiny("sample", "latest", "--tokens", "30", "--temperature", "0", "--seed", "9").stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tokens", "0"], "--tokens 0 is invalid"),
        (["--temperature", "-1"], "--temperature -1.0 is invalid"),
        (["--top-k", "-2"], "--top-k -2 is invalid"),
        (["--prompt", "BOB€~"], "--prompt has characters this run's vocabulary lacks: '€~'"),
    ],
)
def test_sample_rejects_bad_options(trained_run, args, message):
    result = gptiny("sample", str(trained_run), *args)
    assert result.exit_code == 1
    assert message in result.stderr


def test_sample_without_runs_explains(tmp_path):
    result = gptiny("sample", "latest")
    assert result.exit_code == 1 and "no runs in runs/" in result.stderr


def test_sample_lists_what_a_half_written_run_lacks(trained_run):
    (trained_run / "checkpoint" / "model.safetensors").unlink()
    result = gptiny("sample", str(trained_run))
    assert result.exit_code == 1 and "model.safetensors is missing" in result.stderr


def test_sample_refuses_weights_damaged_after_training(trained_run):
    (trained_run / "checkpoint" / "model.safetensors").write_bytes(b"\x00" * 64)
    result = gptiny("sample", str(trained_run))
    assert result.exit_code == 1 and "model.safetensors is damaged" in result.stderr


def test_sample_refuses_weights_that_do_not_match_the_config(trained_run):
    config = trained_run / "config.toml"
    config.write_text(config.read_text().replace("n_embd = 16", "n_embd = 32"))
    result = gptiny("sample", str(trained_run))
    assert result.exit_code == 1
    assert "does not match its config" in result.stderr and "tok_emb.weight" in result.stderr


def test_inspect_total_equals_the_elements_in_the_weights_file(trained_run):
    result = gptiny("inspect", str(trained_run), "--json")
    report = json.loads(result.stdout)
    with safe_open(str(trained_run / "checkpoint" / "model.safetensors"), framework="pt") as f:
        stored = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    assert report["total_params"] == stored
    assert {row["name"] for row in report["modules"]} >= {"tok_emb", "blocks.0.attn", "blocks.0.ffn", "head"}


def test_inspect_works_on_a_config_before_training(config_path, trained_run):
    from_config = json.loads(gptiny("inspect", str(config_path), "--json").stdout)
    from_run = json.loads(gptiny("inspect", str(trained_run), "--json").stdout)
    assert from_config["total_params"] == from_run["total_params"]


def test_inspect_shows_a_table_with_totals(config_path):
    result = gptiny("inspect", str(config_path))
    assert result.exit_code == 0
    assert "CausalSelfAttention" in result.stdout and "total" in result.stdout


def test_end_to_end_in_a_real_process(corpus_file):
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "gptiny_cli", *args], capture_output=True, text=True,
                              env=cli_env(), timeout=120)

    assert run("prepare", str(corpus_file), "--out", "data/e2e").returncode == 0
    config = write_config(Path("e2e.toml"), tiny_raw(Path("data/e2e")))
    trained = run("train", str(config))
    assert trained.returncode == 0, trained.stderr
    sampled = run("sample", "latest", "--tokens", "25", "--seed", "1")
    assert sampled.returncode == 0 and len(sampled.stdout) == 26
    inspected = run("inspect", "latest", "--json")
    assert json.loads(inspected.stdout)["total_params"] > 0


def test_inspect_of_a_config_before_any_data_counts_with_vocab_size_and_says_so():
    config = write_config(Path("nodata.toml"), {"data": {"path": "data/nowhere"}, "model": {"n_embd": 8, "n_head": 2}})
    result = gptiny("inspect", str(config), "--json", "--vocab-size", "100")
    assert result.exit_code == 0, result.output
    assert "no prepared data at data/nowhere" in result.stderr and "note" not in json.loads(result.stdout)
    embedding = next(row for row in json.loads(result.stdout)["modules"] if row["name"] == "tok_emb")
    assert embedding["shapes"]["weight"] == [100, 8]


def test_inspect_of_a_config_before_any_data_defaults_to_tiny_shakespeares_65_characters():
    config = write_config(Path("nodata.toml"), {"data": {"path": "data/nowhere"}})
    result = gptiny("inspect", str(config), "--json")
    assert result.exit_code == 0, result.output
    head = next(row for row in json.loads(result.stdout)["modules"] if row["name"] == "head")
    assert head["shapes"]["weight"] == [65, 384]


def test_training_logs_show_the_baselines_beside_the_val_loss(config_path, data_dir):
    baselines = json.loads((data_dir / "meta.json").read_text())["baselines"]
    result = gptiny("train", str(config_path), "--device", "cpu")
    assert result.exit_code == 0, result.output
    note = f"bigram baseline {baselines['bigram']['nats']:.2f}, unigram {baselines['unigram']['nats']:.2f}"
    eval_lines = [line for line in result.stdout.splitlines() if line.startswith("eval iter")]
    assert eval_lines and all(note in line for line in eval_lines)
    assert note in result.stdout.splitlines()[-3]
