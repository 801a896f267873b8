"""Training a tiny run through the command line, for tests of what reads runs afterwards."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from gptiny_cli.cli import app
from tests.conftest import tiny_raw, write_config


def train_tiny(data_dir: Path, name: str = "tiny", log: dict | None = None, **train: object) -> Path:
    """Train the tiny model of ``tiny_raw`` (in about a second) and return its new run directory."""
    raw = tiny_raw(data_dir, **train)
    if log is not None:
        raw["log"] = log
    config = write_config(Path(f"{name}.toml"), raw)
    runs = Path("runs")
    before = set(runs.iterdir()) if runs.is_dir() else set()
    result = CliRunner().invoke(app, ["train", str(config), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    (run_dir,) = set(runs.iterdir()) - before
    return run_dir
