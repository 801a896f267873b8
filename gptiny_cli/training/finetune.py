"""Fine-tuning: a new run whose weights start from another run's checkpoint (``train --init-from RUN``).

The new run takes the parent's model keys (its architecture), so a config or ``--set`` value
that contradicts one of them is an error naming the key; only ``model.dropout``, which changes
no weight, may differ. The optimizer, schedule and step count start fresh. The new data's
vocabulary must be the parent's or extend it (``gptiny prepare ... --vocab RUN --extend``
appends characters and keeps every old id): the embedding and head then grow by the new rows,
which keep the initialisation of a freshly built model, while every old row is copied exactly.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from gptiny_cli.config import RunConfig, parse_override, read_toml
from gptiny_cli.data import Tokenizer, load_corpus
from gptiny_cli.errors import GptinyError
from gptiny_cli.store.runs import load_run, resolve_run

FREE_KEYS = {"dropout"}  # model keys a fine-tuned run may set differently from its parent


@dataclass(frozen=True)
class Parent:
    """The run a fine-tuned run starts from: its config, vocabulary and the weights taken."""

    run_dir: Path
    checkpoint: str  # "best" or "last"
    weights: Path
    sha256: str
    config: RunConfig
    vocab: Tokenizer
    state: dict[str, torch.Tensor]

    def record(self) -> dict[str, Any]:
        """What ``run.json`` keeps as ``init_from``."""
        return {"run": str(self.run_dir), "checkpoint": self.checkpoint, "weights": self.weights.name,
                "sha256": self.sha256}


def load_parent(spec: str, checkpoint: str, runs_dir: Path) -> Parent:
    """The parent run's weights, checked against its manifest, config and vocabulary by ``load_run``."""
    run_dir = resolve_run(spec, runs_dir)
    loaded = load_run(run_dir, checkpoint)
    sha256 = hashlib.sha256(loaded.weights.read_bytes()).hexdigest()
    state = {name: tensor.detach().clone() for name, tensor in loaded.model.state_dict().items()}
    return Parent(run_dir, checkpoint, loaded.weights, sha256, loaded.config, loaded.vocab, state)


def explicit_model_keys(config_path: Path | None, overrides: list[str]) -> set[str]:
    """The ``model.*`` keys the new run's config file or ``--set`` gives a value (not left to defaults)."""
    keys = set(read_toml(config_path).get("model", {})) if config_path else set()
    for text in overrides:
        section, key, _ = parse_override(text)
        if section == "model":
            keys.add(key)
    return keys


def reconcile(config: RunConfig, parent: Parent, explicit: set[str]) -> RunConfig:
    """``config`` with the parent's model keys; an explicit value that contradicts one is an error."""
    ours, theirs = config.model, parent.config.model
    for key in sorted(explicit - FREE_KEYS):
        if getattr(ours, key) != getattr(theirs, key):
            raise GptinyError(
                f"model.{key} = {getattr(ours, key)!r} contradicts {parent.run_dir}, trained with model.{key} = "
                f"{getattr(theirs, key)!r}; a fine-tuned run keeps its parent's model keys: leave model.{key} "
                f"out of the config and --set, or give {getattr(theirs, key)!r} (only model.dropout may differ)")
    dropout = ours.dropout if "dropout" in explicit else theirs.dropout
    return dataclasses.replace(config, model=dataclasses.replace(theirs, dropout=dropout))


def check_vocab(parent: Parent, vocab: Tokenizer, data_path: str) -> None:
    """The new data must use the parent's vocabulary, or one that appends characters to it (a BPE
    parent's tokenizer exactly: its ids cannot grow)."""
    if parent.vocab.kind == "bpe" or vocab.kind == "bpe":
        if vocab != parent.vocab:
            raise GptinyError(
                f"the data at {data_path} is not encoded with {parent.run_dir}'s tokenizer; prepare the text "
                f"with it: gptiny prepare INPUT... --vocab {parent.run_dir} --out DIR")
        return
    old = parent.vocab.chars
    if vocab.chars[: len(old)] != old:
        raise GptinyError(
            f"the data at {data_path} has a vocabulary that is neither {parent.run_dir}'s nor an extension of "
            f"it; prepare the text with the run's vocabulary: gptiny prepare INPUT... --vocab {parent.run_dir} "
            "--extend --out DIR")


def plan(config: RunConfig, config_path: Path | None, overrides: list[str], spec: str, checkpoint: str,
         runs_dir: Path) -> tuple[RunConfig, Parent]:
    """Every check of a fine-tuning start, before any run directory exists: the config and the parent."""
    parent = load_parent(spec, checkpoint, runs_dir)
    config = reconcile(config, parent, explicit_model_keys(config_path, overrides))
    check_vocab(parent, load_corpus(Path(config.data.path)).vocab, config.data.path)
    return config, parent


def grow_into(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy ``state`` into ``model``; a tensor the model has larger gets the old one in its leading rows."""
    with torch.no_grad():
        for name, target in model.state_dict().items():
            old = state.get(name)
            if old is None or old.dim() != target.dim() or any(o > t for o, t in zip(old.shape, target.shape,
                                                                                     strict=True)):
                raise GptinyError(f"cannot start from the parent's weights: {name} does not fit "
                                  f"({None if old is None else list(old.shape)} into {list(target.shape)})")
            target[tuple(slice(0, n) for n in old.shape)].copy_(old)
