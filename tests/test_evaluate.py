"""``gptiny eval``: the exact loss of a run on its whole validation split or on any text."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gptiny_cli.cli import app
from gptiny_cli.data import Vocab
from gptiny_cli.prepare.corpus import prepare_corpus
from gptiny_cli.report.evaluate import evaluate, split_known
from tests.conftest import TINY_TEXT
from tests.training import train_tiny

runner = CliRunner()


@pytest.fixture
def run_dir(data_dir) -> Path:
    return train_tiny(data_dir)


def test_eval_on_the_validation_split_matches_the_loss_training_reported(run_dir):
    result = runner.invoke(app, ["eval", str(run_dir), "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    info = json.loads((run_dir / "run.json").read_text())
    assert report["loss"] == pytest.approx(info["final_val_loss"], abs=1e-6)
    assert report["bits_per_char"] == pytest.approx(report["loss"] / math.log(2))
    n_val = len(TINY_TEXT) - int(len(TINY_TEXT) * 0.9)
    assert report["tokens"] == n_val - 1 and report["unknown_chars"] == {}


def test_eval_of_a_text_file_holding_the_validation_text_gives_the_same_loss(run_dir):
    Path("val.txt").write_text(TINY_TEXT[int(len(TINY_TEXT) * 0.9):], encoding="utf-8")
    split = evaluate(run_dir, device="cpu")
    text = evaluate(run_dir, Path("val.txt"), device="cpu")
    assert text.loss == pytest.approx(split.loss, abs=1e-6) and text.tokens == split.tokens


def test_split_known_cuts_the_text_around_unknown_characters():
    segments, unknown = split_known("ab€cd€€a~", Vocab(("a", "b", "c", "d")))
    assert segments == [[0, 1], [2, 3], [0]]
    assert unknown == {"€": 3, "~": 1}


def test_unknown_characters_are_skipped_and_each_stretch_is_scored_on_its_own(run_dir):
    left, right = "BOB: the quick brown fox", " jumps over the lazy dog.\n"
    for name, text in (("left.txt", left), ("right.txt", right), ("both.txt", left + "€" + right)):
        Path(name).write_text(text, encoding="utf-8")
    a, b = evaluate(run_dir, Path("left.txt"), device="cpu"), evaluate(run_dir, Path("right.txt"), device="cpu")
    both = evaluate(run_dir, Path("both.txt"), device="cpu")
    assert both.tokens == a.tokens + b.tokens
    assert both.loss == pytest.approx((a.loss * a.tokens + b.loss * b.tokens) / both.tokens, abs=1e-6)
    assert both.unknown_chars == {"€": 1}


def test_eval_reports_the_skipped_characters(run_dir):
    Path("odd.txt").write_text("ALICE: the €lazy dog ∑∑\n", encoding="utf-8")
    result = runner.invoke(app, ["eval", str(run_dir), "--text", "odd.txt", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "skipped 3 characters outside the vocabulary: '∑' ×2, '€' ×1" in result.stderr
    assert "bits per character" in result.stdout


def test_a_text_with_nothing_the_run_knows_is_refused(run_dir):
    Path("greek.txt").write_text("αβγ δεζ", encoding="utf-8")
    result = runner.invoke(app, ["eval", str(run_dir), "--text", "greek.txt"])
    assert result.exit_code == 1 and "nothing to evaluate" in result.stderr


def test_eval_refuses_a_data_directory_prepared_again_from_another_corpus(run_dir, data_dir):
    Path("other.txt").write_text("0123456789" * 50, encoding="utf-8")
    prepare_corpus(Path("other.txt"), data_dir)
    result = runner.invoke(app, ["eval", str(run_dir)])
    assert result.exit_code == 1
    assert "different vocabulary" in result.stderr and "--text" in result.stderr


def test_eval_without_the_runs_data_points_to_text(run_dir, data_dir):
    (data_dir / "meta.json").unlink()
    result = runner.invoke(app, ["eval", str(run_dir)])
    assert result.exit_code == 1
    assert f"was trained on {data_dir}, which is not here" in result.stderr and "--text FILE" in result.stderr


def test_eval_of_a_missing_text_file_says_so(run_dir):
    result = runner.invoke(app, ["eval", str(run_dir), "--text", "nope.txt"])
    assert result.exit_code == 1 and "input not found: nope.txt" in result.stderr


def test_eval_computes_in_float32_by_default_and_in_the_training_dtype_with_precision_auto(data_dir):
    bf16_run = train_tiny(data_dir, name="bf16", dtype="bfloat16")
    exact, auto = evaluate(bf16_run, device="cpu"), evaluate(bf16_run, device="cpu", precision="auto")
    info = json.loads((bf16_run / "run.json").read_text())
    assert auto.loss == pytest.approx(info["final_val_loss"], abs=1e-6)
    assert exact.loss != auto.loss and exact.loss == pytest.approx(auto.loss, abs=0.05)


def test_eval_on_the_validation_split_shows_the_datas_baselines(run_dir, data_dir):
    baselines = json.loads((data_dir / "meta.json").read_text())["baselines"]
    result = runner.invoke(app, ["eval", str(run_dir), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert (f"; bigram baseline {baselines['bigram']['nats']:.2f}, unigram {baselines['unigram']['nats']:.2f}"
            in result.stdout)
