"""The one decode step (generation/decode.py): rows of one cache, each at its own position, fed
one token each in a single step, get the logits the model's full forward pass gives each."""

from __future__ import annotations

import pytest
import torch

from gptiny_cli.config import ModelConfig
from gptiny_cli.generation.decode import Decoder, Pool, Rows, refill, refill_together
from gptiny_cli.model import build_model

CPU = torch.device("cpu")
VOCAB, BLOCK = 11, 8
OPTIONS = [{}, {"position": "rope"}, {"tie_weights": True}]


def tiny(position: str = "learned", **options):
    torch.manual_seed(0)
    cfg = ModelConfig(n_embd=16, block_size=BLOCK, n_layer=2, n_head=2, dropout=0.0, position=position, **options)
    return build_model(cfg, vocab_size=VOCAB).eval()


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "classic")
def test_decoder_steps_match_the_full_forward_pass(options):
    model = tiny(**options)
    length = 4 * BLOCK if options.get("position") == "rope" else BLOCK  # rotary: a rolling cache
    idx = torch.randint(VOCAB, (3, length))
    decoder = Decoder(model)
    with torch.inference_mode():
        pool = Pool(model, 3, CPU)
        logits = [model(idx[:, :2], pool.view(0, 3))]
        pool.positions[:] = 2
        logits += [decoder.step(idx[:, t], pool)[:, None] for t in range(2, length)]
        assert (torch.cat(logits, dim=1) - model(idx)).abs().max() < 1e-4


@pytest.mark.parametrize("position", ["learned", "rope"])
@torch.inference_mode()
def test_rows_at_different_positions_step_together_as_each_would_alone(position):
    model = tiny(position)
    decoder, pool = Decoder(model), Pool(model, 3, CPU)
    texts = [torch.randint(VOCAB, (1, length)) for length in (2, 5, 7)]  # prompt, then one more token
    for row, text in enumerate(texts):
        decoder.prefill(text[:, :-1], pool, row)
    logits = decoder.step(torch.cat([text[:, -1] for text in texts]), pool)  # (3, V)
    for row, text in enumerate(texts):
        assert torch.allclose(logits[row], model(text)[0, -1], atol=1e-5)
    assert pool.positions.tolist() == [2, 5, 7]


@torch.inference_mode()
def test_a_rolling_row_past_the_block_attends_to_the_newest_block_only():
    # with one layer the window is exactly the block (each further layer reaches a block further back)
    text = torch.randint(VOCAB, (2, 3 * BLOCK))
    one = tiny("rope")
    one.blocks = one.blocks[:1]
    decoder, pool = Decoder(one), Pool(one, 2, CPU)
    decoder.prefill(text[:, :BLOCK], pool, 0)
    for t in range(BLOCK, 3 * BLOCK):
        logits = decoder.step(text[:, t], pool)
    assert torch.allclose(logits, one(text[:, -BLOCK:])[:, -1], atol=1e-5)


@torch.inference_mode()
def test_rows_keep_their_contents_when_the_pool_grows_and_when_others_leave():
    model = tiny()
    decoder, pool = Decoder(model), Pool(model, 1, CPU)
    a, b = torch.randint(VOCAB, (1, 4)), torch.randint(VOCAB, (1, 6))
    decoder.prefill(a[:, :-1], pool, 0)
    pool.grow(2)
    decoder.prefill(b[:, :-1], pool, 1)
    pool.keep(torch.tensor([1]))  # the first row's request ended: the second moves up
    assert torch.allclose(decoder.step(b[:, -1], pool, 0)[0], model(b)[0, -1], atol=1e-5)


def test_a_full_fixed_cache_keeps_its_newest_quarter_block_less_one():
    recent = [torch.tensor([i]) for i in range(16)]
    assert [int(t) for t in refill(recent, 16)] == [13, 14, 15]
    assert [int(t) for t in refill(recent[:8], 8)] == [7]
    assert all(refill(recent[:n], n) == [] for n in range(2, 8))


@pytest.mark.parametrize("position", ["learned", "rope"])
@torch.inference_mode()
def test_a_refill_stores_the_keys_and_values_of_the_full_forward_pass_and_no_logits(position):
    model = tiny(position)
    context = torch.randint(VOCAB, (2, BLOCK // 2))
    full, refilled = Pool(model, 2, CPU), Pool(model, 2, CPU)
    Decoder(model).prefill(context, full, 0)
    assert Decoder(model).prefill(context, refilled, 0, logits=False) is None
    assert torch.equal(refilled.kv, full.kv) and torch.equal(refilled.positions, full.positions)


@torch.inference_mode()
def test_full_rows_refilled_together_hold_what_each_refill_alone_leaves():
    model = tiny()
    decoder = Decoder(model)
    contexts = [torch.randint(VOCAB, (n, BLOCK)) for n in (2, 1, 3)]
    alone, together = Pool(model, 6, CPU), Pool(model, 6, CPU)
    groups = {pool: [Rows(model, decoder, pool, c, start) for c, start in zip(contexts, (0, 2, 3), strict=True)]
              for pool in (alone, together)}
    for rows in groups[alone]:
        rows.ready()
    refill_together(decoder, together, [groups[together][0], groups[together][2]])  # not the middle one
    groups[together][1].ready()
    assert torch.allclose(together.kv, alone.kv, atol=1e-6) and torch.equal(together.positions, alone.positions)
    assert [r.length for r in groups[together]] == [r.length for r in groups[alone]] == [BLOCK // 4 - 1] * 3


@torch.inference_mode()
def test_rows_generate_past_a_fixed_block_refilling_before_the_step_that_would_not_fit():
    model = tiny()
    pool = Pool(model, 2, CPU)
    rows = Rows(model, Decoder(model), pool, torch.randint(VOCAB, (2, BLOCK)))
    fed = []
    for _ in range(3 * BLOCK):
        rows.token = rows.logits.argmax(-1)
        rows.ready()
        fed.append(rows.length)
        rows.step()
    assert max(fed) < BLOCK and int(pool.positions.max()) <= BLOCK
    # after a refill the rows hold the newest BLOCK // 4 - 1 tokens, the step then feeds the next
    assert fed[0] == BLOCK // 4 - 1


@pytest.mark.parametrize("position", ["learned", "rope"])
@torch.inference_mode()
def test_rows_sharing_a_position_the_host_knows_step_as_rows_masked_to_their_own(position):
    model = tiny(position)
    decoder, text = Decoder(model), torch.randint(VOCAB, (2, BLOCK))
    logits = []
    for known in (None, BLOCK - 1):
        pool = Pool(model, 2, CPU)
        decoder.prefill(text[:, :-1], pool, 0)
        logits.append(decoder.step(text[:, -1], pool, 0, known))
        assert pool.positions.tolist() == [BLOCK, BLOCK]
    assert torch.allclose(logits[0], logits[1], atol=1e-6)
