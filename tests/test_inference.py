"""Generation's number formats: weights in bfloat16 or int8."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from gptiny_cli.config import ModelConfig
from gptiny_cli.errors import GptinyError
from gptiny_cli.generation.inference import DENSE_ROWS, Int8Linear, for_inference
from gptiny_cli.generation.sample import generate
from gptiny_cli.model import build_model

CPU = torch.device("cpu")
VOCAB, BLOCK = 11, 8
OPTIONS = [{}, {"position": "rope"}, {"tie_weights": True}]


def tiny(width: int = 16, **options) -> nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(n_embd=width, block_size=BLOCK, n_layer=2, n_head=2, dropout=0.0, **options)
    return build_model(cfg, vocab_size=VOCAB).eval()


def test_int8_linear_matches_its_dequantised_weights():
    torch.manual_seed(0)
    for n_in, n_out in [(32, 11), (64, 96), (384, 1152), (1536, 384)]:
        linear = nn.Linear(n_in, n_out)
        quantised = Int8Linear(linear)
        dequantised = quantised.weight.float() * quantised.scale.float()[:, None]  # (out, in)
        assert (dequantised - linear.weight).abs().max() <= linear.weight.abs().max() / 127
        for batch in (1, 3, 8):
            x = torch.randn(batch, 1, n_in)
            exact = x @ dequantised.T + linear.bias
            got = quantised(x.bfloat16()).float()
            assert got.shape == (batch, 1, n_out)
            assert (got - exact).abs().max() < 0.02 * exact.abs().max()


def test_an_int8_prompt_pass_in_bfloat16_gives_what_its_rows_give_one_at_a_time():
    torch.manual_seed(0)
    quantised = Int8Linear(nn.Linear(64, 96), dense=True)
    x = torch.randn(DENSE_ROWS + 5, 64).bfloat16()  # enough rows for the dense matmul
    alone = torch.cat([quantised(row[None]) for row in x]).float()  # one row: the int8 kernel
    together = quantised(x).float()
    assert (together - alone).abs().max() < 0.01 * alone.abs().max()


def test_conversion_happens_in_place():
    model = tiny(64)
    linear = model.blocks[0].attn.qkv
    assert for_inference(model, "float32", CPU) is model and model.blocks[0].attn.qkv is linear
    assert for_inference(model, "int8", CPU) is model
    assert isinstance(model.blocks[0].attn.qkv, Int8Linear) and next(model.parameters()).dtype == torch.bfloat16


def test_int8_quantises_the_linear_layers_the_kernel_can_take():
    fast = for_inference(tiny(48), "int8", CPU)  # the kernel takes input sizes in multiples of 32
    assert isinstance(fast.blocks[0].ffn.proj, Int8Linear) and fast.blocks[0].ffn.proj.weight.dtype == torch.int8
    assert isinstance(fast.blocks[0].attn.qkv, nn.Linear) and fast.blocks[0].attn.qkv.weight.dtype == torch.bfloat16


@pytest.mark.parametrize("precision", ["bfloat16", "int8"])
def test_lower_precision_logits_stay_close(precision):
    model = tiny(64)
    idx = torch.randint(VOCAB, (4, BLOCK))
    with torch.inference_mode():
        exact = model(idx)
        approx = for_inference(copy.deepcopy(model), precision, CPU)(idx).float()
        probs_gap = (approx.softmax(-1) - exact.softmax(-1)).abs().max()
    assert (approx - exact).abs().max() < 0.03 * exact.abs().max() and probs_gap < 0.003


@pytest.mark.parametrize("precision", ["bfloat16", "int8"])
def test_lower_precision_generates_with_and_without_the_cache(precision):
    fast = for_inference(tiny(64, position="rope"), precision, CPU)
    for use_cache in (True, False):
        steps = list(generate(fast, [1, 2], 3 * BLOCK, num_samples=2, use_cache=use_cache,
                              generator=torch.Generator().manual_seed(0)))
        assert len(steps) == 3 * BLOCK and all(((0 <= s) & (s < VOCAB)).all() for s in steps)


def test_unknown_or_misplaced_precisions_are_refused():
    with pytest.raises(GptinyError, match="--precision 'int4' is invalid"):
        for_inference(tiny(), "int4", CPU)
    with pytest.raises(GptinyError, match="int8 runs on the CPU only"):
        for_inference(tiny(), "int8", torch.device("cuda"))


class AttentionOnly(nn.Module):
    """A block of someone's own making, as in the walkthrough notebook: no feed-forward part."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.ln, self.attn = block.ln1, block.attn

    def forward(self, x, rope=None, cache=None, layer: int = 0):
        return x + self.attn(self.ln(x), rope, cache, layer)


def test_a_gpt_with_blocks_of_its_own_generates_through_its_forward():
    model = tiny()
    model.blocks = nn.ModuleList(AttentionOnly(block) for block in model.blocks)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.5)  # every character of the context sways the next

    def sampled(use_cache: bool) -> list[torch.Tensor]:
        return list(generate(model, [3], BLOCK, num_samples=2, use_cache=use_cache,
                             generator=torch.Generator().manual_seed(0)))

    assert torch.equal(torch.stack(sampled(True)), torch.stack(sampled(False)))
