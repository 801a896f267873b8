"""Vocabulary control: encoding with an existing vocabulary, extending it, and folding rare characters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gptiny_cli.data import Vocab, load_corpus
from gptiny_cli.errors import GptinyError
from gptiny_cli.prepare.corpus import PrepareOptions, prepare_corpus


def _prepare(text: str, out: str, **options: object):
    Path(f"{out}.txt").write_text(text, encoding="utf-8")
    return prepare_corpus([f"{out}.txt"], Path("data") / out, options=PrepareOptions(**options))


def test_vocab_from_a_data_or_run_directory_encodes_with_its_ids():
    _prepare("abcdef abcdef abcdef\n", "old")
    _prepare("fed cba fed cba\n", "new", vocab="data/old")
    assert load_corpus(Path("data/new")).vocab == load_corpus(Path("data/old")).vocab


def test_characters_the_vocab_lacks_are_an_error_listing_them():
    _prepare("abcdef abcdef abcdef\n", "old")
    with pytest.raises(GptinyError, match=r"2 characters are not in the --vocab vocabulary: 'x', 'z'; add --extend"):
        _prepare("abc xz abc xz abc\n", "new", vocab="data/old/vocab.json")
    assert not Path("data/new").exists()


def test_extend_appends_new_characters_and_keeps_every_old_id():
    _prepare("cab cab cab cab\n", "old")
    old = load_corpus(Path("data/old")).vocab
    summary = _prepare("zebra cab ä cab\n", "new", vocab="data/old", extend=True)
    new = load_corpus(Path("data/new")).vocab
    assert new.chars[: old.size] == old.chars
    assert new.chars[old.size:] == ("e", "r", "z", "ä") and summary.added == ["e", "r", "z", "ä"]
    assert json.loads(Path("data/new/meta.json").read_text())["vocab_from"]["added"] == ["e", "r", "z", "ä"]


def test_min_count_folds_rare_characters_into_one_declared_replacement():
    _prepare("aaaa bbbb\naaaa bbbb\nx y", "rare", min_count=2)
    corpus = load_corpus(Path("data/rare"))
    assert "x" not in corpus.vocab.chars and "\ufffd" in corpus.vocab.chars
    text = corpus.vocab.decode(corpus.train.long().tolist() + corpus.val.long().tolist())
    assert text == "aaaa bbbb\naaaa bbbb\n\ufffd \ufffd"
    meta = json.loads(Path("data/rare/meta.json").read_text())
    assert meta["replacement"] == {"char": "\ufffd", "min_count": 2, "replaced": {"x": 1, "y": 1}}


def test_a_vocab_that_is_not_a_vocabulary_is_refused():
    Path("v.json").write_text('{"words": []}')
    with pytest.raises(GptinyError, match="not a gptiny vocabulary"):
        _prepare("abc abc abc\n", "new", vocab="v.json")


def test_old_data_directories_without_the_new_meta_keys_still_load(data_dir):
    meta_path = data_dir / "meta.json"
    meta = json.loads(meta_path.read_text())
    old_keys = ("format", "vocab_size", "chars", "train_tokens", "val_tokens", "val_fraction", "token_dtype",
                "source", "sha256")
    meta_path.write_text(json.dumps({k: meta[k] for k in old_keys}))
    assert isinstance(load_corpus(data_dir).vocab, Vocab)
