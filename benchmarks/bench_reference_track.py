"""On track? The first steps of the reference config: gptiny's recipe against the seed's.

    python benchmarks/bench_reference_track.py [--config configs/shakespeare.toml] [--steps 200] [--every 50]

`shakespeare.toml` runs 5000 steps, about four hours on two CPU cores, so its target (val ≤ 1.47)
needs a GPU. What a CPU can show is the start of the curve: the same model shape trained for
--steps steps by gptiny (its schedule still planned for the config's max_iters: warm-up, then
cosine decay; weight decay on matrices, clipping, bf16 where native) and by `seed_model.py` with
the seed's recipe (AdamW at a constant learning rate, fp32, eager), both measured on the whole
validation split every --every steps. Runs one after the other, never side by side.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.seed_model import SeedGPT  # noqa: E402
from gptiny_cli.config import RunConfig, load_config  # noqa: E402
from gptiny_cli.data import get_batch  # noqa: E402
from gptiny_cli.hardware.device import Precision  # noqa: E402
from gptiny_cli.prepare.corpus import prepare_corpus  # noqa: E402
from gptiny_cli.training.loop import train_step  # noqa: E402
from gptiny_cli.training.losses import full_split_loss  # noqa: E402
from gptiny_cli.training.session import Session, setup  # noqa: E402

CORPUS = ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"


def track_gptiny(s: Session, steps: int, every: int) -> list[tuple[int, float, float]]:
    """(step, whole-split val loss, seconds of training so far) every ``every`` steps."""
    m = s.config.model
    points, spent = [], 0.0
    while s.iter < steps:
        start = time.perf_counter()
        train_step(s)
        spent += time.perf_counter() - start
        if s.iter % every == 0:
            val = full_split_loss(s.model, s.corpus.val, m.block_size, 64, s.device, s.precision)
            s.model.train()
            points.append((s.iter, val, spent))
    return points


def track_seed(config: RunConfig, s: Session, steps: int, every: int) -> list[tuple[int, float, float]]:
    m, t = config.model, config.train
    vocab = s.corpus.vocab.size
    torch.manual_seed(t.seed)
    model = SeedGPT(vocab, m.n_embd, m.block_size, m.n_layer, m.n_head, m.dropout)
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.learning_rate)
    gen = torch.Generator().manual_seed(t.seed)
    fp32 = Precision(torch.float32, "cpu")
    points, spent = [], 0.0
    for step in range(1, steps + 1):
        start = time.perf_counter()
        x, y = get_batch(s.corpus.train, t.batch_size, m.block_size, gen)
        loss = F.cross_entropy(model(x).view(-1, vocab), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        spent += time.perf_counter() - start
        if step % every == 0:
            points.append((step, full_split_loss(model, s.corpus.val, m.block_size, 64, s.device, fp32), spent))
            model.train()
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "shakespeare.toml")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        prepare_corpus(args.corpus, Path(tmp) / "data")
        config = load_config(args.config, [f"data.path={Path(tmp) / 'data'}", "train.compile=false"])
        session = setup(config, device="cpu", runs_dir=Path(tmp) / "runs", name="track")
        ours = track_gptiny(session, args.steps, args.every)
        seed = track_seed(config, session, args.steps, args.every)
        session.close()
    print(f"config {args.config.name}: {session.info['parameters']:,} parameters, schedule of "
          f"{config.train.max_iters} steps, first {args.steps} run; val loss over the whole split")
    print(f"{'step':>5} {'gptiny':>8} {'seed':>8} {'gptiny s':>9} {'seed s':>8}")
    for (step, val, secs), (_, seed_val, seed_secs) in zip(ours, seed, strict=True):
        print(f"{step:>5} {val:>8.4f} {seed_val:>8.4f} {secs:>9.0f} {seed_secs:>8.0f}")


if __name__ == "__main__":
    main()
