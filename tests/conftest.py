"""Shared fixtures: every test works in its own temporary directory with a tiny corpus and model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from gptiny_cli.config import RunConfig, config_from_dict
from gptiny_cli.prepare.corpus import prepare_corpus

# Two processes on two cores each would slow each other down; tests are tiny anyway.
torch.set_num_threads(1)

TINY_TEXT = "".join(
    f"{who}: the quick brown fox jumps over the lazy dog, {n} times.\n"
    for n in range(40)
    for who in ("ALICE", "BOB")
)


@pytest.fixture(autouse=True)
def in_tmp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run each test from an empty temporary directory, so every relative write lands there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("GPTINY_FAULT_NAN_AT", raising=False)
    monkeypatch.delenv("GPTINY_FAULT_KILL", raising=False)
    return tmp_path


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.txt"
    path.write_text(TINY_TEXT, encoding="utf-8")
    return path


@pytest.fixture
def data_dir(corpus_file: Path, tmp_path: Path) -> Path:
    out = tmp_path / "data" / "tiny"
    prepare_corpus(corpus_file, out, val_fraction=0.1)
    return out


def tiny_raw(data_dir: Path, **train: object) -> dict:
    """A config dict for a model that trains in well under a second."""
    return {
        "data": {"path": str(data_dir)},
        "model": {"n_embd": 16, "block_size": 8, "n_layer": 1, "n_head": 2, "dropout": 0.0},
        "train": {"batch_size": 4, "learning_rate": 1e-2, "max_iters": 20, "eval_interval": 10,
                  "eval_iters": 2, "log_interval": 5, "warmup_iters": 2, "dtype": "float32",
                  "compile": False, **train},
    }


@pytest.fixture
def tiny_config(data_dir: Path) -> RunConfig:
    return config_from_dict(tiny_raw(data_dir))


def write_config(path: Path, raw: dict) -> Path:
    """Write a nested dict of scalars as TOML."""
    lines = []
    for section, values in raw.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            elif isinstance(value, str):
                lines.append(f'{key} = "{value}"')
            else:
                lines.append(f"{key} = {value!r}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def cli_env() -> dict[str, str]:
    """Environment for a gptiny subprocess: one math thread, no inherited fault injection."""
    env = {k: v for k, v in os.environ.items() if k not in ("GPTINY_FAULT_NAN_AT", "GPTINY_FAULT_KILL")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env
