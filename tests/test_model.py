"""The model: shapes, causality, options, and the KV cache agreeing with the full forward pass."""

from __future__ import annotations

import pytest
import torch

from gptiny_cli.config import ModelConfig
from gptiny_cli.model import GPT, attend, build_model, causal_mask

OPTIONS = [{}, {"position": "rope"}, {"tie_weights": True}, {"activation": "gelu"}]


def tiny(**options) -> GPT:
    torch.manual_seed(0)
    cfg = ModelConfig(n_embd=16, block_size=8, n_layer=2, n_head=2, dropout=0.0, **options)
    return build_model(cfg, vocab_size=11).eval()


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "classic")
def test_logits_have_one_row_per_position(options):
    logits = tiny(**options)(torch.randint(11, (3, 8)))
    assert logits.shape == (3, 8, 11)


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "classic")
def test_a_position_never_sees_the_future(options):
    model = tiny(**options)
    idx = torch.randint(11, (1, 8))
    changed = idx.clone()
    changed[0, 5:] = (changed[0, 5:] + 1) % 11
    with torch.no_grad():
        assert torch.allclose(model(idx)[0, :5], model(changed)[0, :5], atol=1e-6)
        assert not torch.allclose(model(idx)[0, 5:], model(changed)[0, 5:])


@pytest.mark.parametrize("options", [{}, {"position": "rope"}], ids=["learned", "rope"])
def test_cached_logits_match_the_full_forward_pass(options):
    model = tiny(**options)
    idx = torch.randint(11, (2, 8))
    with torch.no_grad():
        full = model(idx)
        cache = model.new_cache(2, torch.device("cpu"), torch.float32)
        steps = [model(idx[:, :3], cache)]
        steps += [model(idx[:, t : t + 1], cache) for t in range(3, 8)]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


def test_rope_model_has_no_position_table():
    assert not hasattr(tiny(position="rope"), "pos_emb")


def test_tied_head_shares_the_embedding():
    model = tiny(tie_weights=True)
    assert model.head.weight is model.tok_emb.weight


def test_a_longer_input_than_the_block_is_refused():
    with pytest.raises(ValueError, match="exceeds block_size"):
        tiny()(torch.zeros(1, 9, dtype=torch.long))


def test_a_query_sees_itself_and_at_most_window_minus_one_positions_before_it():
    visible = causal_mask(T=3, n=5, window=2, device=torch.device("cpu"))  # queries at positions 2, 3, 4
    assert visible.tolist() == [[False, True, True, False, False],
                                [False, False, True, True, False],
                                [False, False, False, True, True]]


def test_attention_over_a_window_is_attention_over_the_window_alone():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 6, 4, dtype=torch.float64) for _ in range(3))
    windowed = attend(q, k, v, window=3)  # (B, H, T, D)
    alone = [attend(q[:, :, t : t + 1], k[:, :, max(0, t - 2) : t + 1], v[:, :, max(0, t - 2) : t + 1], window=3)
             for t in range(6)]
    assert torch.allclose(windowed, torch.cat(alone, dim=2), atol=1e-12)


def test_the_gelu_feed_forward_is_gelus_tanh_form_and_relu_the_default():
    x = torch.linspace(-4, 4, 33)[None, None, :].expand(1, 2, 33)[..., :16]  # (B, T, C) with C = n_embd
    gelu, relu = tiny(activation="gelu").blocks[0].ffn, tiny().blocks[0].ffn
    relu.load_state_dict(gelu.state_dict())
    h = gelu.fc(x)
    tanh_form = 0.5 * h * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (h + 0.044715 * h**3)))
    torch.testing.assert_close(gelu(x), gelu.proj(tanh_form), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(relu(x), relu.proj(h.relu()), rtol=0, atol=0)
