"""Start-up: help and the commands that only read files never import torch (it takes about a second)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import cli_env

# Runs each command line in one fresh interpreter and prints the ones after which torch was loaded.
PROBE = """
import sys
import typer
from gptiny_cli.cli import app

command = typer.main.get_command(app)
for args in {commands!r}:
    try:
        command.main(args, prog_name="gptiny", standalone_mode=False)
    except SystemExit:
        pass
    if "torch" in sys.modules:
        print("torch after", args)
        break
"""

HELP = [["--help"]] + [[name, "--help"] for name in ("prepare", "train", "sample", "inspect", "runs", "plot", "eval",
                                                   "export")]


def test_help_of_every_command_listing_runs_and_plotting_do_not_import_torch():
    run_dir = Path("runs") / "20240101-000000-a"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"status": "completed", "iters": 10}))
    rows = [{"iter": 0, "train_loss": 4.0, "val_loss": 4.1}, {"iter": 5, "loss": 3.0},
            {"iter": 10, "train_loss": 2.0, "val_loss": 2.2}]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    commands = HELP + [["runs"], ["runs", "--json"], ["plot", "latest", "--out", "loss.png"]]
    probe = subprocess.run([sys.executable, "-c", PROBE.format(commands=commands)], capture_output=True,
                           text=True, env=cli_env(), timeout=60)
    assert probe.returncode == 0, probe.stderr
    assert "torch after" not in probe.stdout
    assert "gptiny runs" in probe.stdout and Path("loss.png").is_file()  # the probe did run the commands


def test_the_probe_sees_torch_when_a_command_loads_it():
    probe = subprocess.run([sys.executable, "-c", PROBE.format(commands=[["inspect", "missing.toml"]])],
                           capture_output=True, text=True, env=cli_env(), timeout=60)
    assert "torch after ['inspect', 'missing.toml']" in probe.stdout
