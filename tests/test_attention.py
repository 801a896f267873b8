"""Attention maps (report/attention.py) and ``gptiny attention``: recomputed outside the model, they
are softmax(q kᵀ / √D) under the causal mask, worked out here by hand from the layer's weights."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from gptiny_cli.cli import app
from gptiny_cli.config import ModelConfig
from gptiny_cli.errors import GptinyError
from gptiny_cli.model import GPT, Bigram
from gptiny_cli.report.attention import insight, top_next
from tests.training import train_tiny

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


def tiny_gpt(position: str) -> GPT:
    torch.manual_seed(0)
    cfg = ModelConfig(n_embd=8, block_size=6, n_layer=1, n_head=2, dropout=0.0, position=position)
    return GPT(cfg, vocab_size=5).eval()


def by_hand(model: GPT, tokens: list[int], position: str) -> torch.Tensor:
    """Layer 0's weights (H, T, T), every step written out: embed, norm, q and k, rotate, scores, mask."""
    T, C, H = len(tokens), model.cfg.n_embd, model.cfg.n_head
    D = C // H
    x = model.tok_emb.weight[tokens]  # (T, C)
    if position == "learned":
        x = x + model.pos_emb.weight[:T]
    x = model.blocks[0].ln1(x)
    W, b = model.blocks[0].attn.qkv.weight, model.blocks[0].attn.qkv.bias
    q, k = (x @ W[:C].T + b[:C]), (x @ W[C : 2 * C].T + b[C : 2 * C])  # (T, C)
    weights = torch.zeros(H, T, T)
    for h in range(H):
        qh, kh = q[:, h * D : (h + 1) * D], k[:, h * D : (h + 1) * D]  # (T, D)
        if position == "rope":
            qh, kh = rotate_by_hand(qh), rotate_by_hand(kh)
        for i in range(T):
            scores = [float(qh[i] @ kh[j]) / math.sqrt(D) for j in range(i + 1)]
            top = max(scores)
            exps = [math.exp(s - top) for s in scores]
            weights[h, i, : i + 1] = torch.tensor([e / sum(exps) for e in exps])
    return weights


def rotate_by_hand(x: torch.Tensor) -> torch.Tensor:
    """Rotary embedding: channel pair (c, c + D/2) at position p turned by p · 10000^(-2c/D)."""
    T, D = x.shape
    out = torch.empty_like(x)
    for p in range(T):
        for c in range(D // 2):
            angle = p * 10000 ** (-2 * c / D)
            a, b = x[p, c], x[p, c + D // 2]
            out[p, c] = a * math.cos(angle) - b * math.sin(angle)
            out[p, c + D // 2] = a * math.sin(angle) + b * math.cos(angle)
    return out


@pytest.mark.parametrize("position", ["learned", "rope"])
def test_the_maps_are_the_causal_softmax_of_the_scaled_query_key_products(position):
    model = tiny_gpt(position)
    tokens = [1, 4, 0, 2, 2, 3]
    seen = insight(model, tokens)
    assert seen.attention.shape == (1, 2, 6, 6)
    with torch.no_grad():
        expected = by_hand(model, tokens, position)
    torch.testing.assert_close(seen.attention[0], expected, atol=1e-5, rtol=1e-4)


def test_the_probabilities_are_the_models_own_next_character_distribution():
    model = tiny_gpt("rope")
    tokens = [3, 1, 4, 1]
    seen = insight(model, tokens)
    with torch.no_grad():
        expected = torch.softmax(model(torch.tensor([tokens]))[0], dim=-1)
    torch.testing.assert_close(seen.probs, expected)
    (best,) = top_next(seen.probs[-1:], ("a", "b", "c", "d", "e"), k=1)
    assert best[0][0] == "abcde"[int(expected[-1].argmax())]


def test_the_model_is_left_without_hooks():
    model = tiny_gpt("learned")
    insight(model, [0, 1])
    assert all(not block.attn._forward_pre_hooks for block in model.blocks)


def test_a_bigram_model_and_a_text_longer_than_a_block_are_refused():
    with pytest.raises(GptinyError, match="bigram"):
        insight(Bigram(ModelConfig(arch="bigram"), 5), [0, 1])
    with pytest.raises(GptinyError, match="1 to 6 characters"):
        insight(tiny_gpt("rope"), [0] * 7)


def test_attention_draws_one_heat_map_per_layer_and_head(data_dir):
    run_dir = train_tiny(data_dir)
    result = runner.invoke(app, ["attention", str(run_dir), "--prompt", "ALICE: the", "--out", "maps.png"])
    assert result.exit_code == 0, result.output
    assert Path("maps.png").read_bytes().startswith(PNG)
    assert "1 layers × 2 heads" in result.stdout and "last 8 characters" in result.stderr


def test_attention_refuses_characters_outside_the_vocabulary(data_dir):
    run_dir = train_tiny(data_dir)
    result = runner.invoke(app, ["attention", str(run_dir), "--prompt", "Zebra"])
    assert result.exit_code == 1 and "vocabulary lacks: 'Z'" in result.stderr


def test_without_matplotlib_attention_says_how_to_install_it(data_dir, monkeypatch):
    run_dir = train_tiny(data_dir)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = runner.invoke(app, ["attention", str(run_dir), "--prompt", "ALICE"])
    assert result.exit_code == 1 and "pip install 'gptiny[plot]'" in result.stderr
