"""The ``export`` command: a run's model as a Hugging Face transformers directory or an ONNX graph.

Registered on the app by ``cli/__init__.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gptiny_cli.cli.common import RUNS_DIR, Which, err, out, user_errors
from gptiny_cli.errors import GptinyError

FORMATS = ("hf", "onnx")


def export(
    run: Annotated[str, typer.Argument(help="A run directory, or `latest`.")] = "latest",
    fmt: Annotated[str, typer.Option("--format", help="hf: transformers (GPT-2 or GPT-NeoX); "
                                                       "onnx: one graph with the KV cache explicit.")] = ...,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Where to write \\[default: RUN/export/FORMAT].")
                       ] = None,
    checkpoint: Annotated[Which, typer.Option(help="Weights with the best val loss, or the last ones.")] = Which.best,
    force: Annotated[bool, typer.Option(help="Replace an existing non-empty --out directory.")] = False,
    verify: Annotated[bool, typer.Option(help="Load the export with its library and compare logits with "
                                              "gptiny's; keep nothing that disagrees.")] = True,
    runs_dir: RUNS_DIR = Path("runs"),
) -> None:
    """Export a trained run for other libraries to load, checked by those libraries.

    Examples: gptiny export latest --format hf; gptiny export runs/<id> --format onnx --out model-onnx;
    gptiny export latest --format hf --checkpoint last --force
    """
    with user_errors():
        if fmt not in FORMATS:
            raise GptinyError(f"--format {fmt!r} is unknown: use hf (transformers) or onnx")
        _export(run, fmt, out_dir, checkpoint.value, force, verify, runs_dir)


def _export(run: str, fmt: str, out_dir: Path | None, checkpoint: str, force: bool, verify: bool,
            runs_dir: Path) -> None:
    from gptiny_cli.export import target
    from gptiny_cli.store.runs import resolve_run

    run_dir = resolve_run(run, runs_dir)
    dest = out_dir or run_dir / "export" / fmt
    target.check_target(dest, force)
    if fmt == "hf":
        from gptiny_cli.export import hf

        target.require("hf", hf.MODULES)
    else:
        from gptiny_cli.export import onnx

        target.require("onnx", onnx.MODULES)
    from gptiny_cli.store.runs import load_run

    loaded = load_run(run_dir, checkpoint)
    err.print(f"exporting {loaded.weights} as {fmt}", highlight=False)
    results = []
    target.write_dir(dest, force, lambda staging: results.append(_write(fmt, loaded, staging, verify)))
    out.print(f"wrote {dest}/: {_summary(fmt, results[0])}", highlight=False)


def _write(fmt: str, loaded, staging: Path, verify: bool):
    if fmt == "hf":
        from gptiny_cli.export.hf_dir import write_hf

        return write_hf(loaded, staging, verify)
    from gptiny_cli.export.onnx import write_onnx

    return write_onnx(loaded.model, loaded.vocab, staging, verify)


def _summary(fmt: str, result) -> str:
    checked = ("not verified (--no-verify)" if result.difference is None
               else f"logits within {result.difference:.1e} of gptiny's")
    if fmt == "onnx":
        return f"model.onnx, {checked} through onnxruntime"
    shift = f", every logit lowered by {result.shift:.4g}" if result.shift else ""
    return (f"{result.architecture}, head bias folded into the final LayerNorm (error {result.residual:.1e}"
            f"{shift}), {checked} through transformers")
