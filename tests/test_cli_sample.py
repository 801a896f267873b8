"""``gptiny sample``: the options, what lands on stdout, and Ctrl-C, through the runner and a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gptiny_cli.cli import app
from tests.conftest import TINY_TEXT, cli_env, tiny_raw, write_config

runner = CliRunner()


def gptiny(*args: str):
    return runner.invoke(app, list(args))


def train(data_dir: Path, name: str, **model: object) -> Path:
    raw = tiny_raw(data_dir)
    raw["model"].update(model)
    result = gptiny("train", str(write_config(Path(f"{name}.toml"), raw)), "--device", "cpu", "--name", name)
    assert result.exit_code == 0, result.output
    (run_dir,) = Path("runs").glob(f"*-{name}")
    return run_dir


@pytest.fixture
def run_dir(data_dir) -> Path:
    return train(data_dir, "learned")


def test_json_gives_one_object_per_sample(run_dir):
    result = gptiny("sample", str(run_dir), "--tokens", "20", "--prompt", "BOB:", "--num-samples", "3", "--json")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 3
    for record in records:
        assert record["text"].startswith("BOB:") and len(record["text"]) == 4 + 20
        assert record["tokens"] == 20 and record["tokens_per_second"] > 0 and record["stopped"] is False


def test_several_samples_in_text_are_separated_by_a_blank_line(run_dir):
    result = gptiny("sample", str(run_dir), "--tokens", "15", "--prompt", "A", "--num-samples", "2", "--stop", "\n")
    assert result.exit_code == 0, result.output
    first, second = result.stdout.split("\n\n")
    assert first.startswith("A") and second.startswith("A") and second.endswith("\n")


def test_stop_ends_each_sample_before_the_stop_text(run_dir):
    result = gptiny("sample", str(run_dir), "--tokens", "300", "--stop", " ", "--num-samples", "4", "--json",
                    "--seed", "1")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert all(r["stopped"] and " " not in r["text"] and r["tokens"] < 300 for r in records)


def test_the_prompt_can_come_from_a_file(run_dir):
    Path("prompt.txt").write_text("ALICE: the", encoding="utf-8")
    result = gptiny("sample", str(run_dir), "--tokens", "5", "--prompt-file", "prompt.txt")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ALICE: the") and len(result.stdout) == len("ALICE: the") + 5 + 1


def test_a_prompt_longer_than_the_block_is_printed_whole(run_dir):
    prompt = TINY_TEXT[:100]
    result = gptiny("sample", str(run_dir), "--tokens", "7", "--prompt", prompt)
    assert result.exit_code == 0 and result.stdout.startswith(prompt) and len(result.stdout) == 100 + 7 + 1


def test_one_token_and_an_empty_prompt(run_dir):
    result = gptiny("sample", str(run_dir), "--tokens", "1")
    assert result.exit_code == 0 and len(result.stdout) == 2 and result.stdout.endswith("\n")


def test_top_k_beyond_the_vocabulary_and_top_p_of_one_are_accepted(run_dir):
    plain = gptiny("sample", str(run_dir), "--tokens", "30", "--seed", "4").stdout
    assert gptiny("sample", str(run_dir), "--tokens", "30", "--seed", "4", "--top-k", "1000").stdout == plain
    assert gptiny("sample", str(run_dir), "--tokens", "30", "--seed", "4", "--top-p", "1.0").stdout == plain


def test_a_tiny_top_p_is_greedy(run_dir):
    greedy = gptiny("sample", str(run_dir), "--tokens", "30", "--temperature", "0").stdout
    assert gptiny("sample", str(run_dir), "--tokens", "30", "--top-p", "1e-9", "--seed", "8").stdout == greedy


def test_in_float32_the_plain_loop_writes_the_same_text_with_rotary_positions(data_dir):
    run_dir = train(data_dir, "rope", position="rope")
    args = ("sample", str(run_dir), "--tokens", "60", "--prompt", "BOB", "--seed", "2", "--num-samples", "2",
            "--precision", "float32")
    cached = gptiny(*args)
    assert cached.exit_code == 0, cached.output
    assert gptiny(*args, "--no-kv-cache").stdout == cached.stdout


@pytest.mark.parametrize("precision", ["float32", "bfloat16", "int8"])
def test_every_precision_writes_the_asked_characters(data_dir, precision):
    run_dir = train(data_dir, "wide", n_embd=64, n_head=4)  # int8 needs input sizes in multiples of 32
    result = gptiny("sample", str(run_dir), "--tokens", "40", "--prompt", "BOB", "--precision", precision)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("BOB") and len(result.stdout) == 3 + 40 + 1
    assert set(result.stdout) <= set(TINY_TEXT)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--top-k", "0"], "--top-k 0 is invalid: must be at least 1"),
        (["--top-p", "0"], "--top-p 0.0 is invalid"),
        (["--top-p", "1.5"], "--top-p 1.5 is invalid"),
        (["--temperature", "nan"], "--temperature nan is invalid"),
        (["--num-samples", "0"], "--num-samples 0 is invalid"),
        (["--prompt-file", "missing.txt"], "--prompt-file missing.txt not found"),
        (["--prompt", "A", "--prompt-file", "p.txt"], "give --prompt or --prompt-file, not both"),
    ],
)
def test_bad_options_are_one_clear_line(run_dir, args, message):
    result = gptiny("sample", str(run_dir), *args)
    assert result.exit_code == 1
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


def test_a_prompt_file_that_is_not_utf8_or_has_unknown_characters(run_dir):
    Path("latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    result = gptiny("sample", str(run_dir), "--prompt-file", "latin1.txt")
    assert result.exit_code == 1 and "is not UTF-8" in result.stderr
    Path("odd.txt").write_text("BOB~", encoding="utf-8")
    result = gptiny("sample", str(run_dir), "--prompt-file", "odd.txt")
    assert result.exit_code == 1 and "--prompt-file has characters this run's vocabulary lacks: '~'" in result.stderr


def test_ctrl_c_while_streaming_keeps_what_was_printed(run_dir):
    process = subprocess.Popen(
        [sys.executable, "-m", "gptiny_cli", "sample", str(run_dir), "--tokens", "100000000", "--stream",
         "--prompt", "BOB"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env(),
    )
    try:
        head = process.stdout.read(40)  # streamed: arrives long before the sample could end
        os.kill(process.pid, signal.SIGINT)
        rest, errors = process.communicate(timeout=60)
    finally:
        process.kill()
    text = (head + rest).decode()
    assert process.returncode == 130
    assert text.startswith("BOB") and text.endswith("\n") and len(text) >= 40
    assert set(text) <= set(TINY_TEXT)
    assert "Traceback" not in errors.decode() and "interrupted" in errors.decode()


def test_a_seed_beyond_64_bits_is_a_one_line_error(run_dir):
    result = gptiny("sample", str(run_dir), "--tokens", "5", "--seed", str(2**64))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "seed 18446744073709551616 is out of range" in result.stderr


def test_stop_repeated_ends_each_sample_at_the_first_of_its_texts(run_dir):
    result = gptiny("sample", str(run_dir), "--tokens", "300", "--stop", " ", "--stop", "e", "--num-samples", "4",
                    "--json", "--seed", "1")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert all(r["stopped"] and " " not in r["text"] and "e" not in r["text"] for r in records)
