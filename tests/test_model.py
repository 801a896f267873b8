"""The model: shapes, causality, options, and the KV cache agreeing with the full forward pass."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gptiny_cli.config import ModelConfig
from gptiny_cli.model import GPT, Dropout, attend, build_model, causal_attention

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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dropout_zeroes_about_p_of_the_elements_and_scales_the_rest(dtype):
    torch.manual_seed(0)
    x = torch.ones(200_000, dtype=dtype, requires_grad=True)
    y = Dropout(0.2).train()(x)
    dropped = (y == 0).float().mean().item()
    assert dropped == pytest.approx(0.2, abs=0.005)
    assert torch.all((y == 0) | (y == 1.25))
    y.sum().backward()
    assert x.grad.dtype == dtype and torch.equal(x.grad.float(), y.detach().float())  # kept ones pass 1.25


def test_dropout_draws_the_same_mask_from_the_same_seed_and_is_off_in_eval():
    x = torch.randn(4, 8, 16)
    masks = []
    for _ in range(2):
        torch.manual_seed(3)
        masks.append(Dropout(0.5).train()(x) == 0)
    assert torch.equal(masks[0], masks[1])
    assert torch.equal(Dropout(0.5).eval()(x), x)


def test_written_out_attention_equals_the_fused_kernel_forward_and_backward():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    ours = causal_attention(q, k, v)
    fused = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.allclose(ours, fused, atol=1e-12)
    grads = [torch.autograd.grad(out.sum(), (q, k, v)) for out in (ours, fused)]
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(*grads, strict=True))


def test_training_in_bfloat16_on_the_cpu_attends_with_the_written_out_form():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8, dtype=torch.bfloat16) for _ in range(3))
    assert torch.equal(attend(q, k, v, window=7), causal_attention(q, k, v))


def test_attention_dropout_drops_whole_weights_and_keeps_their_sum_in_expectation():
    torch.manual_seed(0)
    q, k = torch.zeros(1, 1, 64, 4), torch.zeros(1, 1, 64, 4)
    v = torch.ones(1, 1, 64, 4)  # every output is then the sum of a row's kept weights
    out = causal_attention(q, k, v, dropout=0.5)
    assert out.mean().item() == pytest.approx(1.0, abs=0.1)
    assert not torch.allclose(out, torch.ones_like(out))


def test_the_gelu_feed_forward_is_gelus_tanh_form_and_relu_the_default():
    x = torch.linspace(-4, 4, 33)[None, None, :].expand(1, 2, 33)[..., :16]  # (B, T, C) with C = n_embd
    gelu, relu = tiny(activation="gelu").blocks[0].ffn, tiny().blocks[0].ffn
    relu.load_state_dict(gelu.state_dict())
    h = gelu.fc(x)
    tanh_form = 0.5 * h * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (h + 0.044715 * h**3)))
    torch.testing.assert_close(gelu(x), gelu.proj(tanh_form), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(relu(x), relu.proj(h.relu()), rtol=0, atol=0)
