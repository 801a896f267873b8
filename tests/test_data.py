"""Data: the character tokenizer and the prepared data directory."""

from __future__ import annotations

import json

import pytest
import torch

from gptiny_cli.data import Vocab, get_batch, load_corpus, sequential_windows
from gptiny_cli.errors import GptinyError
from gptiny_cli.prepare.corpus import prepare_corpus


def test_vocab_is_the_sorted_set_of_characters_including_newlines_and_unicode():
    vocab = Vocab.from_text("bä\na b")
    assert vocab.chars == ("\n", " ", "a", "b", "ä")


def test_an_empty_prompt_starts_from_the_newline_or_else_token_0():
    assert Vocab(("a", "\n", "b")).start_token == 1
    assert Vocab(("a", "b")).start_token == 0


def test_encode_decode_round_trip():
    text = "To be, or not to be:\nthat is the question — ¿sí?"
    vocab = Vocab.from_text(text)
    assert vocab.decode(vocab.encode(text)) == text


def test_encode_names_unknown_characters():
    with pytest.raises(GptinyError, match="'xz'"):
        Vocab.from_text("abc").encode("axbz")


def test_prepare_writes_vocab_meta_and_split_sizes(corpus_file, tmp_path):
    summary = prepare_corpus(corpus_file, tmp_path / "out", val_fraction=0.1)
    text = corpus_file.read_text()
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["chars"] == len(text)
    assert meta["train_tokens"] == int(len(text) * 0.9)
    assert meta["train_tokens"] + meta["val_tokens"] == len(text)
    assert meta["vocab_size"] == len(set(text)) == summary.vocab_size
    assert len(meta["sha256"]) == 64 and meta["source"].endswith("tiny.txt")
    assert json.loads((tmp_path / "out" / "vocab.json").read_text())["chars"] == sorted(set(text))


def test_prepared_tokens_decode_back_to_the_corpus(data_dir, corpus_file):
    corpus = load_corpus(data_dir)
    tokens = torch.cat([corpus.train, corpus.val]).long().tolist()
    assert corpus.vocab.decode(tokens) == corpus_file.read_text()


def test_batches_are_targets_shifted_by_one(data_dir):
    corpus = load_corpus(data_dir)
    x, y = get_batch(corpus.train, 4, 8, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 8)
    assert torch.equal(x[:, 1:], y[:, :-1])


def test_sequential_windows_cover_every_target_once(data_dir):
    corpus = load_corpus(data_dir)
    targets = torch.cat([window[:, 1:].reshape(-1) for window in sequential_windows(corpus.val, 3, 8)])
    assert torch.equal(targets, corpus.val[1:].long())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "input not found"),
        (b"", "input is empty"),
        (b"ok text \xff\xfe more", "not UTF-8: invalid byte 0xff at byte offset 8"),
        (b"abc", "too small to split"),
    ],
)
def test_bad_inputs_fail_cleanly_and_leave_nothing_behind(tmp_path, content, message):
    source = tmp_path / "input.txt"
    if content is not None:
        source.write_bytes(content)
    with pytest.raises(GptinyError, match=message):
        prepare_corpus(source, tmp_path / "data" / "input")
    data = tmp_path / "data"
    assert (list(data.rglob("*")) if data.exists() else []) == []


def test_preparing_again_replaces_the_data_directory(corpus_file, tmp_path):
    out = tmp_path / "out"
    prepare_corpus(corpus_file, out)
    corpus_file.write_text("a different, smaller corpus\n" * 3)
    prepare_corpus(corpus_file, out)
    assert load_corpus(out).vocab.size == len(set(corpus_file.read_text()))


def test_prepare_will_not_overwrite_a_foreign_directory(corpus_file, tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(GptinyError, match="not a gptiny data directory"):
        prepare_corpus(corpus_file, out)
    assert (out / "notes.txt").read_text() == "keep me"


def test_a_foreign_output_directory_is_refused_before_any_input_is_read(tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(GptinyError, match="not a gptiny data directory"):
        prepare_corpus(tmp_path / "not-read-at-all.txt", out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious"]  # no staging directory left


def test_missing_data_directory_says_how_to_make_it(tmp_path):
    with pytest.raises(GptinyError, match="gptiny prepare"):
        load_corpus(tmp_path / "nowhere")


def test_truncated_token_file_is_detected(data_dir):
    (data_dir / "val.bin").write_bytes(b"\x00")
    with pytest.raises(GptinyError, match="missing or truncated"):
        load_corpus(data_dir)
