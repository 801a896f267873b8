"""Helpers for the export tests: small trained runs (shared by a test module), exports, gptiny's greedy text."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from gptiny_cli.cli import app
from gptiny_cli.prepare.corpus import PrepareOptions, prepare_corpus
from tests.conftest import TINY_TEXT
from tests.training import train_tiny

# Spaces, newlines and characters outside ASCII, so that the tokenizers are tested on all three.
EXPORT_TEXT = TINY_TEXT + "ROMEO: ça va, Ångström? «oui» — 😀 ½\n" * 5
PROMPT = "ROMEO: ça"
# A generated text for BPE runs, with CJK and emoji that a vocabulary of 300 holds partly as bytes.
BPE_TEXT = "".join(f"{who}: 今日は{n}回目です。the fox 🦊 jumps over 日本語 😀, ça va?\n"
                   for n in range(60) for who in ("ALICE", "BOB"))
BPE_VOCAB = 300
runner = CliRunner()


def gptiny(*args: str):
    return runner.invoke(app, list(args))


def train_run(where: Path, position: str = "learned", tie: bool = False, n_embd: int = 64,
              block_size: int = 128, activation: str = "relu", text: str = EXPORT_TEXT) -> Path:
    """A run in ``where``/runs trained for a few steps; big enough to fold the head's bias (V ≤ n_embd)."""
    return train_tiny(name=f"{position}-{'tied' if tie else 'untied'}-{n_embd}-{activation}", root=where,
                      text=text, model={"n_embd": n_embd, "block_size": block_size, "n_layer": 2,
                                               "position": position, "tie_weights": tie, "activation": activation},
                      max_iters=30)


def train_bpe_run(where: Path, position: str = "learned", n_embd: int = BPE_VOCAB + 20, tie: bool = False,
                  head_bias: bool = True) -> Path:
    """A byte-level BPE run in ``where``/runs trained for a few steps (n_embd ≥ V - 1 folds the head's bias)."""
    data = where / "data" / "bpe"
    if not data.is_dir():
        (where / "bpe.txt").write_text(BPE_TEXT, encoding="utf-8")
        prepare_corpus(where / "bpe.txt", data, options=PrepareOptions(tokenizer="bpe", vocab_size=BPE_VOCAB))
    name = f"bpe-{position}-{'tied' if tie else 'untied'}-{n_embd}{'' if head_bias else '-nobias'}"
    return train_tiny(data, name=name, root=where,
                      model={"n_embd": n_embd, "block_size": 32, "n_layer": 2, "n_head": 4, "position": position,
                             "tie_weights": tie, "head_bias": head_bias}, max_iters=30)


def export(run_dir: Path, fmt: str, *args: str) -> Path:
    result = gptiny("export", str(run_dir), "--format", fmt, *args)
    assert result.exit_code == 0, result.output
    return run_dir / "export" / fmt


def greedy_text(run_dir: Path, prompt: str, tokens: int) -> str:
    """What ``gptiny sample --temperature 0 --precision float32`` prints: the prompt and the text."""
    result = gptiny("sample", str(run_dir), "--prompt", prompt, "--tokens", str(tokens), "--temperature", "0",
                    "--precision", "float32", "--no-stream")
    assert result.exit_code == 0, result.output
    return result.stdout.removesuffix("\n")
