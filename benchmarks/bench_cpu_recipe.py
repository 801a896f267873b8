"""Quality per minute: train a config to the end and report wall time and whole-split val loss.

    python benchmarks/bench_cpu_recipe.py [--config configs/shakespeare-cpu.toml] [--lever NAME ...]
                                          [--seed N ...] [--set KEY=VALUE ...] [--check] [--keep DIR]

It runs the real CLI (`python -m gptiny_cli train`) in a subprocess on Tiny Shakespeare
prepared into a temporary directory, so the wall time includes start-up, every evaluation
and the final whole-split evaluation. Runs go one after another, never side by side (two
trainings sharing two cores would time each other): every lever asked for (``--lever``, the
named ``--set`` overrides in LEVERS; default: the config as it is), with every seed asked for
(default: the config's). Each run prints one JSON line; with several runs a summary follows.
``--check`` exits with status 1 when the mean whole-split val loss is worse than the one
recorded in ``benchmarks/baseline.json`` by more than its noise.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from baseline import check
from otherload import OtherLoad

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"

# The levers of issue 17, one key (or a pair that belongs together) each, against the config as
# it is ("base"). Run them one at a time on an idle machine; benchmarks/README.md has the table.
LEVERS: dict[str, list[str]] = {
    "base": [],
    "wsd-30": ['train.lr_decay="wsd"', "train.decay_fraction=0.3"],
    "wsd-45": ['train.lr_decay="wsd"', "train.decay_fraction=0.45"],
    "wsd-60": ['train.lr_decay="wsd"', "train.decay_fraction=0.6"],
    "wd-0.3": ["train.weight_decay=0.3"],
    "wd-1.0": ["train.weight_decay=1.0"],
    "wider-256": ["model.n_embd=256"],
    "deeper-6": ["model.n_layer=6"],
    "batch-64": ["train.batch_size=64"],
    "batch-16": ["train.batch_size=16"],
    "block-256-batch-16": ["model.block_size=256", "train.batch_size=16"],
    "block-64-batch-64": ["model.block_size=64", "train.batch_size=64"],
    "rope": ['model.position="rope"'],
    "lr-3e-3": ["train.learning_rate=3e-3", "train.muon_lr=0.03"],
    "gelu": ['model.activation="gelu"'],  # issue 26: the feed-forward llama.cpp's graphs run
}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_class() -> str:
    """The class torch computes as in the training subprocess (it inherits our environment)."""
    probe = "from gptiny_cli.hardware.device import cpu_class; print(cpu_class())"
    return subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True,
                          cwd=ROOT).stdout.strip()


def prepare(corpus: Path, out: Path) -> None:
    """Prepare the corpus with the real CLI, as a user would."""
    subprocess.run([sys.executable, "-m", "gptiny_cli", "prepare", str(corpus), "--out", str(out)],
                   check=True, stdout=subprocess.DEVNULL, cwd=ROOT)


def train_to_end(config: Path, data: Path, runs: Path, overrides: list[str],
                 quiet: bool = False) -> tuple[float, Path]:
    """Run `gptiny train` in a subprocess; return its wall time and the run directory it made."""
    sets = [arg for o in [f"data.path={data}", *overrides] for arg in ("--set", o)]
    runs.mkdir(parents=True, exist_ok=True)
    before = set(runs.iterdir())
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gptiny_cli", "train", str(config), *sets, "--runs-dir", str(runs)],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL if quiet else None)
    wall = time.perf_counter() - start
    (run_dir,) = set(runs.iterdir()) - before
    return wall, run_dir


def one_run(args: argparse.Namespace, lever: str, seed: int | None, data: Path, runs: Path) -> dict:
    """Train once with a lever's overrides (and a seed); what the run reached, as a JSON-able row."""
    overrides = [*LEVERS[lever], *args.overrides] + ([f"train.seed={seed}"] if seed is not None else [])
    with OtherLoad() as load:
        wall, run_dir = train_to_end(args.config, data, runs, overrides, quiet=True)
    info = json.loads((run_dir / "run.json").read_text())
    # The last estimate of both splits: their gap says whether the model is over- or under-fitting.
    rows = map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
    last = [row for row in rows if "val_loss" in row][-1]
    return {"lever": lever, "seed": seed, "overrides": overrides, "final_val_loss": info["final_val_loss"],
            "best_val_loss": info["best_val_loss"], "last_train_loss": round(last["train_loss"], 4),
            "last_val_loss": round(last["val_loss"], 4), "iters": info["iters"], "parameters": info["parameters"],
            "wall_s": round(wall, 1), "train_s": info["train_seconds"], "dtype": info["dtype"],
            "cpu_class": cpu_class(), "other_load": round(load.share, 3)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "shakespeare-cpu.toml")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--lever", action="append", choices=list(LEVERS), help="default: base")
    parser.add_argument("--seed", type=int, action="append", help="train.seed; repeat for several")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="applied to every run")
    parser.add_argument("--check", action="store_true", help="fail if the val loss regressed (baseline.json)")
    parser.add_argument("--keep", type=Path, help="keep the data and runs in this directory (default: a temporary one)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    rows = []
    print(f"machine: {cpu_name()}, {platform.system()}; config {args.config.name} {' '.join(args.overrides)}",
          file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        where = args.keep or Path(tmp)
        data = where / "data"
        prepare(args.corpus, data)
        for lever in args.lever or ["base"]:
            for seed in args.seed or [None]:
                rows.append(one_run(args, lever, seed, data, where / "runs"))
                print(json.dumps(rows[-1]), flush=True)
    for lever in dict.fromkeys(r["lever"] for r in rows):
        losses = [r["final_val_loss"] for r in rows if r["lever"] == lever]
        walls = [r["wall_s"] for r in rows if r["lever"] == lever]
        print(f"{lever}: whole-split val loss mean {statistics.mean(losses):.4f} "
              f"({', '.join(f'{x:.4f}' for x in losses)}), wall {', '.join(f'{w:.0f}' for w in walls)} s",
              file=sys.stderr)
    if args.check:
        ok, lines = check("bench_cpu_recipe", {"final_val_loss": statistics.mean(r["final_val_loss"] for r in rows)})
        print("\n".join(lines), file=sys.stderr)
        sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
