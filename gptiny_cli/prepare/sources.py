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
# The characters of Tiny Shakespeare, what no INPUT prepares: inspect counts with it before any data exists.
TINY_SHAKESPEARE_VOCAB_SIZE = 65


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
    """The files under ``path`` that ``glob`` matches, each once, none outside the folder."""
    if ".." in Path(glob).parts:
        raise GptinyError(f"--glob {glob!r} leaves the folder; give a pattern inside it, e.g. --glob '*.md'")
    try:
        matched = sorted(p for p in path.rglob(glob) if p.is_file())  # by path component: a/z.txt before a.txt
    except (ValueError, NotImplementedError) as err:  # pathlib's word for an absolute or empty pattern
        raise GptinyError(f"--glob {glob!r} is invalid ({err}); give a pattern relative to the folder, "
                          "e.g. --glob '*.md'") from None
    root, seen, found = path.resolve(), set(), []
    for p in matched:
        real = p.resolve()
        # A symbolic link out of the folder is not followed, and a file reached twice is read once.
        if real.is_relative_to(root) and real not in seen:
            seen.add(real)
            found.append(p)
    if not found:
        raise GptinyError(f"no files matching {glob!r} under {path} (links out of it are not followed); "
                          "pass --glob to choose others (e.g. --glob '*.md')")
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
