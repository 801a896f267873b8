"""Where a model's parameters are: per-module counts and shapes, for ``gptiny inspect``."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn


@dataclass(frozen=True)
class ParamCounts:
    total: int
    embedding: int

    @property
    def non_embedding(self) -> int:
        return self.total - self.embedding


@dataclass(frozen=True)
class ModuleRow:
    name: str  # dotted path in the module tree, e.g. "blocks.0.attn"
    kind: str  # the module's class name
    depth: int
    params: int  # parameters of this module and everything inside it
    shapes: dict[str, list[int]]  # its own parameters, by local name


def _unique_params(module: nn.Module) -> list[nn.Parameter]:
    # named_parameters() already yields a tied tensor once; counting through it keeps totals honest.
    return [p for _, p in module.named_parameters()]


def count_params(model: nn.Module) -> ParamCounts:
    total = sum(p.numel() for p in _unique_params(model))
    embedding = sum(
        m.weight.numel() for m in model.modules() if isinstance(m, nn.Embedding)
    )
    return ParamCounts(total, embedding)


def module_rows(model: nn.Module) -> list[ModuleRow]:
    """Every module of the tree (the root excluded) with its parameter count and shapes."""
    rows = []
    seen: set[int] = set()
    for name, module in model.named_modules():
        count = sum(p.numel() for p in module.parameters())
        if not name or count == 0:  # the root is the total; dropouts hold nothing
            continue
        shapes = {}
        for local, param in module.named_parameters(recurse=False):
            if id(param) not in seen:  # a tied head shows as sharing the embedding's tensor
                shapes[local] = list(param.shape)
        seen.update(id(p) for p in module.parameters(recurse=False))
        rows.append(ModuleRow(name, type(module).__name__, name.count("."), count, shapes))
    return rows
