"""Sampling: the filtering maths, the draws, and generation with and without the KV cache."""

from __future__ import annotations

import pytest
import torch

from gptiny_cli.config import ModelConfig
from gptiny_cli.generation.sample import Sampler, draw_together, filter_logits, generate, logits_to_probs
from gptiny_cli.model import build_model

VOCAB = 11
BLOCK = 8


def tiny(position: str = "learned", arch: str = "gpt") -> torch.nn.Module:
    """A tiny model with weights large enough that every character of the context sways the next."""
    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, n_embd=16, block_size=BLOCK, n_layer=2, n_head=2, dropout=0.0, position=position)
    model = build_model(cfg, vocab_size=VOCAB).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.normal_(0.0, 0.5)
    return model


def sampled(model, prompt, n, seed=5, **options) -> torch.Tensor:
    """(num_samples, n) token ids."""
    generator = torch.Generator().manual_seed(seed)
    return torch.stack(list(generate(model, prompt, n, generator=generator, **options)), dim=1)


def test_temperature_sharpens_or_flattens_the_distribution():
    logits = torch.tensor([2.0, 1.0, 0.0])
    assert torch.allclose(logits_to_probs(logits, 1.0), torch.softmax(logits, -1))
    assert logits_to_probs(logits, 0.5)[0] > logits_to_probs(logits, 1.0)[0] > logits_to_probs(logits, 2.0)[0]


def test_top_k_keeps_exactly_k_candidates_even_when_logits_tie():
    probs = logits_to_probs(torch.tensor([1.0, 3.0, 1.0, 1.0, 1.0]), top_k=3)
    assert (probs > 0).sum() == 3
    assert probs[1] > 0 and probs[0] > 0 and probs[2] > 0  # ties broken by token index
    assert (probs[3], probs[4]) == (0, 0)


def test_top_k_larger_than_the_vocabulary_keeps_everything():
    logits = torch.randn(4, VOCAB)
    assert torch.equal(filter_logits(logits, top_k=VOCAB + 50), filter_logits(logits))


def test_top_p_keeps_the_smallest_set_reaching_the_mass():
    logits = torch.tensor([0.5, 0.3, 0.2]).log()
    assert (logits_to_probs(logits, top_p=0.6) > 0).tolist() == [True, True, False]
    assert (logits_to_probs(logits, top_p=0.5) > 0).tolist() == [True, False, False]
    assert torch.allclose(logits_to_probs(logits, top_p=0.6), torch.tensor([0.625, 0.375, 0.0]))


def test_top_p_of_one_keeps_everything_and_a_tiny_one_keeps_the_best():
    logits = torch.randn(3, VOCAB)
    assert torch.equal(filter_logits(logits, top_p=1.0), filter_logits(logits))
    kept = filter_logits(logits, top_p=1e-9) > float("-inf")
    assert kept.sum(-1).tolist() == [1, 1, 1]
    assert kept.float().argmax(-1).tolist() == logits.argmax(-1).tolist()


@pytest.mark.parametrize("options", [{}, {"top_k": 3}, {"top_p": 0.7}, {"temperature": 0.5, "top_k": 4, "top_p": 0.9}])
def test_draws_follow_the_filtered_distribution(options):
    logits = torch.tensor([[1.5, 0.2, -0.3, 1.0, 0.9, -2.0]])
    draws = 20000
    sampler = Sampler(1, 6, generator=torch.Generator().manual_seed(0), **options)
    counts = torch.bincount(torch.cat([sampler(logits) for _ in range(draws)]), minlength=6)
    expected = logits_to_probs(logits[0], options.get("temperature", 1.0), options.get("top_k", 0),
                               options.get("top_p", 1.0))
    assert torch.equal(counts > 0, expected > 0)  # never outside the kept set
    assert torch.allclose(counts / draws, expected, atol=0.015)


@pytest.mark.parametrize("second", [{"temperature": 0.7}, {"temperature": 1.3}, {"top_k": 3}, {"temperature": 0}],
                         ids=["both-plain", "one-temperature", "one-filtered", "one-greedy"])
def test_samplers_drawn_together_draw_what_each_draws_alone(second):
    def samplers() -> list[Sampler]:
        return [Sampler(2, 9, temperature=1.3, generator=torch.Generator().manual_seed(1)),
                Sampler(1, 9, generator=torch.Generator().manual_seed(2), **second)]

    together, alone = samplers(), samplers()
    for _ in range(50):
        logits = [torch.randn(2, 9).bfloat16(), torch.randn(1, 9).bfloat16()]  # as an int8 model gives them
        expected = torch.cat([sample(rows) for sample, rows in zip(alone, logits, strict=True)])
        assert torch.equal(draw_together(together, logits), expected)


def test_temperature_zero_takes_the_first_of_the_most_likely():
    sampler = Sampler(2, 4, temperature=0)
    assert sampler(torch.tensor([[0.0, 2.0, 2.0, 1.0], [5.0, 0.0, 5.0, 5.0]])).tolist() == [1, 0]


@pytest.mark.parametrize("options", [{"temperature": 1.0}, {"temperature": 0.6}, {"temperature": 1.8},
                                     {"temperature": 0}, {"top_k": 3}, {"top_p": 0.8},
                                     {"temperature": 0.7, "top_k": 5, "top_p": 0.9}])
@pytest.mark.parametrize("prompt", [[], [3, 1, 4]], ids=["empty", "prompt"])
def test_cached_and_plain_generation_agree_within_the_block(options, prompt):
    model = tiny()
    n = BLOCK - max(len(prompt), 1) + 1  # the last one sees a full block
    cached = sampled(model, prompt, n, num_samples=3, **options)
    assert torch.equal(cached, sampled(model, prompt, n, num_samples=3, use_cache=False, **options))


@pytest.mark.parametrize("options", [{"temperature": 1.0}, {"temperature": 0}, {"top_k": 3, "top_p": 0.9}])
def test_with_rotary_positions_they_agree_far_past_the_block(options):
    model = tiny("rope")
    cached = sampled(model, [1, 2], 5 * BLOCK, num_samples=2, **options)
    assert torch.equal(cached, sampled(model, [1, 2], 5 * BLOCK, num_samples=2, use_cache=False, **options))


def test_past_the_block_learned_positions_condition_on_the_last_quarter_to_whole_block():
    model, prompt, n = tiny(), [1, 2, 3], 4 * BLOCK
    # The reference: every character from the full forward pass over the window the cache holds,
    # which grows to a whole block and is then refilled with the last quarter block.
    context, window, expected = list(prompt), len(prompt), []
    sampler = Sampler(1, VOCAB, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        for _ in range(n):
            token = sampler(model(torch.tensor([context[-window:]]))[:, -1])
            expected.append(token.item())
            context.append(token.item())
            window = BLOCK // 4 if window == BLOCK else window + 1
    assert sampled(model, prompt, n)[0].tolist() == expected


def test_the_plain_loop_crops_learned_positions_to_the_block():
    model = tiny()
    out = sampled(model, [1], 3 * BLOCK, use_cache=False, temperature=0)[0].tolist()
    context = [1] + out
    with torch.no_grad():
        for i in range(BLOCK, len(out)):
            window = torch.tensor([context[i + 1 - BLOCK : i + 1]])
            assert model(window)[0, -1].argmax().item() == out[i]


def test_a_prompt_longer_than_the_block_keeps_its_tail():
    model = tiny()
    long_prompt = [(3 * i) % VOCAB for i in range(3 * BLOCK)]
    for use_cache in (True, False):
        assert torch.equal(sampled(model, long_prompt, 6, use_cache=use_cache),
                           sampled(model, long_prompt[-BLOCK:], 6, use_cache=use_cache))


def test_one_token_and_an_empty_prompt():
    model = tiny()
    out = sampled(model, [], 1, num_samples=4)
    assert out.shape == (4, 1) and ((0 <= out) & (out < VOCAB)).all()


def test_several_samples_with_a_prompt_are_independent_continuations():
    out = sampled(tiny(), [2, 7], 12, num_samples=6)
    assert out.shape == (6, 12)
    assert len({tuple(row) for row in out.tolist()}) > 1


def test_top_k_beyond_the_vocabulary_and_top_p_of_one_change_nothing():
    model = tiny()
    plain = sampled(model, [1], 20, num_samples=2)
    assert torch.equal(sampled(model, [1], 20, num_samples=2, top_k=VOCAB + 1), plain)
    assert torch.equal(sampled(model, [1], 20, num_samples=2, top_p=1.0), plain)


def test_a_tiny_top_p_is_greedy():
    model = tiny()
    assert torch.equal(sampled(model, [4], 20, top_p=1e-9), sampled(model, [4], 20, temperature=0))


def test_the_same_seed_gives_the_same_text_and_another_seed_another():
    model = tiny()
    assert torch.equal(sampled(model, [1], 30, seed=1), sampled(model, [1], 30, seed=1))
    assert not torch.equal(sampled(model, [1], 30, seed=1), sampled(model, [1], 30, seed=2))


def test_the_bigram_baseline_generates_from_the_last_character():
    model = tiny(arch="bigram")
    out = sampled(model, [5, 6], 30, temperature=0)[0].tolist()
    table = model.table.weight
    previous = [6] + out[:-1]
    assert out == [table[p].argmax().item() for p in previous]
