"""Shell completion (Typer's, through the installed `gptiny` script): commands, options and run directories."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import cli_env

GPTINY = Path(sys.executable).parent / "gptiny"  # completion keys on the program name


def complete(*words: str) -> list[str]:
    """What bash completion offers after typing ``words`` (the last one is being completed)."""
    env = {**cli_env(), "_GPTINY_COMPLETE": "complete_bash", "COMP_WORDS": " ".join(("gptiny", *words)),
           "COMP_CWORD": str(len(words))}
    result = subprocess.run([str(GPTINY)], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_commands_and_options_complete():
    assert complete("pl") == ["plot"]
    assert "--text" in complete("eval", "--")


def test_a_run_argument_completes_to_latest_and_the_run_directories():
    for name in ("20240101-000000-a", "20240102-000000-b"):
        (Path("runs") / name).mkdir(parents=True)
        started = f"{name[:4]}-{name[4:6]}-{name[6:8]}T00:00:00+00:00"
        (Path("runs") / name / "run.json").write_text(json.dumps({"started_at": started}))
    assert complete("eval", "") == ["latest", "runs/20240102-000000-b", "runs/20240101-000000-a"]
    assert complete("plot", "runs/20240101-000000-a", "runs/20240102") == ["runs/20240102-000000-b"]
