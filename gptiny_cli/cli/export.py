"""The ``export`` command: a run's model as a Hugging Face transformers directory, an ONNX graph or a GGUF file.

Registered on the app by ``cli/__init__.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from gptiny_cli.cli.common import RUNS_DIR, Which, err, out, user_errors

if TYPE_CHECKING:
    from gptiny_cli.export.gguf import GgufExport
    from gptiny_cli.export.hf_dir import HfExport
    from gptiny_cli.export.onnx import OnnxExport


def export(
    run: Annotated[str, typer.Argument(help="A run directory, or `latest`.")] = "latest",
    fmt: Annotated[str, typer.Option("--format", help="hf: transformers (GPT-2 or GPT-NeoX); "
                                                       "onnx: one graph with the KV cache explicit; "
                                                       "gguf: one file for llama.cpp (GELU character runs).")] = ...,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Where to write \\[default: RUN/export/FORMAT, "
                                                               "or RUN/export/model-DTYPE.gguf].")] = None,
    dtype: Annotated[str | None, typer.Option("--dtype", help="gguf only: f32 or f16 matrices \\[default: f32].")
                     ] = None,
    checkpoint: Annotated[Which, typer.Option(help="Weights with the best val loss, or the last ones.")] = Which.best,
    force: Annotated[bool, typer.Option(help="Replace an earlier export in --out (never other files).")] = False,
    verify: Annotated[bool, typer.Option(help="Load the export with its library (llama-cpp-python for gguf, "
                                              "where installed) and compare logits with gptiny's; keep "
                                              "nothing that disagrees.")] = True,
    runs_dir: RUNS_DIR = Path("runs"),
) -> None:
    """Export a trained run for other libraries to load, checked by those libraries.

    Examples: gptiny export latest --format hf; gptiny export runs/<id> --format onnx --out model-onnx;
    gptiny export latest --format hf --checkpoint last --force; gptiny export latest --format gguf --dtype f16
    """
    from gptiny_cli.export.exporting import check_format, default_out, export_run
    from gptiny_cli.store.runs import resolve_run

    with user_errors():
        check_format(fmt, dtype)
        run_dir = resolve_run(run, runs_dir)
        dest = out_dir or default_out(run_dir, fmt, dtype or "f32")
        err.print(f"exporting {run_dir} ({checkpoint.value} weights) as {fmt}", highlight=False)
        result = export_run(run_dir, fmt, dest, checkpoint.value, force, verify, dtype)
    if fmt == "gguf":
        out.print(f"wrote {dest}: {_gguf_summary(result, verify)}", highlight=False)
    else:
        out.print(f"wrote {dest}/: {_summary(fmt, result)}", highlight=False)


def _gguf_summary(result: GgufExport, verify: bool) -> str:
    shift = f", every logit lowered by {result.shift:.4g}" if result.shift else ""
    made = f"{result.architecture}, head bias folded into the final LayerNorm (error {result.residual:.1e}{shift})"
    check = result.check
    if check is None:
        why = "--no-verify" if not verify else "llama-cpp-python is not installed: pip install 'gptiny[gguf-check]'"
        return f"{made}, not checked by llama.cpp ({why})"
    greedy = (f"the same {check.greedy_chars} greedy characters" if check.agreed == check.greedy_chars else
              f"the same greedy text for {check.agreed} of {check.greedy_chars} characters, then a near tie")
    return f"{made}; through llama.cpp: logits within {check.difference:.1e} of gptiny's, {greedy}"


def _summary(fmt: str, result: HfExport | OnnxExport) -> str:
    checked = ("not verified (--no-verify)" if result.difference is None
               else f"logits within {result.difference:.1e} of gptiny's")
    if fmt == "onnx":
        return f"model.onnx, {checked} through onnxruntime"
    shift = f", every logit lowered by {result.shift:.4g}" if result.shift else ""
    return (f"{result.architecture}, head bias folded into the final LayerNorm (error {result.residual:.1e}"
            f"{shift}), {checked} through transformers")
