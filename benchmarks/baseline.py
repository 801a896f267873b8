"""Regression checks: a benchmark's figures against the ones recorded in ``baseline.json``.

Each recorded figure has a value, the noise measured on this machine (how far two runs of the
same code apart) and which way is better; a figure worse than its value by more than the noise
fails the check.
"""

from __future__ import annotations

import json
from pathlib import Path

BASELINE = Path(__file__).resolve().parent / "baseline.json"


def check(bench: str, figures: dict[str, float], path: Path = BASELINE) -> tuple[bool, list[str]]:
    """Whether every measured figure of ``bench`` holds up, and a line per figure saying so."""
    recorded = json.loads(path.read_text(encoding="utf-8")).get(bench, {})
    ok, lines = True, []
    for name, measured in figures.items():
        record = recorded.get(name)
        if not record or record.get("value") is None or record.get("noise") is None:
            ok = False
            lines.append(f"{name}: {measured:.4g} measured, but {path.name} records no value and noise for it")
            continue
        value, noise = float(record["value"]), float(record["noise"])
        worse_by = value - measured if record.get("better", "higher") == "higher" else measured - value
        passed = worse_by <= noise
        ok = ok and passed
        verdict = "ok" if passed else "REGRESSION"
        lines.append(f"{name}: {measured:.4g} against {value:.4g} ± {noise:.4g} recorded: {verdict}")
    return ok, lines
