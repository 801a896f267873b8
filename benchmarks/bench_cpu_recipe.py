"""Quality per minute: train a config to the end and report wall time and whole-split val loss.

    python benchmarks/bench_cpu_recipe.py [--config configs/shakespeare-cpu.toml] [--set KEY=VALUE ...]

It runs the real CLI (`python -m gptiny_cli train`) in a subprocess on Tiny Shakespeare
prepared into a temporary directory, so the wall time includes start-up, every evaluation
and the final whole-split evaluation.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "shakespeare-cpu.toml")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        prepare(args.corpus, data)
        wall, run_dir = train_to_end(args.config, data, Path(tmp) / "runs", args.overrides)
        info = json.loads((run_dir / "run.json").read_text())
    print(f"\nmachine: {cpu_name()}, {platform.system()}, torch {info['torch_version']}, {info['dtype']}")
    print(f"config: {args.config.name} {' '.join(args.overrides)}")
    print(f"iterations {info['iters']}, parameters {info['parameters']:,}")
    print(f"wall time {wall:.0f} s (training loop {info['train_seconds']:.0f} s)")
    print(f"best val loss (estimate) {info['best_val_loss']:.4f}, "
          f"final val loss (whole split, best weights) {info['final_val_loss']:.4f}")


if __name__ == "__main__":
    main()
