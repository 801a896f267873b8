"""The ``gptiny`` command line: parse, call the library, render. The only package that prints or exits.

This module builds the Typer app and registers one command module per command (or group);
the command modules share only ``common.py`` and never import each other or this module.
They may import anything of the library, but inside the command functions where torch
would come with it, so that ``--help`` answers at once.
"""

from __future__ import annotations

import gc

import typer

from gptiny_cli.cli import attention, compare, doctor, export, inspect, prepare, runs, sample, serve, sweep, train
from gptiny_cli.cli import tokenize as tokenize_command

app = typer.Typer(
    name="gptiny",
    help="Train a character-level GPT from scratch and sample from it.\n\n"
    "Example: gptiny prepare input.txt && gptiny train configs/shakespeare-cpu.toml "
    "&& gptiny sample latest",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)
app.command()(prepare.prepare)
app.command()(train.train)
app.command()(inspect.inspect)
app.command("runs")(runs.list_runs)
app.command()(runs.plot)
app.command("eval")(runs.evaluate)
app.command()(sample.sample)
app.command()(export.export)
app.command()(doctor.doctor)
app.command()(attention.attention)
app.command()(serve.serve)
app.command()(sweep.sweep)
app.command()(compare.compare)
app.command()(tokenize_command.tokenize)


def main() -> None:
    try:
        app()
    finally:
        # With torch imported, the interpreter's last garbage collection at exit walks its
        # hundreds of thousands of objects: 0.35 s of a 2 s `gptiny sample` (benchmarks/README.md).
        # Frozen, they are left to the operating system, which reclaims the memory anyway.
        gc.freeze()
