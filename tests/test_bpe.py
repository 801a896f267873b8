"""Byte-level BPE beside characters: preparing with it, and every reading of a BPE data directory or run.

The corpus mixes English with CJK and emoji, so tokens that end inside a character are met.
"""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gptiny_cli.bpe import BpeVocab
from gptiny_cli.cli import app
from gptiny_cli.data import TextStream, Vocab, load_corpus, load_vocab
from gptiny_cli.errors import GptinyError
from gptiny_cli.prepare.bpe_encode import safe_chunks
from gptiny_cli.prepare.corpus import PrepareOptions, prepare_corpus
from gptiny_cli.store.runs import load_run, val_bits
from tests.conftest import TINY_TEXT, tiny_raw, write_config
from tests.training import train_tiny

UNICODE_TEXT = "".join(f"{who}: 春眠不觉晓 😀 the quick brown fox, {n} times.\n"
                       for n in range(40) for who in ("ALICE", "BOB"))


def _prepare_bpe(text: str = UNICODE_TEXT, out: str = "data/bpe", vocab_size: int = 300, **options) -> Path:
    Path("bpe.txt").write_text(text, encoding="utf-8")
    prepare_corpus("bpe.txt", Path(out), options=PrepareOptions(tokenizer="bpe", vocab_size=vocab_size, **options))
    return Path(out)


def _tokens(path: Path) -> list[int]:
    return np.fromfile(path, dtype="<u2").tolist()


def test_a_bpe_data_directory_holds_its_tokenizer_and_decodes_back_to_the_text():
    data = _prepare_bpe()
    vocab = load_vocab(data)
    assert (data / "tokenizer.json").is_file() and not (data / "vocab.json").exists()
    assert vocab.kind == "bpe" and vocab.size == 300
    meta = json.loads((data / "meta.json").read_text())
    text = vocab.decode(_tokens(data / "train.bin")) + vocab.decode(_tokens(data / "val.bin"))
    assert text == UNICODE_TEXT
    assert meta["tokenizer"] == "bpe" and meta["val_chars"] == len(UNICODE_TEXT) - meta["train_chars"]
    assert meta["train_tokens"] + meta["val_tokens"] < len(UNICODE_TEXT) / 2  # merges make pieces


def test_the_validation_split_is_encoded_from_its_own_first_character():
    data = _prepare_bpe()
    corpus, meta = load_corpus(data), json.loads((data / "meta.json").read_text())
    val_text = UNICODE_TEXT[meta["train_chars"]:]
    assert corpus.val.tolist() == corpus.vocab.encode(val_text)


def test_merges_are_learnt_from_the_training_split_only():
    odd = "zyzzyva " * 40  # shorter than the validation split's tenth of the text
    learnt = {p.strip() for p in load_vocab(_prepare_bpe(odd + TINY_TEXT, "data/first", 400)).pieces}
    unseen = {p.strip() for p in load_vocab(_prepare_bpe(TINY_TEXT + odd, "data/last", 400)).pieces}
    assert "zyzzyva" in learnt and "zyzzyva" not in unseen


def test_encoding_in_chunks_gives_the_tokens_of_the_whole_text():
    rng = random.Random(0)
    words = ["the", "fox", "  ", "\n", "\n\n", " 日本", "😀", "don't", "42", "!?", "\t", "ÆØ"]
    text = "".join(rng.choice(words) + rng.choice(["", " ", "  "]) for _ in range(3000))
    vocab = BpeVocab.train([text], 320)
    chunks = list(safe_chunks(iter(text[i:i + 97] for i in range(0, len(text), 97)), 200))
    assert len(chunks) > 10 and "".join(chunks) == text
    assert [t for chunk in chunks for t in vocab.encode(chunk)] == vocab.encode(text)


def test_a_small_chunk_size_prepares_the_same_tokens():
    big, small = _prepare_bpe(out="data/big"), _prepare_bpe(out="data/small", chunk_bytes=64)
    for name in ("train.bin", "val.bin"):
        assert (big / name).read_bytes() == (small / name).read_bytes()


def test_a_text_stream_never_shows_half_a_character():
    vocab = Vocab(tuple("ab"))
    stream = TextStream(tuple(bytes([b]) for b in range(256)))
    parts = [stream.push(b) for b in "a春😀b".encode()]
    assert "".join(parts) == "a春😀b" and all("\ufffd" not in p for p in parts)
    assert parts[1:3] == ["", ""]  # the first two bytes of 春 wait for the third
    assert TextStream(vocab.token_bytes).push(1) == "b"


@pytest.mark.parametrize(("options", "wrong"), [
    ({"tokenizer": "bpe", "vocab_size": 100}, "at least 256"),
    ({"vocab_size": 500}, "--tokenizer bpe"),
    ({"tokenizer": "bpe", "min_count": 3}, "--min-count"),
    ({"tokenizer": "words"}, "--tokenizer 'words'"),
])
def test_bad_bpe_options_are_refused_in_one_line(options, wrong):
    Path("t.txt").write_text(TINY_TEXT, encoding="utf-8")
    with pytest.raises(GptinyError, match=wrong):
        prepare_corpus("t.txt", Path("data/x"), options=PrepareOptions(**options))
    assert not Path("data/x").exists()


def test_extend_on_a_bpe_vocabulary_is_a_clear_error():
    data = _prepare_bpe()
    with pytest.raises(GptinyError, match="leave out --extend"):
        prepare_corpus("bpe.txt", Path("data/more"), options=PrepareOptions(vocab=str(data), extend=True))


def test_new_text_prepared_with_a_bpe_run_keeps_its_tokenizer():
    run = train_tiny(_prepare_bpe())
    Path("more.txt").write_text("BOB: 春眠 😀 a new text.\n" * 30, encoding="utf-8")
    prepare_corpus("more.txt", Path("data/more"), options=PrepareOptions(vocab=str(run)))
    assert load_vocab(Path("data/more")) == load_vocab(run)


def test_fine_tuning_a_bpe_run_on_text_of_another_tokenizer_is_refused():
    run = train_tiny(_prepare_bpe())
    config = write_config(Path("other.toml"), tiny_raw(_prepare_bpe(out="data/other", vocab_size=280)))
    result = CliRunner().invoke(app, ["train", str(config), "--init-from", str(run), "--device", "cpu"])
    assert result.exit_code == 1 and "not encoded with" in result.output


def test_a_bpe_run_keeps_its_tokenizer_and_records_its_validation_text():
    run = train_tiny(_prepare_bpe())
    loaded, info = load_run(run), json.loads((run / "run.json").read_text())
    assert loaded.vocab.kind == "bpe" and (run / "tokenizer.json").is_file()
    text = info["val_text"]
    assert info["tokenizer"] == "bpe" and text["tokens"] < text["chars"] < text["bytes"]
    bpc, bpb = val_bits(info, 2.0)
    assert bpc == pytest.approx(2.0 * text["tokens"] / text["chars"] / math.log(2))
    assert bpb == pytest.approx(2.0 * text["tokens"] / text["bytes"] / math.log(2))


def test_a_character_run_has_bits_per_character_equal_to_its_loss_over_ln2(data_dir):
    info = json.loads((train_tiny(data_dir) / "run.json").read_text())
    assert val_bits(info, 1.5)[0] == pytest.approx(1.5 / math.log(2))
    assert val_bits({}, 1.5) == (pytest.approx(1.5 / math.log(2)), None)  # a run from before val_text


def test_train_ends_with_bits_per_character_and_per_byte():
    config = write_config(Path("bpe.toml"), tiny_raw(_prepare_bpe(), max_iters=4))
    result = CliRunner().invoke(app, ["train", str(config), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "nats per token = " in result.output and "bits/char" in result.output and "bits/byte" in result.output


def test_sampling_a_bpe_run_streams_whole_characters():
    run = train_tiny(_prepare_bpe(), max_iters=40)
    result = CliRunner().invoke(app, ["sample", str(run), "--tokens", "60", "--prompt", "春眠 😀",
                                      "--seed", "3", "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.splitlines()[-1])
    assert record["text"].startswith("春眠 😀") and record["tokens"] == 60
    streamed = CliRunner().invoke(app, ["sample", str(run), "--tokens", "60", "--prompt", "春眠 😀",
                                        "--seed", "3", "--stream", "--device", "cpu"])
    assert streamed.stdout.rstrip("\n") == record["text"]


def test_eval_reports_a_bpe_run_in_bits_per_character_and_per_byte():
    run = train_tiny(_prepare_bpe())
    result = CliRunner().invoke(app, ["eval", str(run), "--json", "--device", "cpu"])
    report = json.loads(result.stdout)
    total_bits = report["loss"] * report["tokens"] / math.log(2)
    assert report["bits_per_char"] == pytest.approx(total_bits / report["chars"])
    assert report["bits_per_byte"] == pytest.approx(total_bits / report["bytes"])
    Path("other.txt").write_text("ALICE: 春眠 😀 brown fox.\n" * 5, encoding="utf-8")
    other = json.loads(CliRunner().invoke(app, ["eval", str(run), "--text", "other.txt", "--json"]).stdout)
    assert other["unknown_chars"] == {} and other["tokens"] == len(load_vocab(run).encode(
        Path("other.txt").read_text())) - 1


def test_runs_and_compare_show_bits_per_character_for_both_tokenizers(data_dir):
    char_run, bpe_run = train_tiny(data_dir, "chars"), train_tiny(_prepare_bpe(), "bpe")
    listed = json.loads(CliRunner().invoke(app, ["runs", "--json"]).stdout)
    assert {r["tokenizer"] for r in listed} == {"char", "bpe"} and all(r["best_val_bpc"] > 0 for r in listed)
    found = json.loads(CliRunner().invoke(app, ["compare", str(char_run), str(bpe_run), "--json"]).stdout)
    by_name = {Path(r["path"]).name: r for r in found["runs"]}
    assert by_name[bpe_run.name]["bits_per_byte"] > 0 and by_name[char_run.name]["bits_per_char"] > 0


def test_tokenize_shows_the_pieces_their_ids_and_the_count():
    data = _prepare_bpe()
    result = CliRunner().invoke(app, ["tokenize", str(data), "ALICE: the quick 春", "--json"])
    found = json.loads(result.stdout)
    vocab = load_vocab(data)
    assert [t["id"] for t in found["tokens"]] == vocab.encode("ALICE: the quick 春")
    assert "".join(t["piece"] for t in found["tokens"]).startswith("ALICE: the quick ")
    assert found["count"] < found["chars"] and found["chars_per_token"] == found["chars"] / found["count"]
    shown = CliRunner().invoke(app, ["tokenize", str(data), "ALICE: the quick"])
    count = len(vocab.encode("ALICE: the quick"))
    assert shown.exit_code == 0 and f"{count} tokens for 16 characters" in shown.output


def test_tokenize_with_characters_is_one_token_a_character_and_refuses_unknown_ones(data_dir):
    found = json.loads(CliRunner().invoke(app, ["tokenize", str(data_dir), "the fox", "--json"]).stdout)
    assert found["count"] == 7 and found["chars_per_token"] == 1.0
    result = CliRunner().invoke(app, ["tokenize", str(data_dir), "the 春"])
    assert result.exit_code == 1 and "'春'" in result.output


def test_attention_labels_a_bpe_run_with_its_pieces():
    run = train_tiny(_prepare_bpe())
    result = CliRunner().invoke(app, ["attention", str(run), "--prompt", "ALICE: the quick", "--out", "a.png"])
    assert result.exit_code == 0, result.output
    assert "tokens" in result.output and Path("a.png").stat().st_size > 0


def test_without_tokenizers_installed_bpe_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # what an absent package imports as
    Path("t.txt").write_text(TINY_TEXT, encoding="utf-8")
    with pytest.raises(GptinyError, match=r"pip install 'gptiny\[bpe\]'"):
        prepare_corpus("t.txt", Path("data/x"), options=PrepareOptions(tokenizer="bpe"))
