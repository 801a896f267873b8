"""What ``gptiny prepare INPUT...`` reads: files, directories searched with a glob, and standard input.

Each input becomes one or more documents, in a fixed order: the inputs in the order given, the
files of a directory in sorted path order (recursively), so that the result never depends on
the order in which a file system lists them. URLs are downloaded to files before this
(``download.py``). Standard input is copied to a file first, because it is read twice.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from gptiny_cli.errors import GptinyError

STDIN = "-"
DEFAULT_GLOB = "*.txt"


@dataclass(frozen=True)
class Source:
    """One document: ``label`` is what the user sees (a path, or ``-``), ``path`` the file read."""

    label: str
    path: Path


def default_out(first_input: str | None) -> Path:
    """``data/<stem of the first input>``, ``data/stdin`` for standard input."""
    if first_input is None or first_input == STDIN:
        return Path("data") / ("input" if first_input is None else "stdin")
    path = Path(first_input)
    return Path("data") / (path.name if path.is_dir() else path.stem)


def _directory(path: Path, glob: str) -> list[Source]:
    found = sorted(p for p in path.rglob(glob) if p.is_file())  # by path component: a/z.txt before a.txt
    if not found:
        raise GptinyError(f"no files matching {glob!r} under {path}; pass --glob to choose others "
                          "(e.g. --glob '*.md')")
    return [Source(str(p), p) for p in found]


def _file(spec: str) -> Source:
    path = Path(spec)
    if not path.exists():
        raise GptinyError(f"input not found: {path}")
    if not path.is_file():
        raise GptinyError(f"input is not a regular file: {path}")
    return Source(spec, path)


def spool_stdin(stream: BinaryIO, dest: Path) -> Path:
    """Copy standard input to ``dest`` (preparation reads its inputs twice)."""
    with open(dest, "wb") as file:
        shutil.copyfileobj(stream, file, 2**20)
    return dest


def expand(inputs: list[str], glob: str, stdin: BinaryIO | None, spool_dir: Path) -> list[Source]:
    """Every document of ``inputs``, in order; an input that holds none is an error."""
    if not inputs:
        raise GptinyError("give at least one input: a text file, a directory, or - for standard input")
    if inputs.count(STDIN) > 1:
        raise GptinyError("standard input (-) can be read only once; give - a single time")
    sources: list[Source] = []
    for spec in inputs:
        if spec == STDIN:
            if stdin is None:
                raise GptinyError("- means standard input, and there is none here")
            sources.append(Source(STDIN, spool_stdin(stdin, spool_dir / "stdin.txt")))
        elif Path(spec).is_dir():
            sources.extend(_directory(Path(spec), glob))
        else:
            sources.append(_file(spec))
    return sources
