"""Weights on disk: safetensors files that describe themselves, checked before they are trusted.

A weights file carries the model config and vocabulary size in its metadata, and
its tensor names mirror the module tree (``blocks.0.attn.qkv.weight``). Loading
never unpickles: ``read_header`` checks the container itself (header length,
every tensor's dtype, shape and byte range against the file's size) reading only
the header, then every name, shape and dtype is compared with what the config
builds, and only then are the tensors read.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from gptiny_cli.config import ModelConfig
from gptiny_cli.errors import GptinyError
from gptiny_cli.store import atomic

FORMAT = "gptiny-weights-1"
# The safetensors library refuses longer headers too; ours are a few kilobytes.
MAX_HEADER_BYTES = 100_000_000
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2,
               "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_TORCH_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.float64: "F64",
                 torch.uint8: "U8", torch.int8: "I8", torch.int16: "I16", torch.int32: "I32",
                 torch.int64: "I64", torch.bool: "BOOL"}

Entries = dict[str, tuple[tuple[int, ...], str]]


def tensors_to_save(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with each shared tensor once (a tied head is restored from the embedding)."""
    seen: set[int] = set()
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        key = tensor.untyped_storage().data_ptr()
        if key in seen:
            continue
        seen.add(key)
        tensors[name] = tensor.detach().to("cpu").contiguous()
    return tensors


def save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """``safetensors.torch.save_file``, whose I/O failures (a full disk) come out as the OSError they are."""
    try:
        save_file(tensors, str(path), metadata=metadata)
    except SafetensorError as err:
        found = re.search(r"os error (\d+)", str(err))
        code = int(found.group(1)) if found else errno.EIO
        raise OSError(code, os.strerror(code) if found else str(err)) from None


def write_weights(path: Path, model: nn.Module, cfg: ModelConfig, vocab_size: int) -> None:
    """Write the weights to ``path`` as is (callers that need atomicity stage the file)."""
    metadata = {"format": FORMAT, "model_config": json.dumps(asdict(cfg)), "vocab_size": str(vocab_size)}
    save_tensors(tensors_to_save(model), path, metadata)


def save_weights(path: Path, model: nn.Module, cfg: ModelConfig, vocab_size: int) -> None:
    atomic.write_with(Path(path), lambda tmp: write_weights(tmp, model, cfg, vocab_size))


def _entry(path: Path, name: str, info: object, data_bytes: int) -> tuple[tuple[int, ...], str, int, int]:
    """Check one tensor's header entry; return (shape, dtype, begin, end)."""
    def bad(problem: str) -> GptinyError:
        return GptinyError(f"{path} is damaged: tensor {name!r} {problem}")

    if not isinstance(info, dict):
        raise bad("has no description in the header")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if dtype not in DTYPE_BYTES:
        raise bad(f"has an unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise bad(f"has an invalid shape {shape!r}")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
        raise bad(f"has invalid data offsets {offsets!r}")
    begin, end = offsets
    if not 0 <= begin <= end <= data_bytes:
        raise bad(f"claims bytes {begin:,}..{end:,} but the file holds {data_bytes:,} bytes of tensor data "
                  "(truncated?)")
    if math.prod(shape) * DTYPE_BYTES[dtype] != end - begin:
        raise bad(f"of shape {shape} and dtype {dtype} does not fit its {end - begin:,} bytes")
    return tuple(shape), dtype, begin, end


def read_header(path: Path) -> tuple[dict[str, str], Entries]:
    """Metadata and {name: (shape, dtype)} of a safetensors file, every claim checked against its size.

    Only the header is read, and only after its claimed length is known to fit in the file, so a
    hostile or truncated file is refused at once without a large read or allocation.
    """
    path = Path(path)
    if not path.is_file():
        raise GptinyError(f"weights not found: {path}")
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise GptinyError(f"{path} is not a valid safetensors file: only {size} bytes (truncated?)")
        length = int.from_bytes(prefix, "little")
        if length > size - 8 or length > MAX_HEADER_BYTES:
            raise GptinyError(f"{path} is not a valid safetensors file: its header claims {length:,} bytes "
                              f"but the whole file has {size:,} (truncated, or another kind of file)")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, ValueError):
            raise GptinyError(f"{path} is not a valid safetensors file: its header is not JSON") from None
    if not isinstance(header, dict):
        raise GptinyError(f"{path} is not a valid safetensors file: its header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise GptinyError(f"{path} is damaged: its metadata is not a table of strings")
    data_bytes = size - 8 - length
    entries: Entries = {}
    spans = []
    for name, info in header.items():
        shape, dtype, begin, end = _entry(path, name, info, data_bytes)
        entries[name] = (shape, dtype)
        spans.append((begin, end))
    covered = 0
    for begin, end in sorted(spans):
        if begin != covered:
            break
        covered = end
    if covered != data_bytes:
        raise GptinyError(f"{path} is damaged: its tensors do not exactly cover its {data_bytes:,} bytes of data")
    return metadata, entries


def dtype_name(dtype: torch.dtype) -> str:
    return _TORCH_DTYPES.get(dtype, str(dtype))


def compare_entries(path: Path, entries: Entries, expected: Entries, what: str) -> None:
    """Raise a GptinyError naming every tensor that is missing, unexpected, or of the wrong shape or dtype."""
    missing = sorted(set(expected) - set(entries))
    unexpected = sorted(set(entries) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected {', '.join(unexpected)}")
    for name in sorted(set(expected) & set(entries)):
        if entries[name] != expected[name]:
            (got_shape, got), (want_shape, want) = entries[name], expected[name]
            problems.append(f"{name} is {got}{list(got_shape)}, {what} needs {want}{list(want_shape)}")
    if problems:
        raise GptinyError(f"{path} does not match {what}: {'; '.join(problems)}")


def check_weights(path: Path, model: nn.Module) -> None:
    """Raise a GptinyError naming every tensor that is missing, unexpected or of the wrong shape or dtype."""
    _, entries = read_header(path)
    expected = {name: (tuple(t.shape), dtype_name(t.dtype)) for name, t in tensors_to_save(model).items()}
    compare_entries(path, entries, expected, "its config")


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a file whose header ``read_header`` has already accepted."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise GptinyError(f"{path} could not be read: {err}") from None


def load_weights(path: Path, model: nn.Module) -> None:
    """Copy weights into ``model`` after checking they are exactly what it expects.

    A tied head shares the embedding's tensor, which is stored once: copying into it in place
    keeps the two tied.
    """
    check_weights(path, model)
    state = model.state_dict()
    with torch.no_grad():
        for name, tensor in read_tensors(path).items():
            state[name].copy_(tensor)


def model_config_of(path: Path) -> tuple[ModelConfig, int]:
    """The model config and vocabulary size recorded in a weights file's metadata."""
    metadata, _ = read_header(path)
    if metadata.get("format") != FORMAT:
        raise GptinyError(f"{path} was not written by gptiny (no {FORMAT} metadata)")
    try:
        return ModelConfig(**json.loads(metadata["model_config"])), int(metadata["vocab_size"])
    except (KeyError, TypeError, ValueError) as err:
        raise GptinyError(f"{path} has damaged metadata: {err}") from None
