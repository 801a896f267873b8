"""Where an export goes: a fresh directory, filled while hidden beside it and renamed into place,
or a single file (GGUF), written beside itself under a hidden name and renamed the same way.

An earlier export there is kept unless ``force``; with it, the old export is swapped out only once
the new one is complete, so a failure at any point leaves the old one or nothing. A non-empty
directory that gptiny did not write is never replaced: ``--out ~ --force`` must not empty a home,
nor a model directory of someone else's that happens to hold the same file names. Every export
directory carries ``MARKER`` to say that gptiny wrote it; a GGUF file carries its mark inside.
"""

from __future__ import annotations

import importlib
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from gptiny_cli.errors import GptinyError
from gptiny_cli.store import atomic

T = TypeVar("T")
MARKER = "gptiny-export.json"


def require(extra: str, modules: Iterable[str]) -> None:
    """Raise a one-line error naming ``pip install 'gptiny[extra]'`` unless every module imports."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            raise GptinyError(f"--format {extra} needs the {name} package, an optional extra: "
                              f"pip install 'gptiny[{extra}]'") from None


def check_target(out: Path, force: bool, run_dir: Path) -> None:
    """Refuse an output that is a file, holds the run, or is a non-empty directory unless ``force``."""
    where, run = Path(out).resolve(), Path(run_dir).resolve()
    if where == run or where in run.parents:
        raise GptinyError(f"--out {out} holds the run {run_dir} itself; choose a directory of its own")
    if out.exists() and not out.is_dir():
        raise GptinyError(f"--out {out} is a file; give a directory")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not is_export(out):
        raise GptinyError(f"--out {out} is not empty and holds no earlier export; choose an empty or new directory")
    if not force:
        raise GptinyError(f"--out {out} already holds an export; add --force to replace it")


def is_export(directory: Path) -> bool:
    """Whether gptiny wrote ``directory`` as an export, the only kind of directory --force replaces
    (ONNX exports older than the marker are known by their ``gptiny-onnx.json``)."""
    return (directory / MARKER).is_file() or (directory / "gptiny-onnx.json").is_file()


def write_dir(out: Path, force: bool, run_dir: Path, fill: Callable[[Path], T]) -> T:
    """Have ``fill`` write a hidden staging directory beside ``out``, then move it onto ``out``;
    what ``fill`` returns."""
    out = Path(out)
    check_target(out, force, run_dir)
    created = [parent for parent in reversed(out.parents) if not parent.exists()]  # outermost first
    staging = atomic.staging_dir(out)
    try:
        result = fill(staging)
        atomic.write_json(staging / MARKER, {"written_by": "gptiny", "run": str(run_dir)})
        for path in staging.iterdir():
            with open(path, "rb+") as handle:
                os.fsync(handle.fileno())
        atomic.replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for parent in reversed(created):  # a failed export leaves no empty RUN/export/ behind
            parent.rmdir()
        raise
    return result


def check_file_target(out: Path, force: bool, is_ours: Callable[[Path], bool]) -> None:
    """Refuse an output file that is a directory, is not an earlier export (``is_ours``), or is one unless ``force``."""
    if out.is_dir():
        raise GptinyError(f"--out {out} is a directory; give the file to write, e.g. {out / 'model.gguf'}")
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_file() or not is_ours(out):
        raise GptinyError(f"--out {out} is a file that no gptiny export wrote; choose a new file name")
    if not force:
        raise GptinyError(f"--out {out} already holds an export; add --force to replace it")


def write_file(out: Path, fill: Callable[[Path], T]) -> T:
    """Have ``fill`` write a hidden file beside ``out``, then rename it onto ``out``; what ``fill`` returns."""
    out = Path(out)
    created = [parent for parent in reversed(out.parents) if not parent.exists()]  # outermost first
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise atomic.cannot_write(out, "--out", err) from None
    results: list[T] = []
    try:
        atomic.write_with(out, lambda staging: results.append(fill(staging)))
    except BaseException:
        for parent in reversed(created):  # a failed export leaves no empty RUN/export/ behind
            parent.rmdir()
        raise
    return results[0]
