"""``gptiny inspect``: a model's parameters from a run, or from a config before any training."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from gptiny_cli.config import load_config
from gptiny_cli.errors import GptinyError
from gptiny_cli.model import build_model, count_params
from gptiny_cli.prepare.sources import TINY_SHAKESPEARE_VOCAB_SIZE
from gptiny_cli.store.runs import load_run, resolve_run


@dataclass(frozen=True)
class ModuleRow:
    name: str  # dotted path in the module tree, e.g. "blocks.0.attn"
    kind: str  # the module's class name
    depth: int
    params: int  # parameters of this module and everything inside it
    shapes: dict[str, list[int]]  # its own parameters, by local name


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


def _vocab_size_of(data_path: str, fallback: int) -> tuple[int, str | None]:
    """The prepared data's vocabulary size, or ``fallback`` and a note saying so when there is none."""
    meta = Path(data_path) / "meta.json"
    try:
        return int(json.loads(meta.read_text(encoding="utf-8"))["vocab_size"]), None
    except FileNotFoundError:
        return fallback, (f"no prepared data at {data_path}; counting with a vocabulary of {fallback} "
                          "(--vocab-size)")
    except (ValueError, KeyError, TypeError):
        raise GptinyError(f"{meta} is damaged; run `gptiny prepare` again") from None


def describe(target: str, runs_dir: Path, vocab_size: int = TINY_SHAKESPEARE_VOCAB_SIZE) -> dict[str, Any]:
    """Per-module parameter counts and shapes, with totals, as plain data.

    A config's vocabulary size comes from its prepared data, else from ``vocab_size``; then the
    result carries a ``note`` saying so.
    """
    if vocab_size < 1:
        raise GptinyError(f"--vocab-size {vocab_size} is invalid: must be at least 1")
    note = None
    if target.endswith(".toml"):
        config = load_config(Path(target))
        size, note = _vocab_size_of(config.data.path, vocab_size)
        # The meta device builds the module tree without allocating any weights.
        with torch.device("meta"):
            model = build_model(config.model, size)
        source = target
    else:
        loaded = load_run(resolve_run(target, runs_dir))
        model, source = loaded.model, str(loaded.weights)
    counts = count_params(model)
    return {
        "source": source,
        "total_params": counts.total,
        "embedding_params": counts.embedding,
        "non_embedding_params": counts.non_embedding,
        "modules": [asdict(row) for row in module_rows(model)],
    } | ({"note": note} if note else {})
