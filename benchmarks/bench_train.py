"""Training throughput: gptiny's trainer against the plain seed implementation, side by side.

    python benchmarks/bench_train.py [--config configs/shakespeare.toml] [--steps 6] [--rounds 3]
                                     [--check]

Both train the same shapes on Tiny Shakespeare, in one process, in alternating rounds of a few
optimizer steps each (after one warm-up step each), so that a change in the machine's speed
touches both; the speed-up of a round is the seed's time per step over gptiny's, and the figure
is the median over the rounds. Also printed: tokens per second and model FLOPs utilisation
(achieved FLOP/s over the peak FLOP/s measured for the number format each one computes in).
``--check`` exits with status 1 when the speed-up is below the one recorded in
``benchmarks/baseline.json`` by more than its noise.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.baseline import check  # noqa: E402
from benchmarks.seed_model import SeedGPT  # noqa: E402
from gptiny_cli.config import load_config  # noqa: E402
from gptiny_cli.data import get_batch  # noqa: E402
from gptiny_cli.hardware import peaks  # noqa: E402
from gptiny_cli.prepare.corpus import prepare_corpus  # noqa: E402
from gptiny_cli.training.loop import train_step  # noqa: E402
from gptiny_cli.training.session import setup  # noqa: E402

CORPUS = ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"


def time_steps(step, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def seed_step(config, corpus_train, vocab_size: int):
    """One optimizer step of the seed model, the way it was first written."""
    m, t = config.model, config.train
    torch.manual_seed(0)
    model = SeedGPT(vocab_size, m.n_embd, m.block_size, m.n_layer, m.n_head, m.dropout)
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.learning_rate)
    gen = torch.Generator().manual_seed(0)

    def step() -> None:
        x, y = get_batch(corpus_train, t.batch_size, m.block_size, gen)
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, vocab_size), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "shakespeare.toml")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per round and implementation")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds of gptiny then seed")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override for gptiny")
    parser.add_argument("--skip-seed", action="store_true", help="time gptiny only")
    parser.add_argument("--check", action="store_true", help="fail if the speed-up regressed (baseline.json)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.check and args.skip_seed:
        sys.exit("--check compares against the seed: drop --skip-seed")
    ours, seed = [], []
    with tempfile.TemporaryDirectory() as tmp:
        prepare_corpus(args.corpus, Path(tmp) / "data")
        config = load_config(args.config, [f"data.path={Path(tmp) / 'data'}", "train.compile=false",
                                           *args.overrides])
        session = setup(config, device="cpu", runs_dir=Path(tmp) / "runs", name="bench")
        tokens = config.train.batch_size * config.train.grad_accum * config.model.block_size

        def ours_step() -> None:
            train_step(session)

        seeds = None if args.skip_seed else seed_step(config, session.corpus.train, session.corpus.vocab.size)
        for step in (ours_step, seeds):  # warm-up: allocator, kernels, autocast caches
            if step:
                step()
        for _ in range(args.rounds):
            ours.append(time_steps(ours_step, args.steps))
            if seeds:
                seed.append(time_steps(seeds, args.steps))
        session.close()
    fp32_peak = peaks.peak(torch.device("cpu"), torch.float32).flops
    print(f"config {args.config.name}: {session.info['parameters']:,} parameters, {tokens:,} tokens/step, "
          f"{torch.get_num_threads()} threads, {args.rounds} round(s) of {args.steps} timed steps each")
    for label, times, peak, fmt in (("seed (fp32, per-head, eager)", seed, fp32_peak, "float32"),
                                    ("gptiny", ours, session.peak_flops, session.precision.name)):
        if times:
            seconds = min(times)
            tps = tokens / seconds
            mfu = tps * session.flops_per_token / peak
            print(f"{label:32s} {fmt:9s} {seconds:6.2f} s/step (best round) {tps:9,.0f} tok/s  MFU {mfu:5.1%} "
                  f"(peak {peak / 1e9:,.0f} GFLOP/s)")
    if not seed:
        return
    ratios = [s / o for s, o in zip(seed, ours, strict=True)]
    speedup = statistics.median(ratios)
    print(f"speed-up per round: {', '.join(f'{r:.2f}x' for r in ratios)}; median {speedup:.2f}x")
    if args.check:
        ok, lines = check("bench_train", {"speedup": speedup})
        print("\n".join(lines))
        sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
