"""The corpus: a character vocabulary, the prepared token files, and batches drawn from them.

``prepare_corpus`` writes a data directory:
    vocab.json   the sorted characters of the corpus
    train.bin    training tokens, little-endian unsigned integers
    val.bin      validation tokens, the last ``val_fraction`` of the corpus
    meta.json    sizes, token dtype, source path and its sha256
Training memory-maps the .bin files instead of reading them into Python lists.
"""

from __future__ import annotations

import array
import hashlib
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from gptiny_cli import atomic
from gptiny_cli.errors import GptinyError

# Token files are always little-endian so a data directory travels between machines.
_TOKEN_DTYPES = {"uint16": (torch.uint16, 2), "int32": (torch.int32, 4)}
_ARRAY_CODES = {"uint16": "H", "int32": "i"}


@dataclass(frozen=True)
class Vocab:
    """A character-level tokenizer: token i is the i-th character in sorted order."""

    chars: tuple[str, ...]

    @classmethod
    def from_text(cls, text: str) -> Vocab:
        return cls(tuple(sorted(set(text))))

    @property
    def size(self) -> int:
        return len(self.chars)

    def unknown(self, text: str) -> list[str]:
        """Characters of ``text`` that the vocabulary lacks, each once, in order of appearance."""
        known = set(self.chars)
        return list(dict.fromkeys(ch for ch in text if ch not in known))

    def encode(self, text: str) -> list[int]:
        index = {ch: i for i, ch in enumerate(self.chars)}
        missing = self.unknown(text)
        if missing:
            raise GptinyError(f"characters not in the vocabulary: {''.join(missing)!r}")
        return [index[ch] for ch in text]

    def decode(self, tokens: list[int]) -> str:
        return "".join(self.chars[t] for t in tokens)

    def to_json(self) -> dict:
        return {"chars": list(self.chars)}

    @classmethod
    def load(cls, path: Path) -> Vocab:
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
            chars = raw["chars"]
        except FileNotFoundError:
            raise GptinyError(f"vocabulary not found: {path}") from None
        except (ValueError, KeyError, TypeError):
            raise GptinyError(f"{path} is not a gptiny vocabulary (expected {{\"chars\": [...]}})") from None
        if not all(isinstance(c, str) and len(c) == 1 for c in chars) or len(set(chars)) != len(chars):
            raise GptinyError(f"{path}: 'chars' must list distinct single characters")
        return cls(tuple(chars))


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


def _token_dtype(vocab_size: int) -> str:
    return "uint16" if vocab_size <= 2**16 else "int32"


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
    dtype = _token_dtype(vocab.size)
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


@dataclass
class Corpus:
    """A prepared data directory, its splits memory-mapped as integer tensors."""

    directory: Path
    vocab: Vocab
    meta: dict
    train: torch.Tensor
    val: torch.Tensor


def _map_tokens(path: Path, count: int, dtype: str) -> torch.Tensor:
    torch_dtype, width = _TOKEN_DTYPES[dtype]
    if not path.is_file() or path.stat().st_size != count * width:
        raise GptinyError(f"{path} is missing or truncated; run `gptiny prepare` again")
    return torch.from_file(str(path), shared=False, size=count, dtype=torch_dtype)


def load_corpus(directory: Path) -> Corpus:
    directory = Path(directory)
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        raise GptinyError(
            f"no prepared data at {directory} (meta.json missing); run `gptiny prepare INPUT "
            f"--out {directory}` or set data.path"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        dtype, n_train, n_val = meta["token_dtype"], int(meta["train_tokens"]), int(meta["val_tokens"])
    except (ValueError, KeyError, TypeError):
        raise GptinyError(f"{meta_path} is damaged; run `gptiny prepare` again") from None
    if dtype not in _TOKEN_DTYPES:
        raise GptinyError(f"{meta_path}: unknown token_dtype {dtype!r}")
    vocab = Vocab.load(directory / "vocab.json")
    train = _map_tokens(directory / "train.bin", n_train, dtype)
    val = _map_tokens(directory / "val.bin", n_val, dtype)
    return Corpus(directory, vocab, meta, train, val)


def step_seed(seed: int, step: int, index: int, stream: str) -> int:
    """A 64-bit seed for one ``stream`` ("batch", "dropout") of micro-batch ``index`` of a step.

    Every random draw of a training step is a function of (seed, step, micro-batch index) and
    of nothing that came before. So the micro-batch with global index g (rank × grad_accum +
    micro-step) is the same whichever process draws it: one process accumulating 2
    micro-batches trains on exactly the data two processes with 1 each do, and a resumed run,
    on any number of processes, continues with exactly the batches it would have drawn.
    """
    digest = hashlib.blake2b(f"{seed}:{step}:{index}:{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def get_batch(
    tokens: torch.Tensor, batch_size: int, block_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows of ``block_size`` tokens and the same windows shifted by one."""
    starts = torch.randint(len(tokens) - block_size, (batch_size,), generator=generator)
    index = starts[:, None] + torch.arange(block_size + 1)  # (B, T+1)
    window = tokens[index].long()
    return window[:, :-1], window[:, 1:]


def sequential_batches(tokens: torch.Tensor, batch_size: int, block_size: int):
    """Every token of a split once, as consecutive windows (for a deterministic full evaluation).

    Yields (x, y) with x (B, T); the last window is shorter when the split does not divide evenly.
    """
    n_targets = len(tokens) - 1
    starts = list(range(0, n_targets, block_size))
    full = [s for s in starts if s + block_size <= n_targets]
    for i in range(0, len(full), batch_size):
        index = torch.tensor(full[i : i + batch_size])[:, None] + torch.arange(block_size + 1)
        window = tokens[index].long()
        yield window[:, :-1], window[:, 1:]
    rest = [s for s in starts if s + block_size > n_targets]
    for start in rest:
        window = tokens[start:].long()[None, :]
        yield window[:, :-1], window[:, 1:]
