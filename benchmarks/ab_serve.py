"""The server's worker at an earlier commit and now, in one process, trial by trial.

    python benchmarks/ab_serve.py REV [--run RUN] [--config configs/shakespeare-cpu.toml]
                                      [--trials 12] [--tokens 1000] [--clients 16] [--precision int8]

On a machine whose speed drifts (this project's VM ran the same commit at 1,030 to 1,930
characters/s within an hour), two commits measured minutes apart compare the drift, not the
code. This loads the package as it was at REV (``git archive``, renamed ``gptiny_base``) beside
the working tree's and runs them in turn: each trial, one request and then --clients batched
requests through each package's ``Engine`` (the order of the two swapped every trial), each client
asking for --tokens characters. Printed: each side's medians, the ratio of --clients to one, and
per trial the new side's throughput over the old one's.

Without --run, makes a run of --config after one training step (speed does not depend on what
the weights are); both packages load the same run.
"""

from __future__ import annotations

import argparse
import importlib
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_sample import CORPUS, make_run  # noqa: E402


def old_package(rev: str, into: Path) -> None:
    """gptiny_cli at ``rev``, written to ``into``/gptiny_base with its imports renamed."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "gptiny_cli"], capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    (into / "gptiny_cli").rename(into / "gptiny_base")
    for source in (into / "gptiny_base").rglob("*.py"):
        source.write_text(source.read_text(encoding="utf-8").replace("gptiny_cli", "gptiny_base"), encoding="utf-8")


class Side:
    """One package's worker: builds an Engine on the run for each round, as gptiny serve does."""

    def __init__(self, package: str, run_dir: Path, precision: str) -> None:
        def module(name: str):
            return importlib.import_module(f"{package}.{name}")

        self.engine, self.job, self.completion = (module("serve.engine").Engine, module("serve.engine").Job,
                                                  module("serve.batch").Completion)
        vocab = module("data").Vocab.load(run_dir / "vocab.json")
        load_run, for_inference = module("store.runs").load_run, module("generation.inference").for_inference

        def build():
            model = for_inference(load_run(run_dir).model, precision, torch.device("cpu"))
            return model, vocab.chars, vocab.start_token

        self.build = build

    def chars_per_second(self, clients: int, tokens: int) -> float:
        done = threading.Semaphore(0)
        engine = self.engine.built_on_worker(self.build, max_active=clients)
        engine.start()
        start = time.perf_counter()
        for seed in range(clients):
            engine.submit(self.job(self.completion([1, 2, 3], tokens, seed=seed),
                                   lambda event: event[0] == "done" and done.release()))
        for _ in range(clients):
            done.acquire()
        seconds = time.perf_counter() - start
        engine.close()
        return clients * tokens / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rev", help="the earlier commit (anything git names: a hash, HEAD~2, a tag)")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "shakespeare-cpu.toml")
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="the text a one-step run is prepared from")
    parser.add_argument("--run", type=Path, help="an existing run instead of a one-step run of --config")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--precision", default="int8")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old_package(args.rev, Path(tmp))
        sys.path.insert(0, tmp)
        run_dir = args.run or make_run(args.config, args.corpus, Path(tmp))
        sides = {args.rev: Side("gptiny_base", run_dir, args.precision),
                 "now": Side("gptiny_cli", run_dir, args.precision)}
        for side in sides.values():
            side.chars_per_second(1, 200)  # warm-up, not counted
        one = {name: [] for name in sides}
        many = {name: [] for name in sides}
        for trial in range(args.trials):
            for name, side in (list(sides.items()) if trial % 2 == 0 else reversed(sides.items())):
                one[name].append(side.chars_per_second(1, args.tokens))
                many[name].append(side.chars_per_second(args.clients, args.tokens))
    for name in sides:
        ratios = sorted(m / o for m, o in zip(many[name], one[name], strict=True))
        print(f"{name:>10}: one request {statistics.median(one[name]):,.0f} chars/s, {args.clients} batched "
              f"{statistics.median(many[name]):,.0f}; {args.clients} against one {statistics.median(ratios):.2f}x "
              f"({ratios[0]:.2f}-{ratios[-1]:.2f})")
    new_over_old = [n / o for n, o in zip(many["now"], many[args.rev], strict=True)]
    print(f"{args.clients} batched, now over {args.rev}, per trial: " + " ".join(f"{r:.2f}" for r in new_over_old)
          + f" (median {statistics.median(new_over_old):.2f})")


if __name__ == "__main__":
    main()
