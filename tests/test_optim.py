"""Optimizer maths: the LR schedule and Muon's orthogonalisation."""

from __future__ import annotations

import pytest
import torch

from gptiny_cli.training.optim import Muon, orthogonalize
from gptiny_cli.training.schedule import learning_rate


def test_warmup_rises_linearly_to_the_base_rate():
    lrs = [learning_rate(s, base_lr=1.0, max_iters=100, warmup_iters=10) for s in range(10)]
    assert lrs == pytest.approx([(s + 1) / 10 for s in range(10)])


def test_cosine_decays_to_the_floor_at_the_last_step():
    # A 110-step run trains steps 0 to 109; each step's rate is the schedule's at the step's end.
    assert learning_rate(59, base_lr=1.0, max_iters=110, warmup_iters=10) == pytest.approx(0.55)
    assert learning_rate(109, base_lr=1.0, max_iters=110, warmup_iters=10, min_lr_fraction=0.1) == pytest.approx(0.1)


def test_the_decay_begins_right_after_the_warmup_reaches_the_base_rate():
    assert learning_rate(9, base_lr=1.0, max_iters=110, warmup_iters=10) == pytest.approx(1.0)
    after = learning_rate(10, base_lr=1.0, max_iters=110, warmup_iters=10)
    assert 0.999 < after < 1.0


def test_constant_schedule_stays_put_after_warmup():
    assert learning_rate(500, base_lr=3e-4, max_iters=1000, warmup_iters=10, decay="constant") == 3e-4


@pytest.mark.parametrize("shape", [(16, 64), (64, 16), (32, 32)])
def test_orthogonalize_flattens_the_singular_values(shape):
    torch.manual_seed(0)
    g = torch.randn(shape) * 100
    assert torch.linalg.svdvals(g).max() / torch.linalg.svdvals(g).min() > 2
    singular = torch.linalg.svdvals(orthogonalize(g).float())
    assert singular.min() > 0.6 and singular.max() < 1.25


def test_a_stack_of_matrices_is_orthogonalized_one_by_one():
    torch.manual_seed(0)
    stack = torch.randn(3, 24, 8) * torch.tensor([1.0, 10.0, 100.0])[:, None, None]  # norms far apart
    together = orthogonalize(stack)
    assert together.shape == stack.shape
    for one, alone in zip(together, stack, strict=True):
        assert torch.equal(one, orthogonalize(alone))


def test_muon_moves_each_matrix_as_if_updated_alone():
    """Batching matrices of one shape is only a speed-up: the step equals one matrix at a time."""
    torch.manual_seed(0)
    weights = [torch.nn.Parameter(torch.randn(12, 4)) for _ in range(3)] + [torch.nn.Parameter(torch.randn(4, 4))]
    grads = [torch.randn_like(w) for w in weights]
    together = Muon([{"params": weights, "muon": True, "weight_decay": 0.1}], lr=0.02, betas=(0.9, 0.95))
    alone = [Muon([{"params": [w.detach().clone().requires_grad_()], "muon": True, "weight_decay": 0.1}],
                  lr=0.02, betas=(0.9, 0.95)) for w in weights]
    for _ in range(2):
        for w, g, opt in zip(weights, grads, alone, strict=True):
            w.grad = g.clone()
            opt.param_groups[0]["params"][0].grad = g.clone()
        together.step()
        for opt in alone:
            opt.step()
    for w, opt in zip(weights, alone, strict=True):
        assert torch.equal(w, opt.param_groups[0]["params"][0])
