"""A session's checkpoint: everything exact resume needs, saved and restored without pickle.

``state.safetensors`` holds the optimizer moments, by parameter name, and the weights' moving
average once it has begun (``training.average``). No random generator
state is needed: every random draw of a step (its batches and its dropout) is seeded by the
step itself (``data.step_seed``). ``state.json`` holds the rest: step, best val loss and the
evaluations since it, the learning rate the schedule gives the next step, elapsed time (a
time budget's schedule goes on from it), how long an evaluation and a step take, and the loss
scaler. The weights and the manifest that ties them together are ``checkpoint`` and
``manifest``'s business.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from gptiny_cli.data import load_vocab
from gptiny_cli.errors import GptinyError
from gptiny_cli.store import manifest, tensorfile
from gptiny_cli.training import average
from gptiny_cli.training.budget import fraction_spent
from gptiny_cli.training.schedule import scheduled_lr

if TYPE_CHECKING:
    from gptiny_cli.training.session import Session

FORMAT = 1


def _param_names(model: torch.nn.Module) -> dict[int, str]:
    # named_parameters() yields a tied tensor once, under its first name.
    return {id(p): name for name, p in model.named_parameters()}


def next_lr(s: Session) -> float:
    """For a time budget, approximately: the next step's rate depends on when it ends."""
    return scheduled_lr(s.config.train, s.iter, fraction_spent(s))


def state_tensors(s: Session) -> dict[str, torch.Tensor]:
    """The optimizer's tensors (``optim.NAME.SLOT``) and the weights' average, if any (``ema.NAME``)."""
    tensors = {}
    names = _param_names(s.model)
    for group in s.optimizer.param_groups:
        for param in group["params"]:
            for key, value in s.optimizer.state.get(param, {}).items():
                tensors[f"optim.{names[id(param)]}.{key}"] = value.detach().to("cpu").contiguous()
    if s.average is not None:
        for name, param in s.average.named_parameters():
            tensors[f"ema.{name}"] = param.detach().to("cpu").contiguous()
    return tensors


def state_meta(s: Session) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "iter": s.iter,
        "lr": next_lr(s),
        "best_val": s.best_val if math.isfinite(s.best_val) else None,
        "evals_since_best": s.evals_since_best,
        "elapsed_s": s.elapsed_s,
        "eval_s": s.eval_s,
        "step_s": s.step_s,
        "scaler": s.scaler.state_dict() if s.scaler else None,
    }


def save_checkpoint(s: Session, best: torch.nn.Module | None) -> None:
    """Commit a checkpoint of the session with ``best`` as its best weights (the training model or
    the weights' average); without it, the best weights are shared with the previous checkpoint."""
    run_dir = s.run_dir
    previous_best = run_dir / manifest.CURRENT / manifest.BEST
    tensors = state_tensors(s)
    meta = json.dumps(state_meta(s), indent=2) + "\n"

    def write_last(path: Path) -> None:
        tensorfile.write_weights(path, s.model, s.config.model, s.corpus.vocab.size)

    def write_best(path: Path) -> None:
        if best is not None and best is not s.model:
            tensorfile.write_weights(path, best, s.config.model, s.corpus.vocab.size)
            return
        source = path.with_name(manifest.LAST) if best is not None or not previous_best.is_file() else previous_best
        manifest.link_or_copy(source, path)

    writers = {
        manifest.LAST: write_last,
        manifest.BEST: write_best,
        manifest.STATE_TENSORS: lambda p: tensorfile.save_tensors(tensors, p, {"iter": str(s.iter)}),
        manifest.STATE_META: lambda p: p.write_text(meta, encoding="utf-8"),
    }
    header = manifest.header(s.iter, s.config, s.corpus.vocab.identity(), s.corpus.meta.get("sha256"))
    manifest.commit(run_dir, writers, header)


def load_checkpoint(s: Session) -> None:
    """Restore a freshly built session to exactly where the run's last checkpoint left it."""
    ckpt = manifest.locate(s.run_dir)
    recorded = manifest.read(ckpt, manifest.FILES)
    manifest.check_config(recorded, s.config, s.run_dir / "config.toml")
    for directory in (s.run_dir, s.corpus.directory):
        manifest.check_vocab(recorded, load_vocab(directory).identity(), directory / s.corpus.vocab.filename)
    if recorded.get("data_sha256") != s.corpus.meta.get("sha256"):
        raise GptinyError(
            f"the data at {s.corpus.directory} is not the corpus this run was trained on; point the run at "
            "its own prepared data with --set data.path=DIR"
        )
    tensorfile.check_weights(ckpt / manifest.BEST, s.model)  # carried into every later checkpoint
    tensorfile.load_weights(ckpt / manifest.LAST, s.model)
    meta = _read_meta(ckpt / manifest.STATE_META)
    if meta["iter"] != recorded["step"]:
        raise GptinyError(f"{ckpt / manifest.STATE_META} is for iteration {meta['iter']}, the manifest for "
                          f"{recorded['step']}")
    tensors = _read_state_tensors(ckpt / manifest.STATE_TENSORS, s, meta["iter"])
    _restore_optimizer(s, tensors)
    _restore_average(s, tensors)
    s.iter = meta["iter"]
    s.best_val = math.inf if meta["best_val"] is None else float(meta["best_val"])
    s.evals_since_best = meta["evals_since_best"]
    s.elapsed_s = float(meta["elapsed_s"])
    s.eval_s, s.step_s = float(meta.get("eval_s", 0.0)), float(meta.get("step_s", 0.0))
    if s.scaler and meta.get("scaler"):
        try:
            s.scaler.load_state_dict(meta["scaler"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as err:
            raise GptinyError(f"{ckpt / manifest.STATE_META} holds an invalid loss-scaler state: {err}") from None


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise GptinyError(f"{path} is damaged: not JSON") from None
    types = {"format": int, "iter": int, "best_val": (float, int, type(None)), "evals_since_best": int,
             "elapsed_s": (float, int), "eval_s": (float, int), "step_s": (float, int)}
    optional = {"eval_s": 0.0, "step_s": 0.0}  # absent from checkpoints before time budgets
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise GptinyError(f"{path} is not gptiny training state (format {FORMAT})")
    for key, kind in types.items():
        value = meta.get(key, optional.get(key))
        if not isinstance(value, kind) or isinstance(value, bool):
            raise GptinyError(f"{path} is damaged: {key} is {value!r}")
    return meta


def _expected_state(s: Session, entries: tensorfile.Entries) -> tensorfile.Entries:
    """What a state file for this session may hold: each parameter's moments."""
    params = dict(s.model.named_parameters())
    expected: tensorfile.Entries = {}
    for key, (shape, _) in entries.items():
        if key.startswith("rng."):
            expected[key] = (shape, "U8")  # generator states that checkpoints before per-step seeding carry
        elif key.startswith("ema.") and key.removeprefix("ema.") in params:
            param = params[key.removeprefix("ema.")]
            expected[key] = (tuple(param.shape), tensorfile.dtype_name(param.dtype))
        elif key.startswith("optim."):
            name, _, slot = key.removeprefix("optim.").rpartition(".")
            if name in params:
                param = params[name]
                scalar = slot == "step"  # AdamW counts steps in a float32 scalar
                expected[key] = ((), "F32") if scalar else (tuple(param.shape), tensorfile.dtype_name(param.dtype))
    return expected


def _missing_moments(s: Session, entries: tensorfile.Entries) -> list[str]:
    """Optimizer tensors a parameter lacks that the others updated the same way (its group) have."""
    slots: dict[str, set[str]] = {}
    for key in entries:
        if key.startswith("optim."):
            name, _, slot = key.removeprefix("optim.").rpartition(".")
            slots.setdefault(name, set()).add(slot)
    if not slots:
        return []  # saved before the first step
    names = _param_names(s.model)
    missing = []
    for group in s.optimizer.param_groups:
        group_names = [names[id(p)] for p in group["params"]]
        union = set().union(*(slots.get(n, set()) for n in group_names))
        for name in group_names:
            lacking = sorted(union - slots.get(name, set())) or ([] if name in slots else ["*"])
            missing.extend(f"optim.{name}.{slot}" for slot in lacking)
    return missing


def _missing_average(s: Session, entries: tensorfile.Entries) -> list[str]:
    """The weights' average is saved whole or not at all."""
    if not any(key.startswith("ema.") for key in entries):
        return []
    return [f"ema.{name}" for name in _param_names(s.model).values() if f"ema.{name}" not in entries]


def _read_state_tensors(path: Path, s: Session, step: int) -> dict[str, torch.Tensor]:
    metadata, entries = tensorfile.read_header(path)
    if metadata.get("iter") != str(step):
        raise GptinyError(f"{path} is for iteration {metadata.get('iter')}, state.json for {step}")
    tensorfile.compare_entries(path, entries, _expected_state(s, entries), "this model's training state")
    missing = _missing_moments(s, entries) + _missing_average(s, entries)
    if missing:
        raise GptinyError(f"{path} does not match this model's training state: missing {', '.join(missing)}")
    return tensorfile.read_tensors(path)


def _restore_optimizer(s: Session, tensors: dict[str, torch.Tensor]) -> None:
    """Rebuild the optimizer's state dict, which torch indexes by parameter order, from the names."""
    names = _param_names(s.model)
    state_dict = s.optimizer.state_dict()
    index = 0
    for group in s.optimizer.param_groups:
        for param in group["params"]:
            prefix = f"optim.{names[id(param)]}."
            entry = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            if entry:
                state_dict["state"][index] = entry
            index += 1
    s.optimizer.load_state_dict(state_dict)


def _restore_average(s: Session, tensors: dict[str, torch.Tensor]) -> None:
    if not any(key.startswith("ema.") for key in tensors):
        return
    s.average = average.new_average(s.model)
    with torch.no_grad():
        for name, param in s.average.named_parameters():
            param.copy_(tensors[f"ema.{name}"])
