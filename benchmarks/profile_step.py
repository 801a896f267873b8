"""Where a training step's time goes: torch.profiler's top operators by self CPU time.

    python benchmarks/profile_step.py [--config configs/shakespeare.toml] [--steps 3] [--top 25]

Builds the config's session as ``gptiny train`` would (on the CPU, no torch.compile), takes one
warm-up step, then profiles ``--steps`` steps of ``train_step`` and prints the operators with the
most self CPU time, each with its share of the total. Shares stay meaningful on a busy machine,
where absolute times do not.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gptiny_cli.config import load_config  # noqa: E402
from gptiny_cli.prepare.corpus import prepare_corpus  # noqa: E402
from gptiny_cli.training.loop import train_step  # noqa: E402
from gptiny_cli.training.session import setup  # noqa: E402

CORPUS = ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "shakespeare.toml")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        prepare_corpus(args.corpus, Path(tmp) / "data")
        config = load_config(args.config, [f"data.path={Path(tmp) / 'data'}", "train.compile=false",
                                           *args.overrides])
        session = setup(config, device="cpu", runs_dir=Path(tmp) / "runs", name="profile")
        train_step(session)  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.steps):
                train_step(session)
        session.close()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    print(f"{args.config.name} {' '.join(args.overrides)}: {args.steps} steps, {torch.get_num_threads()} threads, "
          f"self CPU {total / 1e6 / args.steps:.2f} s per step")
    print("| operator | calls per step | self CPU share | self CPU per step |\n| --- | ---: | ---: | ---: |")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.top]:
        print(f"| `{e.key}` | {e.count // args.steps} | {e.self_cpu_time_total / total:.1%} | "
              f"{e.self_cpu_time_total / 1e3 / args.steps:,.0f} ms |")


if __name__ == "__main__":
    main()
