"""What a learned-position model's refill policy costs in quality and buys in speed.

    python benchmarks/bench_refill.py RUN [--data DIR] [--keep 0 15 31 47 63 95] [--precision int8]

When a learned-position cache is full, generation keeps its newest k tokens (``decode.refill``)
and feeds them again from position 0; the text after that is predicted from k + 1 to block_size
characters of context. For each k this prints:

- the validation loss of text decoded that way: the whole split scored in windows of the block
  at a stride of block_size - k, the first k positions of each window context only (what the
  cache holds after a refill), the rest scored; every target once, in float32;
- the time of one refill, a prompt pass of k positions into a cache row (``Decoder.prefill``) in
  --precision, best of 5 rounds, and that time per character between two refills.

RUN should be trained (the loss of a one-step run says nothing); --data defaults to the data
directory the run's config names, from the current folder.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gptiny_cli.data import load_corpus  # noqa: E402
from gptiny_cli.generation.decode import Decoder, Pool  # noqa: E402
from gptiny_cli.generation.inference import for_inference  # noqa: E402
from gptiny_cli.store.runs import load_run  # noqa: E402


@torch.inference_mode()
def decoded_loss(model: torch.nn.Module, val: torch.Tensor, keep: int) -> float:
    """Mean loss over the split of predictions made with keep + 1..block_size tokens of context."""
    T = model.block_size
    starts = torch.arange(0, len(val) - T - 1, T - keep)
    total, count = 0.0, 0
    for i in range(0, len(starts), 64):
        windows = val[starts[i : i + 64, None] + torch.arange(T + 1)]  # (B, T + 1)
        logits = model(windows[:, :-1])[:, keep:]  # (B, T - keep, V)
        total += F.cross_entropy(logits.transpose(1, 2), windows[:, 1 + keep :], reduction="sum").item()
        count += logits.shape[0] * logits.shape[1]
    return total / count


@torch.inference_mode()
def refill_seconds(model: torch.nn.Module, keep: int, rounds: int = 5, passes: int = 50) -> float:
    decoder, pool = Decoder(model), Pool(model, 1, torch.device("cpu"))
    context = torch.randint(0, model.vocab_size, (1, keep))
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(passes):
            decoder.prefill(context, pool, 0)
        best = min(best, (time.perf_counter() - start) / passes)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--data", type=Path, help="a prepared data directory (default: the run's)")
    parser.add_argument("--keep", type=int, nargs="+", default=[0, 15, 31, 47, 63, 95])
    parser.add_argument("--precision", default="int8")
    args = parser.parse_args()
    loaded = load_run(args.run)
    val = load_corpus(args.data or Path(loaded.config.data.path)).val.long()
    scorer = loaded.model.float().eval()
    losses = {k: decoded_loss(scorer, val, k) for k in args.keep}
    fast = for_inference(load_run(args.run).model, args.precision, torch.device("cpu"))
    T = fast.block_size
    print(f"{args.run.name}: block {T}, {len(val):,} validation tokens, refills in {args.precision}, "
          f"{torch.get_num_threads()} threads")
    print("keep  refill every  decoded val loss  refill ms  refill µs a character")
    for k in args.keep:
        seconds = refill_seconds(fast, k) if k else 0.0
        print(f"{k:>4}  {T - k:>12}  {losses[k]:>16.4f}  {seconds * 1e3:>9.2f}  {seconds / (T - k) * 1e6:>21.1f}")


if __name__ == "__main__":
    main()
