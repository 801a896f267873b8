"""The figures of a benchmarks/gpu_check.sh run, as one JSON object on stdout.

Usage: python benchmarks/gpu_summary.py RUNS_DIR OUT_DIR. RUNS_DIR holds the one run the check
trained; OUT_DIR holds stages.txt and sample.txt. tokens/s and MFU are the medians over the
second half of the logged steps, after torch.compile and the first allocations.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

TARGET_VAL = 1.47  # nanoGPT's GPU recipe reaches 1.4697 on Tiny Shakespeare


def stage_seconds(stages: Path) -> dict[str, dict]:
    found = {}
    for line in stages.read_text().splitlines():
        match = re.fullmatch(r"(\w+) rc=(\d+) seconds=(\d+)", line.strip())
        if match:
            found[match[1]] = {"rc": int(match[2]), "seconds": int(match[3])}
    return found


def training(runs: Path) -> dict:
    runs_found = sorted(p for p in runs.glob("*") if (p / "run.json").is_file()) if runs.is_dir() else []
    if not runs_found:
        return {"error": f"no run in {runs}"}
    run_dir = runs_found[-1]
    info = json.loads((run_dir / "run.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "tokens_per_sec" in r]
    later = steps[len(steps) // 2 :]
    mfus = [r["mfu"] for r in later if r.get("mfu") is not None]
    final = info.get("final_val_loss")
    return {"status": info["status"], "device": info["device"], "dtype": info["dtype"], "iters": info["iters"],
            "train_seconds": info.get("train_seconds"),
            "tokens_per_sec_median": statistics.median(r["tokens_per_sec"] for r in later) if later else None,
            "mfu_median": statistics.median(mfus) if mfus else None,
            "best_val_loss": info.get("best_val_loss"), "final_val_loss": final,
            "target_val_loss": TARGET_VAL, "target_met": final is not None and final <= TARGET_VAL}


def sampling(sample: Path) -> dict:
    text = sample.read_text(errors="replace") if sample.is_file() else ""
    match = re.search(r"([\d,]+) characters in ([\d.]+) s \(([\d,]+) characters/s\)", text)
    if not match:
        return {"error": "no speed line in sample.txt"}
    return {"characters": int(match[1].replace(",", "")), "seconds": float(match[2]),
            "characters_per_sec": int(match[3].replace(",", ""))}


def main(runs: Path, out: Path) -> int:
    summary = {"stages": stage_seconds(out / "stages.txt"), "train": training(runs),
               "sample": sampling(out / "sample.txt")}
    print(json.dumps(summary, indent=2))
    return 0 if "error" not in summary["train"] else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
