"""One call for the ``export`` command: check the output and the extra, load the run, write, verify.

Nothing heavy is imported at the top: the command line reads ``FORMATS`` before torch is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from gptiny_cli.errors import GptinyError
from gptiny_cli.export.target import check_file_target, check_target, require, write_dir, write_file

if TYPE_CHECKING:
    from gptiny_cli.export.gguf import GgufExport
    from gptiny_cli.export.hf_dir import HfExport
    from gptiny_cli.export.onnx import OnnxExport

FORMATS = ("hf", "onnx", "gguf")
DTYPES = ("f32", "f16")  # the number formats of a GGUF file's matrices
# The packages each format's extra brings, checked before any work.
EXTRA_MODULES = {"hf": ("tokenizers", "transformers"), "onnx": ("onnx", "onnxscript", "onnxruntime"),
                 "gguf": ("gguf",)}


def default_out(run_dir: Path, fmt: str, dtype: str = "f32") -> Path:
    """A directory per format, but GGUF is one file: ``RUN/export/model-f32.gguf``."""
    if fmt == "gguf":
        return Path(run_dir) / "export" / f"model-{dtype}.gguf"
    return Path(run_dir) / "export" / fmt


def check_format(fmt: str, dtype: str | None = None) -> None:
    if fmt not in FORMATS:
        raise GptinyError(f"--format {fmt!r} is unknown: use hf (transformers), onnx or gguf (llama.cpp)")
    if dtype is not None and fmt != "gguf":
        raise GptinyError(f"--dtype is for --format gguf; --format {fmt} writes float32")
    if dtype is not None and dtype not in DTYPES:
        raise GptinyError(f"--dtype {dtype!r} is unknown: use f32 or f16")


def export_run(run_dir: Path, fmt: str, out: Path, checkpoint: str = "best", force: bool = False,
               verify: bool = True, dtype: str | None = None) -> HfExport | OnnxExport | GgufExport:
    """Export the ``checkpoint`` weights of ``run_dir`` as ``fmt`` into ``out`` (a directory, a file for gguf)."""
    from gptiny_cli.store.runs import load_run

    check_format(fmt, dtype)
    if fmt == "gguf":
        return _export_gguf(run_dir, out, checkpoint, force, verify, dtype or "f32")
    check_target(out, force, run_dir)
    require(fmt, EXTRA_MODULES[fmt])
    loaded = load_run(run_dir, checkpoint)
    if fmt == "hf":
        from gptiny_cli.export.hf_dir import write_hf

        return write_dir(out, force, run_dir, lambda staging: write_hf(loaded, staging, verify))
    from gptiny_cli.export.onnx import write_onnx

    return write_dir(out, force, run_dir, lambda staging: write_onnx(loaded.model, loaded.vocab, staging, verify))


def _export_gguf(run_dir: Path, out: Path, checkpoint: str, force: bool, verify: bool, dtype: str) -> GgufExport:
    from gptiny_cli.export.gguf import check_exportable, check_vocab, is_gguf_export, write_checked
    from gptiny_cli.store.runs import load_run

    require("gguf", EXTRA_MODULES["gguf"])
    check_file_target(Path(out), force, is_gguf_export)
    loaded = load_run(run_dir, checkpoint)
    check_vocab(loaded.vocab)  # first: retraining with GELU would not make a BPE run exportable
    check_exportable(loaded.model)
    return write_file(out, lambda staging: write_checked(loaded, staging, dtype, verify))
