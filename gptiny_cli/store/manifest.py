"""A checkpoint is a directory, complete only once its manifest is written, put in place by a rename.

    <run>/checkpoint/
        model.safetensors        the weights with the best validation loss so far
        model-last.safetensors   the weights at the checkpoint's step
        state.safetensors        optimizer moments
        state.json               step, best val loss, schedule position, ...
        manifest.json            written last: format, step, size and sha256 of each file,
                                 the config and vocabulary fingerprints

``commit`` fills a fresh hidden directory beside it, fsyncs every file, writes the
manifest, then renames the old checkpoint to ``.checkpoint-old``, the new one into
place, and removes the old one. Nothing of the previous checkpoint is touched before
the new one is complete, so a kill at any moment leaves ``checkpoint/`` or, for the
instant between the two renames, ``.checkpoint-old/`` complete; readers use the
latter when the former is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from gptiny_cli.config import RunConfig
from gptiny_cli.errors import GptinyError
from gptiny_cli.store import atomic

FORMAT = "gptiny-checkpoint-1"
CURRENT, PREVIOUS, STAGING_PREFIX = "checkpoint", ".checkpoint-old", ".checkpoint-new-"
MANIFEST = "manifest.json"
BEST, LAST = "model.safetensors", "model-last.safetensors"
STATE_TENSORS, STATE_META = "state.safetensors", "state.json"
FILES = (BEST, LAST, STATE_TENSORS, STATE_META)

Writer = Callable[[Path], None]

# Keys that may change when a run is resumed: they steer how training goes on (and are what the
# error messages for a diverged, out-of-memory or moved run tell the user to change), not what
# the run is. Every other key of [data], [model] and [train] is part of the checkpoint's identity;
# [sample] and [log] are not.
RESUMABLE = frozenset({
    "train.max_iters", "train.eval_interval", "train.eval_iters", "train.log_interval",
    "train.checkpoint_interval", "train.patience", "train.learning_rate", "train.grad_clip",
    "train.batch_size", "train.grad_accum", "train.compile", "train.max_minutes", "data.path",
    "log.tensorboard",
})
IDENTITY_SECTIONS = ("data", "model", "train")


def fingerprint(obj: Any) -> str:
    """sha256 of a JSON-able value in a canonical form."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _sync(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def link_or_copy(source: Path, target: Path) -> None:
    """A file unchanged since the previous checkpoint is shared with it, not written again."""
    try:
        os.link(source, target)
    except OSError:  # a filesystem without hard links
        shutil.copyfile(source, target)


def recover(run_dir: Path) -> None:
    """Finish what a killed ``commit`` left: restore a checkpoint caught between two renames, drop debris.

    Only a process that owns the run (it holds the run lock) may call this.
    """
    current, previous = run_dir / CURRENT, run_dir / PREVIOUS
    if previous.is_dir():
        if current.is_dir():
            shutil.rmtree(previous)
        else:
            previous.rename(current)
            atomic.fsync_dir(run_dir)
    for debris in run_dir.glob(f"{STAGING_PREFIX}*"):
        shutil.rmtree(debris, ignore_errors=True)


def commit(run_dir: Path, writers: dict[str, Writer], header: dict[str, Any]) -> None:
    """Write a checkpoint (``writers`` fill each file, in order) and make it the run's checkpoint."""
    recover(run_dir)
    current, previous = run_dir / CURRENT, run_dir / PREVIOUS
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=run_dir))
    try:
        files = {}
        for name, write in writers.items():
            path = staging / name
            write(path)
            path.chmod(0o666 & ~atomic.current_umask())  # some writers make private temporary files
            _sync(path)
            files[name] = {"bytes": path.stat().st_size, "sha256": _sha256(path)}
        manifest = {"format": FORMAT, **header, "files": files}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        _sync(staging / MANIFEST)
        staging.chmod(0o777 & ~atomic.current_umask())  # mkdtemp makes it private
        atomic.fsync_dir(staging)
        if current.exists():
            current.rename(previous)
        staging.rename(current)
        atomic.fsync_dir(run_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(previous, ignore_errors=True)


def preflight(run_dir: Path, checkpoint_bytes: int) -> None:
    """Refuse, before training starts, a run directory a checkpoint cannot be written to.

    During a save the old and the new checkpoint both exist, hence twice its size. A full
    disk that fills up later is still caught by the save itself, which leaves the previous
    checkpoint in place.
    """
    try:
        os.rmdir(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=run_dir))
        free = shutil.disk_usage(run_dir).free
    except OSError as err:
        raise GptinyError(f"cannot write to {run_dir}: {err.strerror}") from None
    needed = 2 * checkpoint_bytes
    if free < needed:
        raise GptinyError(
            f"not enough free space in {run_dir}: checkpoints need about {needed / 1e6:,.1f} MB and "
            f"{free / 1e6:,.1f} MB are free; free some space or choose another --runs-dir"
        )


def locate(run_dir: Path) -> Path:
    """The run's checkpoint directory, or an error that says what the run lacks."""
    for name in (CURRENT, PREVIOUS):
        if (run_dir / name).is_dir():
            return run_dir / name
    raise GptinyError(
        f"{run_dir} has no checkpoint yet (missing {CURRENT}/ with {', '.join(FILES)} and {MANIFEST}); "
        "training stopped before its first save"
    )


def saved_step(run_dir: Path) -> int | None:
    """The step of the run's checkpoint as its manifest says, unverified (for messages); None if none."""
    for name in (CURRENT, PREVIOUS):
        try:
            step = json.loads((run_dir / name / MANIFEST).read_text(encoding="utf-8"))["step"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        return step if isinstance(step, int) else None
    return None


def read(checkpoint: Path, names: Iterable[str]) -> dict[str, Any]:
    """The manifest, after checking that each file in ``names`` is exactly the one it describes."""
    names = list(names)
    path = checkpoint / MANIFEST
    if not path.is_file():
        missing = [n for n in (*names, MANIFEST) if not (checkpoint / n).is_file()]
        raise GptinyError(f"{checkpoint} is incomplete: missing {', '.join(missing)} (a save was cut short)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        files = manifest["files"]
        step = manifest["step"]
    except (UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise GptinyError(f"{path} is damaged: not a gptiny checkpoint manifest") from None
    if manifest.get("format") != FORMAT or not isinstance(files, dict) or not isinstance(step, int):
        raise GptinyError(f"{path} is not a {FORMAT} manifest; this checkpoint cannot be used")
    for name in names:
        _verify(checkpoint / name, files.get(name))
    return manifest


def _verify(path: Path, entry: Any) -> None:
    if not isinstance(entry, dict):
        raise GptinyError(f"{path.parent / MANIFEST} does not list {path.name}; the checkpoint is incomplete")
    if not path.is_file():
        raise GptinyError(f"{path} is missing; the checkpoint is incomplete")
    size, recorded = path.stat().st_size, entry.get("bytes")
    if size != recorded:
        said = f"{recorded:,}" if isinstance(recorded, int) else repr(recorded)
        raise GptinyError(f"{path} is damaged: {size:,} bytes where the manifest says {said} (truncated or replaced)")
    if _sha256(path) != entry.get("sha256"):
        raise GptinyError(f"{path} is damaged: its sha256 differs from the manifest's (corrupted or replaced)")


def identity(config: RunConfig) -> dict[str, Any]:
    """The config keys that make a run what it is, flat (``model.n_embd``): all but the resumable ones."""
    return {f"{section}.{key}": value
            for section, values in config.to_dict().items() if section in IDENTITY_SECTIONS
            for key, value in values.items() if f"{section}.{key}" not in RESUMABLE}


def header(step: int, config: RunConfig, vocab: Any, data_sha256: str | None) -> dict[str, Any]:
    """What a manifest records besides its files: the step and what the checkpoint belongs to
    (``vocab`` is the tokenizer's ``identity()``: a character vocabulary's characters, a BPE's merges)."""
    ident = identity(config)
    return {"step": step, "config": ident, "config_sha256": fingerprint(ident),
            "vocab_sha256": fingerprint(vocab), "data_sha256": data_sha256}


def check_config(manifest: dict[str, Any], config: RunConfig, config_path: Path, prefix: str = "") -> None:
    """Refuse a config (its keys starting with ``prefix``) that differs from the one the checkpoint recorded.

    A key newer than the checkpoint is accepted at its default value, so adding an option does not
    orphan existing runs.
    """
    recorded = manifest.get("config")
    if not isinstance(recorded, dict) or fingerprint(recorded) != manifest.get("config_sha256"):
        raise GptinyError(f"the manifest of {config_path.parent} is damaged: its config fingerprint is wrong")
    current, defaults = identity(config), identity(RunConfig())
    differences = []
    for key in sorted(set(recorded) | set(current)):
        if not key.startswith(prefix) or recorded.get(key) == current.get(key):
            continue
        if key not in recorded and current[key] == defaults.get(key):
            continue
        differences.append(f"{key} is {current.get(key)!r} here but {recorded.get(key)!r} in the checkpoint")
    if differences:
        raise GptinyError(f"{config_path} does not match the checkpoint it goes with: {'; '.join(differences)}")


def check_vocab(manifest: dict[str, Any], vocab: Any, vocab_path: Path) -> None:
    """Refuse a tokenizer (its ``identity()``) other than the one the weights were trained with."""
    if fingerprint(vocab) != manifest.get("vocab_sha256"):
        raise GptinyError(f"{vocab_path} does not match the weights: it is not the vocabulary they were "
                          "trained with")
