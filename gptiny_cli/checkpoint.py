"""Weights on disk: safetensors files that describe themselves, checked before they are trusted.

A weights file carries the model config and vocabulary size in its metadata, and
its tensor names mirror the module tree (``blocks.0.attn.qkv.weight``). Loading
never unpickles: it reads the header, compares every name, shape and dtype with
what the config builds, and only then copies the tensors in.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from gptiny_cli import atomic
from gptiny_cli.config import ModelConfig
from gptiny_cli.errors import GptinyError

FORMAT = "gptiny-weights-1"


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


def save_weights(path: Path, model: nn.Module, cfg: ModelConfig, vocab_size: int) -> None:
    metadata = {
        "format": FORMAT,
        "model_config": json.dumps(asdict(cfg)),
        "vocab_size": str(vocab_size),
    }
    tensors = tensors_to_save(model)
    atomic.write_with(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def read_header(path: Path) -> tuple[dict[str, str], dict[str, tuple[tuple[int, ...], str]]]:
    """Metadata and {name: (shape, dtype)} of a safetensors file, without reading its data."""
    path = Path(path)
    if not path.is_file():
        raise GptinyError(f"weights not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            entries = {}
            for name in handle.keys():
                sl = handle.get_slice(name)
                entries[name] = (tuple(sl.get_shape()), str(sl.get_dtype()))
    except (SafetensorError, OSError, ValueError) as err:
        raise GptinyError(f"{path} is not a valid safetensors file: {err}") from None
    return metadata, entries


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}.get(dtype, str(dtype))


def check_weights(path: Path, model: nn.Module) -> None:
    """Raise a GptinyError naming every tensor that is missing, unexpected or of the wrong shape."""
    _, entries = read_header(path)
    expected = {name: (tuple(t.shape), _dtype_name(t.dtype)) for name, t in tensors_to_save(model).items()}
    missing = sorted(set(expected) - set(entries))
    unexpected = sorted(set(entries) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected {', '.join(unexpected)}")
    for name in sorted(set(expected) & set(entries)):
        if entries[name] != expected[name]:
            got, want = entries[name], expected[name]
            problems.append(f"{name} is {got[1]}{list(got[0])}, the config needs {want[1]}{list(want[0])}")
    if problems:
        raise GptinyError(f"{path} does not match its config: {'; '.join(problems)}")


def load_weights(path: Path, model: nn.Module) -> None:
    """Copy weights into ``model`` after checking they are exactly what it expects."""
    check_weights(path, model)
    try:
        with safe_open(str(path), framework="pt") as handle:
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise GptinyError(f"{path} could not be read: {err}") from None
    state = model.state_dict()
    with torch.no_grad():
        for name, tensor in tensors.items():
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
