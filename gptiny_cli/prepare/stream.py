"""Reading a text file in chunks: bytes decoded as UTF-8 a piece at a time, and text as code points.

Preparation reads every input twice (a vocabulary pass, then an encoding pass) and never holds a
whole file, so memory stays bounded whatever the corpus size. Code points come out as a numpy
array (one byte each for ASCII text, four otherwise), so counting and encoding are vectorised.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from gptiny_cli.errors import GptinyError

# Large enough that numpy's work dwarfs Python's per-chunk overhead, small enough to stay in
# cache: 256 KiB measured faster than 1 or 4 MiB (benchmarks/bench_prepare.py).
DEFAULT_CHUNK_BYTES = 2**18
# One slot per Unicode code point: a lookup table this long maps any character in one step.
CODE_POINTS = 0x110000

Progress = Callable[[int], None]  # called with the bytes read since the last call


class NotUtf8(GptinyError):
    """A file with bytes that are not UTF-8, and where the first bad one is."""

    def __init__(self, path: Path, offset: int, byte: int) -> None:
        self.path, self.offset = path, offset
        super().__init__(f"{path} is not UTF-8: invalid byte 0x{byte:02x} at byte offset {offset}")


def read_text_chunks(path: Path, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                     on_bytes: Progress | None = None) -> Iterator[tuple[bytes, str]]:
    """The file as (raw bytes, decoded text) pieces; a character split between reads is kept whole."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    done = 0  # bytes handed to the decoder so far
    with open(path, "rb") as file:
        while True:
            raw = file.read(chunk_bytes)
            pending = decoder.getstate()[0]
            try:
                text = decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as err:
                # The decoder's input was its held-back bytes followed by this read.
                raise NotUtf8(path, done - len(pending) + err.start, (pending + raw)[err.start]) from None
            done += len(raw)
            if on_bytes and raw:
                on_bytes(len(raw))
            if not raw:
                return
            yield raw, text


def code_points(text: str) -> np.ndarray:
    """The code points of ``text``: uint8 for ASCII (a quarter of the memory), else uint32."""
    if text.isascii():
        return np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
