"""Writing a data directory: read a UTF-8 text, build its vocabulary, encode it, split it.

The directory is staged beside its target and renamed into place, so a failure never leaves
half of one behind; its format is the one ``data.load_corpus`` reads.
"""

from __future__ import annotations

import array
import hashlib
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gptiny_cli.data import Vocab, token_dtype
from gptiny_cli.errors import GptinyError
from gptiny_cli.store import atomic

_ARRAY_CODES = {"uint16": "H", "int32": "i"}


@dataclass(frozen=True)
class PrepareSummary:
    out_dir: Path
    vocab_size: int
    chars: int
    train_tokens: int
    val_tokens: int


def read_corpus(path: Path) -> str:
    """Read a UTF-8 text file, or explain exactly why it cannot be used."""
    path = Path(path)
    if not path.exists():
        raise GptinyError(f"input not found: {path}")
    if path.is_dir():
        raise GptinyError(f"input is a directory, not a text file: {path}")
    raw = path.read_bytes()
    if not raw:
        raise GptinyError(f"input is empty: {path}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise GptinyError(
            f"{path} is not UTF-8: invalid byte 0x{raw[err.start]:02x} at byte offset {err.start}"
        ) from None


def _token_bytes(tokens: list[int], dtype: str) -> bytes:
    packed = array.array(_ARRAY_CODES[dtype], tokens)
    if sys.byteorder != "little":  # pragma: no cover - big-endian hosts only
        packed.byteswap()
    return packed.tobytes()


def prepare_corpus(input_path: Path, out_dir: Path, val_fraction: float = 0.1) -> PrepareSummary:
    """Encode a corpus and write the data directory atomically (all of it, or nothing)."""
    if not 0.0 < val_fraction < 1.0:
        raise GptinyError(f"--val-fraction {val_fraction} is invalid: must be between 0 and 1")
    text = read_corpus(input_path)
    n_train = int(len(text) * (1.0 - val_fraction))
    n_val = len(text) - n_train
    if n_train < 2 or n_val < 2:
        raise GptinyError(
            f"{input_path} is too small to split: {len(text)} characters give {n_train} training and "
            f"{n_val} validation characters; each needs at least 2"
        )
    vocab = Vocab.from_text(text)
    tokens = vocab.encode(text)
    dtype = token_dtype(vocab.size)
    meta = {
        "format": 1,
        "vocab_size": vocab.size,
        "chars": len(text),
        "train_tokens": n_train,
        "val_tokens": n_val,
        "val_fraction": val_fraction,
        "token_dtype": dtype,
        "source": str(Path(input_path).resolve()),
        "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
    }
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    staging.chmod(0o777 & ~atomic.current_umask())
    try:
        (staging / "train.bin").write_bytes(_token_bytes(tokens[:n_train], dtype))
        (staging / "val.bin").write_bytes(_token_bytes(tokens[n_train:], dtype))
        atomic.write_json(staging / "vocab.json", vocab.to_json())
        atomic.write_json(staging / "meta.json", meta)
        _replace_dir(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return PrepareSummary(out_dir, vocab.size, len(text), n_train, n_val)


def _replace_dir(staging: Path, target: Path) -> None:
    """Swap a finished staging directory into place; a crash leaves old or new, never half."""
    if target.exists():
        if not (target / "meta.json").is_file():
            raise GptinyError(f"{target} exists and is not a gptiny data directory; choose another --out")
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(target)
    atomic.fsync_dir(target.parent)
