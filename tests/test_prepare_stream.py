"""Streaming preparation: any chunk size gives the same files as encoding the whole text at once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gptiny_cli.data import Vocab
from gptiny_cli.errors import GptinyError
from gptiny_cli.prepare.corpus import PrepareOptions, prepare_corpus
from gptiny_cli.prepare.stream import read_text_chunks

TEXTS = {"a.txt": "Ünïcödé spans chunk edges — “quotes” and 日本語 too.\n" * 7,
         "b.txt": "plain ASCII, a second document.\n" * 9}


def _one_shot(text: str, n_train: int) -> tuple[bytes, bytes]:
    ids = np.array(Vocab.from_text(text).encode(text), dtype="<u2")
    return ids[:n_train].tobytes(), ids[n_train:].tobytes()


@pytest.mark.parametrize("chunk_bytes", [1, 3, 7, 64])
def test_chunked_encoding_writes_the_same_bytes_as_a_one_shot_encoding(chunk_bytes):
    for name, text in TEXTS.items():
        Path(name).write_text(text, encoding="utf-8")
    options = PrepareOptions(chunk_bytes=chunk_bytes)
    summary = prepare_corpus(list(TEXTS), Path("data/chunked"), options=options)
    joined = "\n\n".join(TEXTS.values())
    assert len(joined.encode()) > 10 * chunk_bytes
    train, val = _one_shot(joined, summary.train_tokens)
    assert Path("data/chunked/train.bin").read_bytes() == train
    assert Path("data/chunked/val.bin").read_bytes() == val


def test_a_bad_byte_after_a_chunk_edge_is_reported_at_its_offset_in_the_file():
    Path("bad.txt").write_bytes("é".encode() * 5 + b"\xff" + b"tail")
    with pytest.raises(GptinyError, match="invalid byte 0xff at byte offset 10"):
        list(read_text_chunks(Path("bad.txt"), chunk_bytes=3))


def test_a_character_cut_off_at_the_end_of_a_file_is_reported_at_its_first_byte():
    Path("cut.txt").write_bytes(b"abc" + "é".encode()[:1])
    with pytest.raises(GptinyError, match="invalid byte 0xc3 at byte offset 3"):
        list(read_text_chunks(Path("cut.txt"), chunk_bytes=2))


def test_progress_counts_the_bytes_of_each_pass_up_to_the_inputs_size():
    for name, text in TEXTS.items():
        Path(name).write_text(text, encoding="utf-8")
    seen: dict[str, tuple[int, int]] = {}
    prepare_corpus(list(TEXTS), Path("data/p"), options=PrepareOptions(chunk_bytes=64),
                   progress=lambda stage, done, total: seen.__setitem__(stage, (done, total)))
    size = sum(Path(name).stat().st_size for name in TEXTS)
    assert seen == {"counting": (size, size), "encoding": (size, size)}
