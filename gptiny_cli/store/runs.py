"""Run directories: creating them, finding them (``latest``), their status and metrics files.

A run directory holds:
    config.toml              the full resolved config
    vocab.json               the vocabulary the model was trained with (characters), or
    tokenizer.json           the byte-level BPE it was trained with
    checkpoint/              the weights (best and last) and training state, see ``manifest``
    metrics.jsonl            one JSON object per logged step or evaluation
    run.json                 status, times, device, parameter count, best val loss
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gptiny_cli.config import RunConfig, config_from_dict, read_toml
from gptiny_cli.errors import GptinyError
from gptiny_cli.store import atomic, manifest

if TYPE_CHECKING:  # torch stays out of commands that only read run.json (runs, plot)
    import torch.nn as nn

    from gptiny_cli.data import Tokenizer

# ``sample --checkpoint best|last``: which weights file of the run's checkpoint.
WHICH = {"best": manifest.BEST, "last": manifest.LAST}


def check_run_name(name: str) -> str:
    """A run's name becomes part of its directory's: it must stay one plain path component."""
    if not name or name in (".", "..") or any(c in name for c in "/\\\0") or name.startswith("."):
        raise GptinyError(f"--name {name!r} is invalid: a run name cannot be empty, start with '.', or hold "
                          "'/' or '\\'; use letters, digits, '-' or '_', e.g. --name lr3e-3")
    return name


def create_run_dir(runs_dir: Path, name: str, now: datetime | None = None) -> Path:
    """A new, empty ``<YYYYMMDD-HHMMSS>-<name>`` directory; a suffix keeps it unique."""
    runs_dir = Path(runs_dir)
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise GptinyError(f"cannot create runs directory {runs_dir}: {err.strerror}") from None
    stem = f"{(now or datetime.now()):%Y%m%d-%H%M%S}-{name}"
    for attempt in range(1, 1000):
        candidate = runs_dir / (stem if attempt == 1 else f"{stem}-{attempt}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
        except OSError as err:
            raise GptinyError(f"cannot create a run in {runs_dir}: {err.strerror}") from None
    raise GptinyError(f"too many runs named {stem} in {runs_dir}")


def read_run_info(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(run_dir) / "run.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError:
        raise GptinyError(f"{run_dir}/run.json is damaged") from None


def val_bits(info: dict[str, Any], loss: Any) -> tuple[float | None, float | None]:
    """A val loss (nats per token) in bits per character and bits per byte, the units in which runs of
    any two tokenizers compare, from the validation text's size that run.json records (``val_text``).

    A character run predicts one character a token, so older runs without ``val_text`` still get bits
    per character; None where a figure cannot be known.
    """
    if not isinstance(loss, (int, float)) or isinstance(loss, bool):
        return None, None
    text = _val_text(info)
    if text is not None:
        total = loss * text["tokens"] / math.log(2)
        return total / text["chars"], total / text["bytes"]
    return (loss / math.log(2), None) if info.get("tokenizer", "char") == "char" else (None, None)


def tokens_per_char(info: dict[str, Any]) -> float:
    """Predicted validation tokens per predicted character: a loss per token times this is one per
    character (in nats), which ranks runs of different tokenizers fairly; 1 for a character run."""
    text = _val_text(info)
    return 1.0 if text is None else text["tokens"] / text["chars"]


def _val_text(info: dict[str, Any]) -> dict[str, int] | None:
    text = info.get("val_text")
    keys = ("tokens", "chars", "bytes")
    if isinstance(text, dict) and all(isinstance(text.get(k), int) and text[k] > 0 for k in keys):
        return text
    return None


def write_run_info(run_dir: Path, info: dict[str, Any]) -> None:
    atomic.write_json(Path(run_dir) / "run.json", info)


def _started(run_dir: Path) -> tuple[str, str]:
    try:
        info = read_run_info(run_dir)
    except GptinyError:
        info = {}
    return (str(info.get("started_at", "")), str(run_dir))


def run_dirs(runs_dir: Path) -> list[Path]:
    """Every run directory (one holding run.json) in ``runs_dir``, and one level down: the runs of a group
    such as a sweep (``runs/<sweep-id>/<run>/``)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    found = []
    for path in sorted(runs_dir.iterdir()):
        if (path / "run.json").is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(p for p in sorted(path.iterdir()) if (p / "run.json").is_file())
    return found


def resolve_run(spec: str, runs_dir: Path) -> Path:
    """A run directory from a path or from ``latest`` (the most recently started run, a sweep's included)."""
    if spec == "latest":
        runs_dir = Path(runs_dir)
        candidates = run_dirs(runs_dir)
        if not candidates:
            raise GptinyError(f"no runs in {runs_dir}/; train one with `gptiny train CONFIG`")
        return max(candidates, key=_started)
    path = Path(spec)
    if not path.is_dir():
        raise GptinyError(f"run not found: {spec} (give a run directory or `latest`)")
    return path


def find_job_run(runs_dir: Path, run_id: str) -> Path | None:
    """The most recently started run created by the torchrun job with this rendezvous id."""
    runs_dir = Path(runs_dir)
    found = []
    for path in run_dirs(runs_dir):
        try:
            if read_run_info(path).get("elastic_run_id") == run_id:
                found.append(path)
        except GptinyError:
            continue  # a damaged run.json is not the run we look for
    return max(found, key=_started, default=None)


class MetricsLog:
    """Appends one JSON object per line and flushes, so a crash loses at most the line in flight."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "a", encoding="utf-8")

    def write(self, row: dict[str, Any]) -> None:
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


@dataclass
class LoadedRun:
    run_dir: Path
    config: RunConfig
    vocab: Tokenizer
    model: nn.Module
    weights: Path


def require_files(run_dir: Path) -> None:
    """List everything a half-written run lacks, in one message."""
    missing = [name for name in ("config.toml",) if not (run_dir / name).is_file()]
    if not any((run_dir / name).is_file() for name in ("vocab.json", "tokenizer.json")):
        missing.append("vocab.json")
    if not any((run_dir / name).is_dir() for name in (manifest.CURRENT, manifest.PREVIOUS)):
        missing.append(f"{manifest.CURRENT}/ (weights and training state)")
    if missing:
        raise GptinyError(
            f"{run_dir} is incomplete: missing {', '.join(missing)} (training may not have saved yet)"
        )


def load_run(run_dir: Path, which: str = "best") -> LoadedRun:
    """The config, vocabulary and weights of a run, each checked against the others and the manifest."""
    from gptiny_cli.data import load_vocab
    from gptiny_cli.model import build_model
    from gptiny_cli.store import tensorfile

    run_dir = Path(run_dir)
    require_files(run_dir)
    ckpt = manifest.locate(run_dir)
    weights = ckpt / WHICH[which]
    recorded = manifest.read(ckpt, [weights.name])
    config = config_from_dict(read_toml(run_dir / "config.toml"))
    vocab = load_vocab(run_dir)
    _, vocab_size = tensorfile.model_config_of(weights)
    if vocab_size != vocab.size:
        raise GptinyError(
            f"{run_dir}/{vocab.filename} has {vocab.size} {'characters' if vocab.kind == 'char' else 'tokens'} "
            f"but {weights.name} was trained on {vocab_size}"
        )
    manifest.check_vocab(recorded, vocab.identity(), run_dir / vocab.filename)
    model = build_model(config.model, vocab.size)
    tensorfile.load_weights(weights, model)
    manifest.check_config(recorded, config, run_dir / "config.toml", prefix="model.")
    model.eval()
    return LoadedRun(run_dir, config, vocab, model, weights)
