"""``gptiny compare``: runs side by side, with only the config keys in which they differ.

A sweep directory (or any directory of runs) stands for all its runs. Each run: its differing keys,
parameters, steps, tokens seen, training time, best and whole-split val loss, and the latter in bits
per character. Read from config.toml, run.json and metrics.jsonl only: no torch, no weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gptiny_cli.config import read_toml
from gptiny_cli.errors import GptinyError
from gptiny_cli.store import runs


def expand(specs: list[str], runs_dir: Path) -> list[Path]:
    """Run directories from RUN, `latest` or a directory of runs (a sweep), each once, in the order given."""
    found: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if spec != "latest" and path.is_dir() and not (path / "run.json").is_file():
            inside = runs.run_dirs(path)
            if not inside:
                raise GptinyError(f"{spec} holds no runs (no run.json in it or one level down)")
            found.extend(inside)
        else:
            found.append(runs.resolve_run(spec, runs_dir))
    unique = list({p.resolve(): p for p in reversed(found)}.values())[::-1]  # the first of each, in order
    if len(unique) < 2:
        raise GptinyError("compare needs at least two runs (give two runs, or a sweep)")
    return unique


def _flat(config: dict[str, Any]) -> dict[str, Any]:
    return {f"{section}.{key}": value for section, table in config.items() if isinstance(table, dict)
            for key, value in table.items()}


def _row(run_dir: Path, runs_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    if not (run_dir / "config.toml").is_file():
        raise GptinyError(f"{run_dir} has no config.toml; is it a gptiny run directory?")
    config = _flat(read_toml(run_dir / "config.toml"))
    info = runs.read_run_info(run_dir)
    tokens = None
    if isinstance(info.get("iters"), int) and isinstance(info.get("global_batch"), int):
        tokens = info["iters"] * info["global_batch"] * int(config.get("model.block_size", 0))
    final = info.get("final_val_loss")
    try:
        name = run_dir.resolve().relative_to(Path(runs_dir).resolve()).as_posix()
    except ValueError:
        name = str(run_dir)
    return config, {"run": name, "path": str(run_dir), "status": info.get("status"),
                    "parameters": info.get("parameters"),
                    "steps": info.get("iters"), "tokens": tokens, "seconds": info.get("train_seconds"),
                    "best_val": info.get("best_val_loss"), "val": final, "tokenizer": info.get("tokenizer", "char"),
                    **dict(zip(("bits_per_char", "bits_per_byte"), runs.val_bits(info, final), strict=True))}


def compare(specs: list[str], runs_dir: Path) -> dict[str, Any]:
    """``{"keys": [the differing config keys], "runs": [one row per run, with "config": its values of them]}``."""
    loaded = [_row(d, runs_dir) for d in expand(specs, runs_dir)]
    every = sorted({key for config, _ in loaded for key in config})
    differ = [k for k in every if len({repr(config.get(k)) for config, _ in loaded}) > 1]
    for config, row in loaded:
        row["config"] = {k: config.get(k) for k in differ}
    return {"keys": differ, "runs": [row for _, row in loaded]}
