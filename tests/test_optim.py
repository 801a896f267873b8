"""Optimizer maths: the LR schedule and Muon's orthogonalisation."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.profiler import profile

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


def adamw_alone(p: torch.Tensor, grad: torch.Tensor, state: dict, lr: float, betas: tuple[float, float],
                eps: float, weight_decay: float) -> None:
    """AdamW written out for one tensor: the definition Muon's other groups follow."""
    if not state:
        state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
    beta1, beta2 = betas
    state["step"] += 1
    state["exp_avg"].lerp_(grad, 1 - beta1)
    state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    denom = (state["exp_avg_sq"] / (1 - beta2 ** state["step"])).sqrt_().add_(eps)
    p.mul_(1 - lr * weight_decay)
    p.addcdiv_(state["exp_avg"], denom, value=-lr / (1 - beta1 ** state["step"]))


def test_muons_adamw_groups_update_every_tensor_as_adamw_does_one_at_a_time():
    torch.manual_seed(0)
    shapes = [(65, 16), (16,), (16,), (8, 16), (1,)]
    weights = [torch.nn.Parameter(torch.randn(shape)) for shape in shapes]
    alone = [w.detach().clone() for w in weights]
    reference = [w.detach().clone().requires_grad_() for w in weights]
    muon = Muon([{"params": weights, "muon": False, "weight_decay": 0.1}], lr=3e-3, betas=(0.9, 0.95))
    adamw = torch.optim.AdamW(reference, lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, foreach=False)
    states: list[dict] = [{} for _ in weights]
    for _ in range(4):
        grads = [torch.randn_like(w) for w in weights]
        for w, r, g in zip(weights, reference, grads, strict=True):
            w.grad, r.grad = g.clone(), g.clone()
        muon.step()
        adamw.step()
        for a, g, state in zip(alone, grads, states, strict=True):
            adamw_alone(a, g, state, 3e-3, (0.9, 0.95), 1e-8, 0.1)
    for w, a, r in zip(weights, alone, reference, strict=True):
        assert torch.equal(w, a)  # bit for bit: the same operations, many tensors per call
        torch.testing.assert_close(w, r, rtol=1e-5, atol=1e-7)  # and torch's AdamW, to rounding
    assert all(muon.state[w]["step"].item() == 4 for w in weights)


def operations_of_a_step(count: int, muon: bool) -> Counter:
    """The tensor operations one Muon.step runs on a group of ``count`` tensors (after the first)."""
    torch.manual_seed(0)
    weights = [torch.nn.Parameter(torch.randn(8, 4)) for _ in range(count)]
    optimizer = Muon([{"params": weights, "muon": muon, "weight_decay": 0.1}], lr=1e-3, betas=(0.9, 0.95))
    for _ in range(2):
        for w in weights:
            w.grad = torch.randn_like(w)
        with profile() as prof:
            optimizer.step()
    (root,) = [e for e in prof.events() if e.cpu_parent is None]
    # Reading the step counts (CPU scalars, no device wait) is the one thing done per tensor.
    return Counter(e.name for e in root.cpu_children if e.name != "aten::item")


@pytest.mark.parametrize("muon", [False, True])
def test_a_group_is_updated_with_as_many_operations_for_twenty_tensors_as_for_two(muon):
    few, many = operations_of_a_step(2, muon), operations_of_a_step(20, muon)
    assert few == many, many
