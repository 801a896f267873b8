"""One call for the ``export`` command: check the output and the extra, load the run, write, verify.

Nothing heavy is imported at the top: the command line reads ``FORMATS`` before torch is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from gptiny_cli.errors import GptinyError
from gptiny_cli.export.target import check_target, require, write_dir

if TYPE_CHECKING:
    from gptiny_cli.export.hf_dir import HfExport
    from gptiny_cli.export.onnx import OnnxExport

FORMATS = ("hf", "onnx")
# The packages each format's extra brings, checked before any work.
EXTRA_MODULES = {"hf": ("tokenizers", "transformers"), "onnx": ("onnx", "onnxscript", "onnxruntime")}


def default_out(run_dir: Path, fmt: str) -> Path:
    return Path(run_dir) / "export" / fmt


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise GptinyError(f"--format {fmt!r} is unknown: use hf (transformers) or onnx")


def export_run(run_dir: Path, fmt: str, out: Path, checkpoint: str = "best", force: bool = False,
               verify: bool = True) -> HfExport | OnnxExport:
    """Export the ``checkpoint`` weights of ``run_dir`` as ``fmt`` into the directory ``out``."""
    from gptiny_cli.store.runs import load_run

    check_format(fmt)
    check_target(out, force, run_dir)
    require(fmt, EXTRA_MODULES[fmt])
    loaded = load_run(run_dir, checkpoint)
    if fmt == "hf":
        from gptiny_cli.export.hf_dir import write_hf

        return write_dir(out, force, run_dir, lambda staging: write_hf(loaded, staging, verify))
    from gptiny_cli.export.onnx import write_onnx

    return write_dir(out, force, run_dir, lambda staging: write_onnx(loaded.model, loaded.vocab, staging, verify))
