"""Data-parallel throughput: tokens/s of one training process against N, on this machine.

    python benchmarks/bench_ddp.py [--config configs/shakespeare-cpu.toml] [--steps 40]
        [--layout 1x2 --layout 1x1 --layout 2x1] [--device cpu] [--set KEY=VALUE ...]

A layout PxT is P processes with T math threads each (OMP_NUM_THREADS). Each layout runs
`gptiny train` end to end in a subprocess (`--nproc P` when P > 1, so through torchrun and
gloo or nccl) on Tiny Shakespeare with the config's batch per process: the global batch grows
with P (weak scaling), as it does when a job is spread over more devices. The figure is the
median of the logged tokens/s (all processes together, measured by rank 0 over each logging
window, gradient all-reduce included) after the first window, which holds the warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"


def parse_layout(text: str) -> tuple[int, int]:
    procs, _, threads = text.partition("x")
    try:
        layout = int(procs), int(threads)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not PROCESSESxTHREADS, e.g. 2x1") from None
    if min(layout) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: processes and threads must be at least 1")
    return layout


def run_layout(procs: int, threads: int, args: argparse.Namespace, data: Path, runs: Path) -> list[float]:
    """The logged tokens/s of one training run after its first logging window."""
    runs_dir = runs / f"{procs}x{threads}"
    sets = [f"data.path={data}", f"train.max_iters={args.steps}", f"train.eval_interval={args.steps}",
            "train.eval_iters=1", f"train.log_interval={args.log_interval}", "train.max_minutes=0", *args.overrides]
    command = [sys.executable, "-m", "gptiny_cli", "train", str(args.config), "--device", args.device,
               "--runs-dir", str(runs_dir), *(x for s in sets for x in ("--set", s))]
    if procs > 1:
        command += ["--nproc", str(procs)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, timeout=3600)
    (run_dir,) = runs_dir.iterdir()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["tokens_per_sec"] for r in rows if "tokens_per_sec" in r][1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "shakespeare-cpu.toml")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--log-interval", type=int, default=5)
    parser.add_argument("--layout", dest="layouts", type=parse_layout, action="append",
                        help="PROCESSESxTHREADS, repeatable [default: 1x2, 1x1, 2x1]")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override")
    args = parser.parse_args()
    layouts = args.layouts or [(1, 2), (1, 1), (2, 1)]
    sys.path.insert(0, str(ROOT))
    from gptiny_cli.prepare.corpus import prepare_corpus

    with tempfile.TemporaryDirectory() as tmp:
        prepare_corpus(args.corpus, Path(tmp) / "data")
        results = {layout: run_layout(*layout, args, Path(tmp) / "data", Path(tmp) / "runs") for layout in layouts}
    print(f"config {args.config.name} on {args.device}, {args.steps} steps, batch per process as configured")
    print("| processes × threads | tokens/s (median) | per process | logging windows |")
    print("| --- | ---: | ---: | ---: |")
    for (procs, threads), figures in results.items():
        median = statistics.median(figures)
        print(f"| {procs} × {threads} | {median:,.0f} | {median / procs:,.0f} | {len(figures)} |")


if __name__ == "__main__":
    main()
