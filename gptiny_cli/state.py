"""Training state for exact resume, without pickle.

``state.safetensors`` holds the tensors (optimizer moments by parameter name, RNG
states as bytes); ``state.json`` holds the rest (step, best val loss, schedule
position, loss-scaler state). Both carry the step they belong to, so a pair torn
by a crash between the two writes is detected rather than silently mixed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from gptiny_cli import atomic
from gptiny_cli.errors import GptinyError

if TYPE_CHECKING:
    from gptiny_cli.train import Session

FORMAT = 1
TENSORS, META = "state.safetensors", "state.json"


def _param_names(model: torch.nn.Module) -> dict[int, str]:
    return {id(p): name for name, p in model.named_parameters()}


def _rng_tensors(s: Session) -> dict[str, torch.Tensor]:
    rng = {"rng.torch": torch.get_rng_state(), "rng.batches": s.batch_gen.get_state()}
    if s.device.type == "cuda":
        rng["rng.cuda"] = torch.cuda.get_rng_state(s.device)
    return rng


def save_state(s: Session) -> None:
    names = _param_names(s.model)
    tensors = _rng_tensors(s)
    for group in s.optimizer.param_groups:
        for param in group["params"]:
            for key, value in s.optimizer.state.get(param, {}).items():
                tensors[f"optim.{names[id(param)]}.{key}"] = value.detach().to("cpu").contiguous()
    step = str(s.iter)
    atomic.write_with(s.run_dir / TENSORS, lambda tmp: save_file(tensors, str(tmp), metadata={"iter": step}))
    meta = {
        "format": FORMAT,
        "iter": s.iter,
        "best_val": s.best_val if s.best_val != float("inf") else None,
        "evals_since_best": s.evals_since_best,
        "elapsed_s": s.elapsed_s,
        "scaler": s.scaler.state_dict() if s.scaler else None,
    }
    atomic.write_json(s.run_dir / META, meta)


def _read_tensors(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            return handle.metadata() or {}, {k: handle.get_tensor(k) for k in handle.keys()}
    except FileNotFoundError:
        raise GptinyError(f"{path} is missing; this run cannot be resumed") from None
    except (SafetensorError, OSError, ValueError) as err:
        raise GptinyError(f"{path} is not a valid safetensors file: {err}") from None


def load_state(s: Session) -> None:
    """Restore a session to exactly where ``save_state`` left it."""
    try:
        meta = json.loads((s.run_dir / META).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GptinyError(f"{s.run_dir / META} is missing; this run cannot be resumed") from None
    except ValueError:
        raise GptinyError(f"{s.run_dir / META} is damaged; this run cannot be resumed") from None
    header, tensors = _read_tensors(s.run_dir / TENSORS)
    if meta.get("format") != FORMAT or header.get("iter") != str(meta.get("iter")):
        raise GptinyError(f"{s.run_dir}: {TENSORS} and {META} belong to different steps; cannot resume")
    _load_optimizer(s, tensors)
    torch.set_rng_state(tensors["rng.torch"])
    s.batch_gen.set_state(tensors["rng.batches"])
    if s.device.type == "cuda" and "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda"], s.device)
    s.iter = int(meta["iter"])
    s.best_val = float("inf") if meta["best_val"] is None else float(meta["best_val"])
    s.evals_since_best = int(meta["evals_since_best"])
    s.elapsed_s = float(meta["elapsed_s"])
    if s.scaler and meta.get("scaler"):
        s.scaler.load_state_dict(meta["scaler"])


def _load_optimizer(s: Session, tensors: dict[str, torch.Tensor]) -> None:
    """Rebuild the optimizer's state dict (indexed by parameter order) from names."""
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
