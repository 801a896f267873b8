"""The one way tests train a tiny run: through the command line, in about a second, for the tests
of what reads runs afterwards (sample, eval, plot, export, serve, ...)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from gptiny_cli.cli import app
from gptiny_cli.prepare.corpus import PrepareOptions, prepare_corpus
from tests.conftest import TINY_TEXT, tiny_raw, write_config

# A text for BPE runs: ASCII words with CJK and emoji, whose merges make tokens that end inside a
# character (a 3-byte CJK character, a 4-byte emoji) as well as whole words.
UNICODE_TEXT = "".join(
    f"{who}: 你好，世界 {n} 🙂 the quick brown fox 🦊 跳过 the lazy dog.\n"
    for n in range(40)
    for who in ("ALICE", "BOB")
)


def train_tiny(data_dir: Path | None = None, name: str = "tiny", *, root: Path = Path("."), text: str = TINY_TEXT,
               model: dict | None = None, log: dict | None = None, **train: object) -> Path:
    """Train the tiny model of ``tiny_raw`` into ``root``/runs and return its new run directory.

    Without ``data_dir`` it trains on ``text``, prepared into ``root``/data/tiny the first time;
    ``model``, ``log`` and ``train`` change the config's sections.
    """
    if data_dir is None:
        data_dir = root / "data" / "tiny"
        if not data_dir.is_dir():
            corpus = root / "tiny.txt"
            corpus.write_text(text, encoding="utf-8")
            prepare_corpus(corpus, data_dir, val_fraction=0.1)
    raw = tiny_raw(data_dir, **train)
    raw["model"].update(model or {})
    if log is not None:
        raw["log"] = log
    config = write_config(root / f"{name}.toml", raw)
    runs = root / "runs"
    before = set(runs.iterdir()) if runs.is_dir() else set()
    result = CliRunner().invoke(app, ["train", str(config), "--device", "cpu", "--name", name,
                                      "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    (run_dir,) = set(runs.iterdir()) - before
    return run_dir


def train_tiny_bpe(name: str = "bpe", *, root: Path = Path("."), vocab_size: int = 300, **options) -> Path:
    """``train_tiny`` on ``UNICODE_TEXT`` prepared with a byte-level BPE of ``vocab_size`` tokens."""
    data_dir = root / "data" / "bpe"
    if not data_dir.is_dir():
        corpus = root / "unicode.txt"
        corpus.write_text(UNICODE_TEXT, encoding="utf-8")
        prepare_corpus(corpus, data_dir, options=PrepareOptions(tokenizer="bpe", vocab_size=vocab_size))
    return train_tiny(data_dir, name, root=root, **options)
