"""Optimizers: AdamW with decay on matrices only, and Muon for the hidden matrices.

Muon replaces each hidden weight matrix's momentum by the nearest semi-orthogonal matrix
(computed with a few Newton–Schulz iterations), so every direction of the update moves
at the same rate. Embeddings, the head and all gains and biases keep AdamW.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from gptiny_cli.config import TrainConfig
from gptiny_cli.hardware.device import matmul_dtype


def orthogonalize(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Approximately U V^T for g = U S V^T, by a quintic Newton–Schulz iteration in bf16 (fp32 where
    the device has no bf16: MPS before macOS 14).

    ``g`` is one (m, n) matrix or a stack (N, m, n) of them, each orthogonalized on its own: a
    stack turns many small matmuls into a few batched ones. The coefficients make the iteration
    push every singular value quickly into roughly [0.7, 1.2]; exact orthogonality is not needed
    for a good update.
    """
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.to(matmul_dtype(g.device))
    tall = x.size(-2) > x.size(-1)
    if tall:
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)  # singular values now at most 1
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.mT if tall else x).to(g.dtype)


class Muon(torch.optim.Optimizer):
    """Muon for groups marked ``muon=True``; plain AdamW for every other group.

    One optimizer object for both keeps the schedule, checkpoints and resume code unaware of
    which parameter is updated how.
    """

    def __init__(self, groups: list[dict], lr: float, betas: tuple[float, float], momentum: float = 0.95,
                 eps: float = 1e-8) -> None:
        super().__init__(groups, dict(lr=lr, betas=betas, momentum=momentum, eps=eps, weight_decay=0.0,
                                      muon=False))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - torch's signature
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if not group["muon"]:
                self._adamw_update(params, group)
                continue
            by_shape: dict[torch.Size, list[torch.Tensor]] = {}
            for p in params:
                by_shape.setdefault(p.shape, []).append(p)
            for same in by_shape.values():  # one batched orthogonalization per shape: every layer's qkv at once
                self._muon_update(same, group)

    # Each group is updated with torch's multi-tensor (_foreach_) operations: on a GPU a few kernel
    # launches for all of its tensors instead of a few per tensor. On the CPU they run the same
    # operations tensor by tensor, so the result is the same, bit for bit.

    def _muon_update(self, params: list[torch.Tensor], group: dict) -> None:
        """Update matrices of one shape: momentum, then its orthogonalized Nesterov step."""
        for p in params:
            if not self.state[p]:
                self.state[p]["momentum_buffer"] = torch.zeros_like(p)
        grads = [p.grad for p in params]
        buffers = [self.state[p]["momentum_buffer"] for p in params]
        torch._foreach_mul_(buffers, group["momentum"])
        torch._foreach_add_(buffers, grads)
        directions = torch._foreach_add(grads, buffers, alpha=group["momentum"])  # Nesterov
        updates = orthogonalize(torch.stack(directions))  # (N, m, n)
        # Scale so that tall and wide matrices get updates of similar RMS size.
        scale = max(1.0, params[0].size(0) / params[0].size(1)) ** 0.5
        torch._foreach_mul_(params, 1 - group["lr"] * group["weight_decay"])
        torch._foreach_add_(params, updates.unbind(0), alpha=-group["lr"] * scale)

    def _adamw_update(self, params: list[torch.Tensor], group: dict) -> None:
        for p in params:
            if not self.state[p]:
                self.state[p].update(step=torch.zeros((), dtype=torch.float32), exp_avg=torch.zeros_like(p),
                                     exp_avg_sq=torch.zeros_like(p))
        states = [self.state[p] for p in params]
        grads = [p.grad for p in params]
        exp_avgs, exp_avg_sqs = [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]
        beta1, beta2 = group["betas"]
        steps = [s["step"] for s in states]
        torch._foreach_add_(steps, 1)
        counts = [step.item() for step in steps]  # on the CPU: no wait for the device
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
        denoms = torch._foreach_div(exp_avg_sqs, [1 - beta2**n for n in counts])
        torch._foreach_sqrt_(denoms)
        torch._foreach_add_(denoms, group["eps"])
        torch._foreach_mul_(params, 1 - group["lr"] * group["weight_decay"])
        torch._foreach_addcdiv_(params, exp_avgs, denoms, [-group["lr"] / (1 - beta1**n) for n in counts])


def make_optimizer(model: nn.Module, t: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW (decay on matrices only) or Muon+AdamW, as ``train.optimizer`` says.

    Each group carries ``lr_scale``: the schedule sets lr = schedule(step) · lr_scale.
    """
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    matrices = [p for p in params.values() if p.dim() >= 2]
    others = [p for p in params.values() if p.dim() < 2]
    if t.optimizer == "adamw":
        groups = [{"params": matrices, "weight_decay": t.weight_decay, "lr_scale": 1.0},
                  {"params": others, "weight_decay": 0.0, "lr_scale": 1.0}]
        # The fused kernel (one launch for all parameters): torch 2.13 has it for CUDA and MPS.
        return torch.optim.AdamW(groups, lr=t.learning_rate, betas=(t.beta1, t.beta2),
                                 fused=device.type in ("cuda", "mps"))
    hidden = [p for name, p in params.items() if p.dim() == 2 and name.startswith("blocks.")]
    hidden_ids = {id(p) for p in hidden}
    tables = [p for p in matrices if id(p) not in hidden_ids]  # embeddings and head
    groups = [
        {"params": hidden, "muon": True, "weight_decay": t.weight_decay, "lr_scale": t.muon_lr / t.learning_rate},
        {"params": tables, "muon": False, "weight_decay": t.weight_decay, "lr_scale": 1.0},
        {"params": others, "muon": False, "weight_decay": 0.0, "lr_scale": 1.0},
    ]
    return Muon(groups, lr=t.learning_rate, betas=(t.beta1, t.beta2))
