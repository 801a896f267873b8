"""Optimizer maths: the LR schedule and Muon's orthogonalisation."""

from __future__ import annotations

import pytest
import torch

from gptiny_cli.training.optim import orthogonalize
from gptiny_cli.training.schedule import learning_rate


def test_warmup_rises_linearly_to_the_base_rate():
    lrs = [learning_rate(s, base_lr=1.0, max_iters=100, warmup_iters=10) for s in range(10)]
    assert lrs == pytest.approx([(s + 1) / 10 for s in range(10)])


def test_cosine_decays_to_the_floor_at_the_last_step():
    assert learning_rate(10, base_lr=1.0, max_iters=110, warmup_iters=10) == pytest.approx(1.0)
    assert learning_rate(60, base_lr=1.0, max_iters=110, warmup_iters=10) == pytest.approx(0.55)
    assert learning_rate(110, base_lr=1.0, max_iters=110, warmup_iters=10, min_lr_fraction=0.1) == pytest.approx(0.1)


def test_constant_schedule_stays_put_after_warmup():
    assert learning_rate(500, base_lr=3e-4, max_iters=1000, warmup_iters=10, decay="constant") == 3e-4


@pytest.mark.parametrize("shape", [(16, 64), (64, 16), (32, 32)])
def test_orthogonalize_flattens_the_singular_values(shape):
    torch.manual_seed(0)
    g = torch.randn(shape) * 100
    assert torch.linalg.svdvals(g).max() / torch.linalg.svdvals(g).min() > 2
    singular = torch.linalg.svdvals(orthogonalize(g).float())
    assert singular.min() > 0.6 and singular.max() < 1.25
