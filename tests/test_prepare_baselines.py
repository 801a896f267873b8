"""The unigram and bigram baselines, against a tiny example worked by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from gptiny_cli.prepare.corpus import PrepareOptions, prepare_corpus


def test_baselines_match_a_hand_computed_example():
    # "aabbab" split in half: train "aab", val "bab", vocabulary {a, b} (V = 2).
    Path("ab.txt").write_text("aabbab")
    prepare_corpus(["ab.txt"], Path("data/ab"), options=PrepareOptions(val_fraction=0.5))
    baselines = json.loads(Path("data/ab/meta.json").read_text())["baselines"]
    # Unigram, add-one: p(a) = (2+1)/(3+2), p(b) = (1+1)/(3+2); val predicts "a" then "b".
    unigram = -(math.log(3 / 5) + math.log(2 / 5)) / 2
    # Bigram, add-one: train pairs aa, ab. p(a|b) = (0+1)/(0+2), p(b|a) = (1+1)/(2+2); val pairs ba, ab.
    bigram = -(math.log(1 / 2) + math.log(2 / 4)) / 2
    assert baselines["unigram"]["nats"] == pytest.approx(unigram)
    assert baselines["bigram"]["nats"] == pytest.approx(bigram)
    assert baselines["bigram"]["bits_per_char"] == pytest.approx(1.0)
    assert baselines["predictions"] == 2


def test_large_alphabets_count_pairs_sparsely_in_pieces_with_the_same_result(monkeypatch):
    from gptiny_cli.prepare import baselines

    text = "".join(chr(0x4E00 + (i * 7919) % 300) for i in range(3000))
    Path("cjk.txt").write_text(text, encoding="utf-8")
    prepare_corpus(["cjk.txt"], Path("data/dense"))
    monkeypatch.setattr(baselines, "_DENSE_CELLS", 0)
    monkeypatch.setattr(baselines, "_FLUSH_TOKENS", 7)  # many small counts, merged many times
    monkeypatch.setattr(baselines, "_SPARSE_BACKLOG", 50)
    prepare_corpus(["cjk.txt"], Path("data/sparse"), options=PrepareOptions(chunk_bytes=999))
    dense, sparse = (json.loads(Path(f"data/{d}/meta.json").read_text())["baselines"] for d in ("dense", "sparse"))
    assert sparse["bigram"]["nats"] == pytest.approx(dense["bigram"]["nats"])
    assert sparse["unigram"]["nats"] == pytest.approx(dense["unigram"]["nats"])
