"""Checkpoint cost: how long a save (write, fsync, sha256, manifest, rename) and a verified load take.

    python benchmarks/bench_checkpoint.py [--config configs/shakespeare.toml] [--repeats 5]

Builds the config's model and optimizer on the CPU, takes two optimizer steps so that every
moment exists, then times, each ``--repeats`` times in a run directory on this disk:
a save that writes new best weights, a save that shares the previous best (a hard link), and
what ``--resume`` does to load it back (sha256 of every file, header and shape checks, the
tensors copied in). The table gives the fastest and the median.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gptiny_cli.config import load_config  # noqa: E402
from gptiny_cli.prepare.corpus import prepare_corpus  # noqa: E402
from gptiny_cli.store import manifest  # noqa: E402
from gptiny_cli.training import state  # noqa: E402
from gptiny_cli.training.loop import train_step  # noqa: E402
from gptiny_cli.training.session import setup  # noqa: E402

CORPUS = ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"


def timed(action, repeats: int) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "shakespeare.toml")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:  # on the disk runs/ lives on, not a tmpfs
        prepare_corpus(args.corpus, Path(tmp) / "data")
        config = load_config(args.config, [f"data.path={Path(tmp) / 'data'}", "train.compile=false",
                                           "train.batch_size=2"])
        session = setup(config, device="cpu", runs_dir=Path(tmp) / "runs", name="bench")
        for _ in range(2):
            train_step(session)
        best = timed(lambda: state.save_checkpoint(session, best=session.model), args.repeats)
        shared = timed(lambda: state.save_checkpoint(session, best=None), args.repeats)
        ckpt = session.run_dir / manifest.CURRENT
        sizes = {p.name: p.stat().st_size for p in ckpt.iterdir()}

        def load() -> None:
            state.load_checkpoint(session)

        loaded = timed(load, args.repeats)
        session.close()
    params = sum(p.numel() for p in session.model.parameters())
    print(f"config {args.config.name}: {params:,} parameters, torch {torch.__version__}, "
          f"{args.repeats} repeats each")
    print("checkpoint files: " + ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in sorted(sizes.items())))
    for label, (fastest, median) in (("save, new best weights", best), ("save, best shared by a hard link", shared),
                                     ("verified load (resume)", loaded)):
        print(f"{label:34s} fastest {fastest:6.3f} s  median {median:6.3f} s")


if __name__ == "__main__":
    main()
