"""The CPU kernels: each computes what the model's plain operation does, and a model set up on the
CPU runs them where they pay, while a model built as such runs the plain ones."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.profiler import profile

from gptiny_cli.config import ModelConfig, config_from_dict
from gptiny_cli.hardware.kernels import CpuDropout, causal_attention, cpu_attend, for_cpu
from gptiny_cli.hardware.setup import place
from gptiny_cli.model import attend, build_model, causal_mask
from gptiny_cli.training.session import setup
from tests.conftest import tiny_raw

CPU = torch.device("cpu")


def tiny(dropout: float = 0.0, **options) -> nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(n_embd=16, block_size=8, n_layer=2, n_head=2, dropout=dropout, **options)
    return build_model(cfg, vocab_size=11)


def ops_of(model: nn.Module, idx: torch.Tensor, dtype: torch.dtype) -> set[str]:
    """The aten operations one forward pass of ``model`` runs on ``idx`` under autocast to ``dtype``."""
    with profile() as prof, torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        model(idx)
    return {event.key for event in prof.key_averages()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dropout_zeroes_about_p_of_the_elements_and_scales_the_rest(dtype):
    torch.manual_seed(0)
    x = torch.ones(200_000, dtype=dtype, requires_grad=True)
    y = CpuDropout(0.2).train()(x)
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
        masks.append(CpuDropout(0.5).train()(x) == 0)
    assert torch.equal(masks[0], masks[1])
    assert torch.equal(CpuDropout(0.5).eval()(x), x)


def test_written_out_attention_equals_the_fused_kernel_forward_and_backward():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    ours = causal_attention(q, k, v)
    fused = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.allclose(ours, fused, atol=1e-12)
    grads = [torch.autograd.grad(out.sum(), (q, k, v)) for out in (ours, fused)]
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(*grads, strict=True))


def test_attention_dropout_drops_whole_weights_and_keeps_their_sum_in_expectation():
    torch.manual_seed(0)
    q, k = torch.zeros(1, 1, 64, 4), torch.zeros(1, 1, 64, 4)
    v = torch.ones(1, 1, 64, 4)  # every output is then the sum of a row's kept weights
    out = causal_attention(q, k, v, dropout=0.5)
    assert out.mean().item() == pytest.approx(1.0, abs=0.1)
    assert not torch.allclose(out, torch.ones_like(out))


def test_cpu_attention_in_bfloat16_is_the_written_out_form_up_to_512_positions_within_the_window():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8, dtype=torch.bfloat16) for _ in range(3))
    assert torch.equal(cpu_attend(q, k, v, window=7), causal_attention(q, k, v))
    assert not torch.equal(attend(q, k, v, window=7), causal_attention(q, k, v))  # the fused kernel's rounding


# dtype, T queries, n keys, window
ELSEWHERE = {
    "float32": (torch.float32, 7, 7, 8),
    "one query": (torch.bfloat16, 1, 5, 8),
    "fewer queries than keys": (torch.bfloat16, 3, 7, 8),
    "beyond the window": (torch.bfloat16, 7, 7, 4),
    "beyond 512 positions": (torch.bfloat16, 513, 513, 1024),
}


@pytest.mark.parametrize("case", ELSEWHERE)
def test_cpu_attention_hands_everything_else_to_the_plain_one(case):
    dtype, T, n, window = ELSEWHERE[case]
    torch.manual_seed(0)
    q = torch.randn(1, 2, T, 8, dtype=dtype)
    k, v = (torch.randn(1, 2, n, 8, dtype=dtype) for _ in range(2))
    assert torch.equal(cpu_attend(q, k, v, window), attend(q, k, v, window))


def test_a_model_set_up_for_the_cpu_keeps_its_state_dict_and_swaps_only_dropout_and_attention():
    plain, swapped = tiny(0.1), for_cpu(tiny(0.1))
    assert plain.state_dict().keys() == swapped.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), swapped.state_dict().values(),
                                                 strict=True))
    kinds = {type(m) for m in swapped.modules()}
    assert CpuDropout in kinds and nn.Dropout not in kinds
    assert all(block.attn.attend is cpu_attend for block in swapped.blocks)
    assert all(block.attn.attend is attend for block in plain.blocks)
    assert {type(m) for m in plain.modules()} - kinds == {nn.Dropout}


def test_cpu_training_runs_the_fast_dropout_and_written_out_bf16_attention_and_a_plain_model_does_not(data_dir):
    raw = tiny_raw(data_dir, dtype="bfloat16")
    raw["model"]["dropout"] = 0.1
    session = setup(config_from_dict(raw), device="cpu")
    try:
        idx = torch.randint(session.corpus.vocab.size, (2, 8))
        fast = ops_of(session.model.train(), idx, torch.bfloat16)
        plain = ops_of(build_model(session.config.model, session.corpus.vocab.size).train(), idx, torch.bfloat16)
    finally:
        session.close()
    assert "_CpuDropout" in fast and "aten::bernoulli_" not in fast  # 64 random bits a draw, not one per element
    assert "aten::bernoulli_" in plain and "_CpuDropout" not in plain
    assert "aten::scaled_dot_product_attention" not in fast and "aten::masked_fill" in fast
    assert "aten::scaled_dot_product_attention" in plain


def test_placing_a_model_on_the_cpu_swaps_the_kernels_in():
    assert all(block.attn.attend is cpu_attend for block in place(tiny(), CPU).blocks)


def test_the_cpu_kernels_give_the_plain_models_logits_and_loss():
    idx, targets = torch.randint(11, (3, 8)), torch.randint(11, (3, 8))
    plain, fast = tiny().eval(), for_cpu(tiny()).eval()
    with torch.no_grad():
        assert torch.equal(fast(idx), plain(idx))  # float32: the kernels hand back to the plain ones
        with torch.autocast("cpu", dtype=torch.bfloat16):
            a, b = fast(idx).float(), plain(idx).float()
    assert torch.allclose(a, b, atol=0.05)
    loss = [F.cross_entropy(logits.flatten(0, 1), targets.flatten()) for logits in (a, b)]
    assert loss[0].item() == pytest.approx(loss[1].item(), abs=0.01)


def test_the_written_out_forms_mask_is_the_models_causal_mask():
    T = 6
    q, k = torch.zeros(1, 1, T, 2), torch.zeros(1, 1, T, 2)  # equal scores: each row spreads over what it sees
    weights = causal_attention(q, k, torch.eye(T)[None, None])  # v = I: the output is the weights themselves
    assert torch.equal(weights[0, 0] > 0, causal_mask(T, T, T, CPU))
