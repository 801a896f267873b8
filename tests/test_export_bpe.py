"""``gptiny export`` of a byte-level BPE run: the run's own tokenizer in hf and onnx, checked by the
libraries that read them on a text with CJK and emoji; gguf refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer

from gptiny_cli.errors import GptinyError
from gptiny_cli.export.hf_dir import MIXED_TEXT, check_tokenizer
from gptiny_cli.store.runs import load_run, read_run_info, val_bits
from tests.exporting import BPE_VOCAB, export, gptiny, greedy_text, train_bpe_run
from tests.test_export_cli import refused

PROMPT = "ALICE: 日本語 😀"
UNICODE = "BOB: 今日は7回目です。the fox 🦊 jumps over 日本語 😀, ça va?\n  two spaces\tand a tab"


@pytest.fixture(scope="module", params=["learned", "rope"])
def exported(request, tmp_path_factory) -> tuple[Path, Path]:
    """(a BPE run, its hf export) for GPT-2 and GPT-NeoX."""
    run_dir = train_bpe_run(tmp_path_factory.mktemp("bpe"), request.param)
    return run_dir, export(run_dir, "hf")


def test_the_run_is_bpe_and_the_text_splits_characters_into_bytes(exported):
    run_dir, _ = exported
    vocab = load_run(run_dir).vocab
    assert vocab.kind == "bpe" and vocab.size == BPE_VOCAB
    pieces = [vocab.token_bytes[i] for i in vocab.encode(UNICODE)]
    assert any(not _is_utf8(piece) for piece in pieces)  # some token holds part of a character


def _is_utf8(piece: bytes) -> bool:
    try:
        piece.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_the_hf_export_holds_the_runs_own_tokenizer_json(exported):
    run_dir, out = exported
    assert (out / "tokenizer.json").read_bytes() == (run_dir / "tokenizer.json").read_bytes()
    assert AutoTokenizer.from_pretrained(out).is_fast


@pytest.mark.parametrize("text", [UNICODE, MIXED_TEXT, "😀😀日", " "])
def test_autotokenizer_encodes_and_decodes_as_gptiny(exported, text):
    run_dir, out = exported
    vocab = load_run(run_dir).vocab
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer(text).input_ids
    assert ids == vocab.encode(text)
    assert tokenizer.decode(ids) == vocab.decode(ids) == text


def test_logits_from_pretrained_equal_gptinys(exported):
    run_dir, out = exported
    ours, theirs = load_run(run_dir).model, AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.randint(0, ours.vocab_size, (2, ours.cfg.block_size), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (theirs(ids).logits - ours(ids)).abs().max() < 1e-4


def test_a_vocabulary_past_n_embd_exports_to_hf_when_trained_without_a_head_bias(tmp_path):
    folded = gptiny("export", str(train_bpe_run(tmp_path, n_embd=32)), "--format", "hf")
    assert folded.exit_code == 1 and "model.head_bias = false" in folded.output
    run_dir = train_bpe_run(tmp_path, n_embd=32, head_bias=False)
    out = export(run_dir, "hf")
    ours, theirs = load_run(run_dir).model, AutoModelForCausalLM.from_pretrained(out).eval()
    assert ours.head.bias is None and ours.vocab_size > ours.cfg.n_embd + 1
    ids = torch.randint(0, ours.vocab_size, (2, ours.cfg.block_size), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (theirs(ids).logits - ours(ids)).abs().max() < 1e-4
    assert "trained without a bias" in (out / "README.md").read_text()
    sampled = gptiny("sample", str(run_dir), "--prompt", PROMPT, "--tokens", "8", "--precision", "int8")
    assert sampled.exit_code == 0, sampled.output


def test_greedy_generate_gives_the_text_of_gptiny_sample(exported):
    run_dir, out = exported
    tokenizer, model = AutoTokenizer.from_pretrained(out), AutoModelForCausalLM.from_pretrained(out)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    new = load_run(run_dir).config.model.block_size - ids.shape[1]  # within GPT-2's n_positions
    text = tokenizer.decode(model.generate(ids, do_sample=False, max_new_tokens=new)[0])
    assert text == greedy_text(run_dir, PROMPT, new)


def test_the_model_card_describes_the_bpe_vocabulary_and_bits_per_character(exported):
    run_dir, out = exported
    card = (out / "README.md").read_text(encoding="utf-8")
    info = read_run_info(run_dir)
    bpc = val_bits(info, info["best_val_loss"])[0]
    assert "byte-level BPE" in card and f"{BPE_VOCAB} tokens" in card and "characters, in this order" not in card
    assert f"best {info['best_val_loss']:.4f} nats per token ({bpc:.4f} bits per character)" in card
    assert abs(bpc - info["best_val_loss"] / np.log(2)) > 1e-3  # per character is not per token here
    assert "nats per character" not in card and "dropped silently" not in card


def test_the_check_refuses_a_tokenizer_that_splits_otherwise(exported, tmp_path):
    run_dir, out = exported
    vocab = load_run(run_dir).vocab
    assert len(vocab.encode(MIXED_TEXT)) < len(MIXED_TEXT.encode("utf-8"))  # merges are used
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((out / name).read_bytes())
    raw = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))
    raw["model"]["merges"] = []  # the bytes alone
    (tmp_path / "tokenizer.json").write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(GptinyError, match="does not split"):
        check_tokenizer(vocab, tmp_path)


@pytest.fixture(scope="module")
def bpe_run(tmp_path_factory) -> Path:
    return train_bpe_run(tmp_path_factory.mktemp("bpe-onnx"), "rope")


def test_the_onnx_export_names_and_holds_the_runs_tokenizer(bpe_run):
    out = export(bpe_run, "onnx")
    assert sorted(p.name for p in out.iterdir()) == ["gptiny-export.json", "gptiny-onnx.json", "model.onnx",
                                                     "tokenizer.json"]
    spec = json.loads((out / "gptiny-onnx.json").read_text())
    assert (spec["tokenizer"], spec["vocab"]) == ("bpe", "tokenizer.json")
    assert (out / "tokenizer.json").read_bytes() == (bpe_run / "tokenizer.json").read_bytes()
    tokenizer = Tokenizer.from_file(str(out / spec["vocab"]))
    assert tokenizer.encode(UNICODE).ids == load_run(bpe_run).vocab.encode(UNICODE)
    ids = tokenizer.encode(PROMPT).ids
    new = spec["block_size"] - len(ids)
    assert tokenizer.decode(_onnx_greedy(out, spec, ids, new)) == greedy_text(bpe_run, PROMPT, new)


def _onnx_greedy(out: Path, spec: dict, ids: list[int], n: int) -> list[int]:
    """Greedy ids from onnxruntime alone, the whole text fed each step (within block_size)."""
    graph = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    empty = np.zeros((spec["n_layer"], 1, spec["n_head"], 0, spec["head_dim"]), dtype=np.float32)
    ids = list(ids)
    for _ in range(n):
        (logits,) = graph.run(["logits"], {"input_ids": np.array([ids], dtype=np.int64),
                                           "position": np.array(0, dtype=np.int64),
                                           "past_keys": empty, "past_values": empty})
        ids.append(int(np.argmax(logits[0, -1])))
    return ids


def test_gguf_refuses_a_bpe_run_in_one_line_and_writes_nothing(bpe_run, tmp_path):
    pytest.importorskip("gguf")
    out = tmp_path / "model.gguf"
    refused(gptiny("export", str(bpe_run), "--format", "gguf", "--out", str(out)),
            "GGUF export supports character runs for now")
    assert list(tmp_path.iterdir()) == []
