"""What a sweep found: ``results.jsonl`` (every trial), the leaderboard and ``best.toml``.

A point is *tied with the best* when the difference of its mean from the best mean is smaller than
twice the pooled standard error, 2 × sqrt(s_a²/n_a + s_b²/n_b): seed noise could explain it. With one
seed there is no noise estimate, and only the best point is marked.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from gptiny_cli.config import config_from_dict, read_toml
from gptiny_cli.store import atomic

STATES = {"COMPLETE": "done", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}


def rows(study) -> list[dict[str, Any]]:
    """One row per trial of the study, in trial order."""
    found = []
    for t in study.get_trials(deepcopy=False):
        state = STATES.get(t.state.name, t.state.name.lower())
        if state == "running" and t.user_attrs.get("interrupted"):
            state = "interrupted"
        seeds = list(t.user_attrs.get("seed_vals", []))
        row = {"trial": t.number, "values": dict(t.params), "state": state, "seeds": seeds,
               "steps": t.user_attrs.get("steps", 0), "val": t.value if state == "done" else None,
               "parameters": t.user_attrs.get("parameters"), "worker": t.user_attrs.get("worker"),
               "runs": [f"t{t.number:03d}-s{k}" for k in range(len(seeds))]}
        row["std"] = _std(seeds)
        if "reason" in t.user_attrs:
            row["reason"] = t.user_attrs["reason"]
        found.append(row)
    return found


def _std(values: list[float]) -> float | None:
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def write(sweep) -> None:
    """``results.jsonl`` from the study (so every worker's trials are in it) and ``best.toml``, both atomic."""
    found = rows(sweep.study)
    atomic.write_text(sweep.dir / "results.jsonl", "".join(json.dumps(r) + "\n" for r in found))
    board = leaderboard(found)
    if board:
        write_best(sweep.config, board[0]["values"], sweep.dir / "best.toml")


def read(sweep_dir: Path) -> list[dict[str, Any]]:
    path = Path(sweep_dir) / "results.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def leaderboard(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Done trials, best mean first, each with ``tied``: not distinguishable from the best (the rule above)."""
    done = sorted((r for r in found if r["state"] == "done" and r["val"] is not None), key=lambda r: r["val"])
    if not done:
        return []
    best = done[0]
    for r in done:
        r["tied"] = r is best or _tied(best, r)
    return done


def _se2(r: dict[str, Any]) -> float | None:
    return None if r.get("std") is None else r["std"] ** 2 / len(r["seeds"])


def _tied(best: dict[str, Any], other: dict[str, Any]) -> bool:
    a, b = _se2(best), _se2(other)
    if a is None or b is None:
        return False
    return other["val"] - best["val"] < 2 * math.sqrt(a + b)


def write_best(config: Path, values: dict[str, Any], target: Path) -> None:
    """The sweep's config with the best point's values, ready for ``gptiny train``."""
    raw = read_toml(config)
    for key, value in values.items():
        section, _, name = key.partition(".")
        raw.setdefault(section, {})[name] = value
    text = config_from_dict(raw).to_toml()
    swept = ", ".join(f"{k} = {v!r}" for k, v in values.items())
    atomic.write_text(target, f"# the best point of the sweep in this directory: {swept}\n{text}")
