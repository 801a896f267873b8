"""Levers tried in this process beside a real run before they earn a place in gptiny: averages of
the weights, and dropout late in training only.

    python benchmarks/bench_prototype.py [--config configs/shakespeare-cpu.toml] [--seed N]
                                         [--ema DECAY@FRACTION ...] [--late-dropout P@FRACTION]
                                         [--set KEY=VALUE ...]

Trains the config as ``gptiny train`` does (the same session and loop, in this process, on
Tiny Shakespeare prepared into a temporary directory), with a hook after every optimizer step:

- ``--ema 0.998@0.5`` keeps an exponential moving average of the weights from half of the time
  budget (or of max_iters) on, mixing in 0.2% of the new weights per step. The averages ride on
  the same run, so their comparison with the run's own weights is paired: no seed noise between
  them. (This is how ``train.ema_decay`` was chosen; it is now part of gptiny.)
- ``--late-dropout 0.1@0.6`` turns dropout on (p = 0.1 on the embeddings and both residual
  branches) once 60% of the run is done. This changes the run, so compare it across runs.

At the end it prints one JSON line: the whole-split val loss of the run's best weights (what
``gptiny train`` reports) and of each average.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gptiny_cli.config import load_config  # noqa: E402
from gptiny_cli.prepare.corpus import prepare_corpus  # noqa: E402
from gptiny_cli.training.loop import run  # noqa: E402
from gptiny_cli.training.losses import full_split_loss  # noqa: E402
from gptiny_cli.training.session import Session, setup  # noqa: E402

CORPUS = ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"


class Average:
    """An EMA of a model's weights, begun once training has spent ``start`` of its length."""

    def __init__(self, spec: str) -> None:
        decay, start = spec.split("@")
        self.spec, self.decay, self.start = spec, float(decay), float(start)
        self.model: torch.nn.Module | None = None

    @torch.no_grad()
    def update(self, model: torch.nn.Module, spent: float) -> None:
        if spent < self.start:
            return
        if self.model is None:
            self.model = copy.deepcopy(model)
            return
        for mine, theirs in zip(self.model.parameters(), model.parameters(), strict=True):
            mine.lerp_(theirs, 1 - self.decay)


class LateDropout:
    """Dropout p on every dropout module once ``start`` of the run is done."""

    def __init__(self, spec: str) -> None:
        p, start = spec.split("@")
        self.p, self.start = float(p), float(start)

    def update(self, model: torch.nn.Module, spent: float) -> None:
        if spent >= self.start:
            for module in model.modules():
                if isinstance(module, torch.nn.Dropout):  # the CPU kernel's too
                    module.p = self.p


def spent(s: Session, began: float) -> float:
    """The share of the run spent: of the time budget if there is one, else of max_iters."""
    t = s.config.train
    if t.max_minutes:
        return (time.perf_counter() - began) / (t.max_minutes * 60)
    return s.iter / t.max_iters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "shakespeare-cpu.toml")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--ema", action="append", default=[], help="DECAY@FRACTION, e.g. 0.998@0.5")
    parser.add_argument("--late-dropout", help="P@FRACTION, e.g. 0.1@0.6")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    averages = [Average(spec) for spec in args.ema]
    late = LateDropout(args.late_dropout) if args.late_dropout else None
    with tempfile.TemporaryDirectory() as tmp:
        prepare_corpus(args.corpus, Path(tmp) / "data")
        seed = [f"train.seed={args.seed}"] if args.seed is not None else []
        config = load_config(args.config, [f"data.path={Path(tmp) / 'data'}", *seed, *args.overrides])
        s = setup(config, device="auto", runs_dir=Path(tmp) / "runs", name="prototype")
        began, step = time.perf_counter(), s.optimizer.step

        def step_and_average(*a, **k):
            result = step(*a, **k)
            done = spent(s, began)
            for average in averages:
                average.update(s.model, done)
            if late:
                late.update(s.model, done)
            return result

        s.optimizer.step = step_and_average
        *_, finished = run(s)
        m, t = config.model, config.train
        row = {"config": args.config.name, "overrides": args.overrides, "late_dropout": args.late_dropout,
               "seed": t.seed, "iters": finished.iter, "final_val_loss": round(finished.final_val_loss, 4)}
        for average in averages:
            if average.model is not None:
                loss = full_split_loss(average.model, s.corpus.val, m.block_size, t.batch_size, s.device, s.precision)
                row[f"ema {average.spec}"] = round(loss, 4)
    print(json.dumps(row))


if __name__ == "__main__":
    main()
