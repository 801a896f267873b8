"""``gptiny inspect``: a model's parameters from a run, or from a config before any training."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from gptiny_cli.config import load_config
from gptiny_cli.errors import GptinyError
from gptiny_cli.model import build_model
from gptiny_cli.runs import load_run, resolve_run
from gptiny_cli.summary import count_params, module_rows


def _vocab_size_of(data_path: str) -> int:
    meta = Path(data_path) / "meta.json"
    try:
        return int(json.loads(meta.read_text(encoding="utf-8"))["vocab_size"])
    except FileNotFoundError:
        raise GptinyError(
            f"the vocabulary size comes from the prepared data, and {meta} is missing; "
            "run `gptiny prepare INPUT` first or set data.path"
        ) from None
    except (ValueError, KeyError, TypeError):
        raise GptinyError(f"{meta} is damaged; run `gptiny prepare` again") from None


def describe(target: str, runs_dir: Path) -> dict[str, Any]:
    """Per-module parameter counts and shapes, with totals, as plain data."""
    if target.endswith(".toml"):
        config = load_config(Path(target))
        # The meta device builds the module tree without allocating any weights.
        with torch.device("meta"):
            model = build_model(config.model, _vocab_size_of(config.data.path))
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
    }
