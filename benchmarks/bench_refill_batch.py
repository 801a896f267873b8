"""What a refill of a full learned-position cache costs: alone, with and without logits, and together.

    python benchmarks/bench_refill_batch.py [--run RUN] [--config configs/shakespeare-cpu.toml]
                                            [--precision int8] [--rounds 12] [--streams 1 2 4 8 16]

Without --run, makes a run of --config after one training step (speed does not depend on what
the weights are). On that model, in --precision, all on one thread of its own (as the server's
worker), rounds in turn, medians:

- one refill as a prompt pass that also makes the logits (the model's forward pass, as refills
  were made before) against one that stores the keys and values only (``Decoder.prefill`` with
  ``logits=False``, what ``Rows.ready`` does now);
- ``decode.refill_together`` of 1, 2, 4, ... full streams of one sample each, and each time over
  the time of one: what a server's batch pays for refilling that many streams at once.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_sample import CORPUS, make_run  # noqa: E402
from gptiny_cli.generation.decode import Decoder, Pool, Rows, refill, refill_together  # noqa: E402
from gptiny_cli.generation.inference import for_inference  # noqa: E402
from gptiny_cli.store.runs import load_run  # noqa: E402


def milliseconds(work, passes: int = 10) -> float:
    start = time.perf_counter()
    for _ in range(passes):
        work()
    return (time.perf_counter() - start) / passes * 1000


@torch.inference_mode()
def measure(run_dir: Path, precision: str, rounds: int, streams: list[int]) -> None:
    model = for_inference(load_run(run_dir).model, precision, torch.device("cpu"))
    decoder, block = Decoder(model), model.block_size
    pool = Pool(model, max(streams), torch.device("cpu"))
    rows = [Rows(model, decoder, pool, torch.randint(model.vocab_size, (1, block)), i) for i in range(max(streams))]
    fed = [list(r.recent) for r in rows]
    keep = len(refill(rows[0].recent, block))
    if not keep:
        raise SystemExit(f"a block of {block} refills from the new token alone: there is no prompt pass to time")
    context = torch.randint(model.vocab_size, (1, keep))

    def together(n: int) -> None:
        for r, recent in zip(rows, fed, strict=True):  # full again, as each was before its refill
            r.recent, r.length = list(recent), block
        refill_together(decoder, pool, rows[:n])

    times: dict[str, list[float]] = {"logits": [], "keys": [], **{str(n): [] for n in streams}}
    for _ in range(rounds):
        times["logits"].append(milliseconds(lambda: decoder.prefill(context, pool, 0)))
        times["keys"].append(milliseconds(lambda: decoder.prefill(context, pool, 0, logits=False)))
        for n in streams:
            times[str(n)].append(milliseconds(lambda n=n: together(n)))
    ms = {name: statistics.median(t) for name, t in times.items()}
    print(f"{run_dir.name}: {precision}, block {block}, a refill keeps {keep} positions; medians of {rounds} rounds")
    print(f"one refill with logits {ms['logits']:.2f} ms, keys and values only {ms['keys']:.2f} ms "
          f"({ms['keys'] / ms['logits']:.2f})")
    one = ms[str(streams[0])]
    print("streams refilled together: " + ", ".join(f"{n}: {ms[str(n)]:.2f} ms ({ms[str(n)] / one:.1f}x)"
                                                    for n in streams))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "shakespeare-cpu.toml")
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="the text a one-step run is prepared from")
    parser.add_argument("--run", type=Path, help="an existing run instead of a one-step run of --config")
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run or make_run(args.config, args.corpus, Path(tmp))
        # its own thread, which ends with its OpenMP pool: the main thread builds nothing (bench_serve.py)
        worker = threading.Thread(target=measure, args=(run_dir, args.precision, args.rounds, args.streams))
        worker.start()
        worker.join()


if __name__ == "__main__":
    main()
