"""Training throughput: gptiny's trainer against the plain seed implementation, side by side.

    python benchmarks/bench_train.py [--config configs/shakespeare.toml] [--steps 6]

Both train the same shapes on Tiny Shakespeare for a few optimizer steps after one warm-up
step; the figures are tokens per second and model FLOPs utilisation (achieved FLOP/s over
the peak FLOP/s measured for the number format each one computes in).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.seed_model import SeedGPT  # noqa: E402
from gptiny_cli.config import load_config  # noqa: E402
from gptiny_cli.data import get_batch  # noqa: E402
from gptiny_cli.hardware import peaks  # noqa: E402
from gptiny_cli.prepare.corpus import prepare_corpus  # noqa: E402
from gptiny_cli.training.loop import train_step  # noqa: E402
from gptiny_cli.training.session import setup  # noqa: E402

CORPUS = ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"


def time_steps(step, steps: int) -> float:
    step()  # warm-up: allocator, kernels, autocast caches
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def bench_seed(config, corpus_train, vocab_size: int, steps: int) -> float:
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

    return time_steps(step, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "shakespeare.toml")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override for gptiny")
    parser.add_argument("--skip-seed", action="store_true", help="time gptiny only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        prepare_corpus(args.corpus, Path(tmp) / "data")
        config = load_config(args.config, [f"data.path={Path(tmp) / 'data'}", "train.compile=false",
                                           *args.overrides])
        session = setup(config, device="cpu", runs_dir=Path(tmp) / "runs", name="bench")
        tokens = config.train.batch_size * config.train.grad_accum * config.model.block_size
        ours = time_steps(lambda: train_step(session), args.steps)
        seed = math.nan if args.skip_seed else bench_seed(
            config, session.corpus.train, session.corpus.vocab.size, args.steps)
    fp32_peak = peaks.peak(torch.device("cpu"), torch.float32).flops
    print(f"config {args.config.name}: {session.info['parameters']:,} parameters, {tokens:,} tokens/step, "
          f"{torch.get_num_threads()} threads, {args.steps} timed steps each")
    for label, seconds, peak, fmt in (("seed (fp32, per-head, eager)", seed, fp32_peak, "float32"),
                                      ("gptiny", ours, session.peak_flops, session.precision.name)):
        tps = tokens / seconds
        mfu = tps * session.flops_per_token / peak
        print(f"{label:32s} {fmt:9s} {seconds:6.2f} s/step {tps:9,.0f} tok/s  MFU {mfu:5.1%} "
              f"(peak {peak / 1e9:,.0f} GFLOP/s)")
    print(f"speed-up: {seed / ours:.2f}x")


if __name__ == "__main__":
    main()
