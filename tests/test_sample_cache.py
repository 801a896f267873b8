"""The KV cache: cached logits equal the full forward pass, inside the block and, rolling, past it."""

from __future__ import annotations

import pytest
import torch

from gptiny_cli.config import ModelConfig
from gptiny_cli.generation.sample import plain_context
from gptiny_cli.model import build_model

VOCAB, BLOCK, LAYERS, HEADS, WIDTH = 11, 8, 2, 2, 16


def tiny(**options) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(n_embd=WIDTH, block_size=BLOCK, n_layer=LAYERS, n_head=HEADS, dropout=0.0, **options)
    model = build_model(cfg, vocab_size=VOCAB).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.normal_(0.0, 0.5)
    return model


def cached_logits(model, idx: torch.Tensor, first: int) -> torch.Tensor:
    """Logits (B, T, V) from feeding ``first`` positions at once, then one position at a time."""
    cache = model.new_cache(idx.shape[0], torch.device("cpu"), torch.float32)
    steps = [model(idx[:, :first], cache)]
    steps += [model(idx[:, t : t + 1], cache) for t in range(first, idx.shape[1])]
    return torch.cat(steps, dim=1)


@pytest.mark.parametrize("options", [{}, {"position": "rope"}, {"tie_weights": True}],
                         ids=["classic", "rope", "tied"])
@pytest.mark.parametrize("first", [1, 3, BLOCK])
def test_cached_logits_match_the_full_forward_pass_inside_the_block(options, first):
    model = tiny(**options)
    idx = torch.randint(VOCAB, (2, BLOCK))
    with torch.inference_mode():
        assert (cached_logits(model, idx, first) - model(idx)).abs().max() < 1e-4


def test_a_rolling_cache_matches_a_sliding_window_far_past_the_block():
    model = tiny(position="rope")
    idx = torch.randint(VOCAB, (2, 5 * BLOCK))
    with torch.inference_mode():
        full = model(idx)  # every position attends to the BLOCK positions ending at it
        assert (cached_logits(model, idx, 3) - full).abs().max() < 1e-4


def test_the_sliding_window_reaches_back_one_block_per_layer_and_no_further():
    model = tiny(position="rope")
    idx = torch.randint(VOCAB, (1, 6 * BLOCK))
    reach = plain_context(model)
    assert reach == LAYERS * (BLOCK - 1) + 1
    with torch.inference_mode():
        last = model(idx)[:, -1]
        assert (model(idx[:, -reach:])[:, -1] - last).abs().max() < 1e-4
        assert (model(idx[:, -(reach - 1) :])[:, -1] - last).abs().max() > 1e-3


def test_the_cache_is_preallocated_to_the_block_and_filled_in_place():
    model = tiny()
    cache = model.new_cache(3, torch.device("cpu"), torch.float32)
    assert cache.keys.shape == cache.values.shape == (LAYERS, 3, HEADS, BLOCK, WIDTH // HEADS)  # (L, B, H, S, D)
    where = cache.keys.data_ptr()
    with torch.inference_mode():
        model(torch.zeros(3, 2, dtype=torch.long), cache)
        model(torch.zeros(3, 1, dtype=torch.long), cache)
    assert cache.length == 3 and cache.keys.data_ptr() == where
    assert cache.keys[:, :, :, :3].abs().sum() > 0 and cache.keys[:, :, :, 3:].abs().sum() == 0


def test_a_full_fixed_cache_refuses_another_position():
    model = tiny()
    cache = model.new_cache(1, torch.device("cpu"), torch.float32)
    with torch.inference_mode():
        model(torch.zeros(1, BLOCK, dtype=torch.long), cache)
        with pytest.raises(ValueError, match="exceeds block_size"):
            model(torch.zeros(1, 1, dtype=torch.long), cache)


def test_a_rolling_cache_takes_one_position_at_a_time_once_full():
    model = tiny(position="rope")
    cache = model.new_cache(1, torch.device("cpu"), torch.float32)
    assert cache.rolling
    with torch.inference_mode():
        model(torch.zeros(1, BLOCK - 1, dtype=torch.long), cache)
        with pytest.raises(ValueError, match="one position at a time"):
            model(torch.zeros(1, 2, dtype=torch.long), cache)
        for _ in range(2 * BLOCK):
            model(torch.zeros(1, 1, dtype=torch.long), cache)
    assert cache.length == 3 * BLOCK - 1
