"""Characters against byte-level BPE of several sizes, on the same text, model and time, in bits per character.

    python benchmarks/bench_tokenizers.py [--vocab char --vocab 256 ...] [--seed N ...] [--minutes M]
                                          [--set KEY=VALUE ...] [--keep DIR] [--plot FILE] [--json FILE]

Tiny Shakespeare is prepared once per tokenizer with the real CLI (``gptiny prepare``, BPE
learnt on the training split), then ``configs/shakespeare-cpu.toml`` trains on each with its
time budget (``--minutes`` overrides it), one run after another, never side by side. The model
is the same for every tokenizer: its block is 128 *tokens*, which spans more characters the
larger the vocabulary, and its embedding and head grow with the vocabulary (both are in the
table, as the parameter count and the characters per token). Each run prints one JSON line;
the summary gives the whole-split val loss per token and in bits per character and per byte,
mean ± std over the seeds, the one unit in which the tokenizers compare.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_cpu_recipe import CORPUS, ROOT, cpu_class, cpu_name, train_to_end
from otherload import OtherLoad

DEFAULT_VOCABS = ["char", "256", "512", "1024", "2048"]


def prepare(corpus: Path, out: Path, vocab: str) -> float:
    """Prepare ``corpus`` into ``out`` with characters or a BPE of ``vocab`` tokens; the seconds it took."""
    extra = [] if vocab == "char" else ["--tokenizer", "bpe", "--vocab-size", vocab]
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gptiny_cli", "prepare", str(corpus), "--out", str(out), *extra],
                   check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    return time.perf_counter() - start


def one_run(args: argparse.Namespace, vocab: str, seed: int, data: Path, runs: Path) -> dict:
    overrides = [*args.overrides, f"train.seed={seed}"]
    if args.minutes:
        overrides.append(f"train.max_minutes={args.minutes}")
    with OtherLoad() as load:
        wall, run_dir = train_to_end(args.config, data, runs, overrides, quiet=True)
    info = json.loads((run_dir / "run.json").read_text())
    text, loss = info["val_text"], info["final_val_loss"]
    bits = loss * text["tokens"] / math.log(2)
    return {"vocab": vocab, "seed": seed, "final_val_loss": loss, "bits_per_char": bits / text["chars"],
            "bits_per_byte": bits / text["bytes"], "chars_per_token": text["chars"] / text["tokens"],
            "iters": info["iters"], "parameters": info["parameters"], "vocab_size": info["vocab_size"],
            "wall_s": round(wall, 1), "dtype": info["dtype"], "cpu_class": cpu_class(),
            "other_load": round(load.share, 3), "run": str(run_dir)}


def summary(rows: list[dict]) -> list[str]:
    def spread(values: list[float]) -> str:
        return f"{statistics.mean(values):.4f}" + (f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else "")

    lines = ["| tokenizer | vocab | parameters | chars/token | steps | val loss/token | bits/char | bits/byte |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for vocab in dict.fromkeys(r["vocab"] for r in rows):
        mine = [r for r in rows if r["vocab"] == vocab]
        name = "characters" if vocab == "char" else f"BPE {vocab}"
        lines.append(f"| {name} | {mine[0]['vocab_size']:,} | {mine[0]['parameters']:,} "
                     f"| {mine[0]['chars_per_token']:.2f} | {round(statistics.mean(r['iters'] for r in mine)):,} "
                     f"| {spread([r['final_val_loss'] for r in mine])} | {spread([r['bits_per_char'] for r in mine])} "
                     f"| {spread([r['bits_per_byte'] for r in mine])} |")
    return lines


def plot(rows: list[dict], target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vocabs = list(dict.fromkeys(r["vocab"] for r in rows))
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for i, vocab in enumerate(vocabs):
        values = [r["bits_per_char"] for r in rows if r["vocab"] == vocab]
        ax.bar(i, statistics.mean(values), color="#4c72b0" if vocab != "char" else "#dd8452")
        ax.plot([i] * len(values), values, "k.", markersize=6)
    ax.set_xticks(range(len(vocabs)), ["characters" if v == "char" else f"BPE {v}" for v in vocabs])
    ax.set_ylabel("whole-split val bits per character")
    low = min(r["bits_per_char"] for r in rows)
    ax.set_ylim(low - 0.15, max(r["bits_per_char"] for r in rows) + 0.05)
    ax.set_title("Same text, model and time budget: lower is better", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(target, dpi=100)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "shakespeare-cpu.toml")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--vocab", action="append", help=f"char or a BPE size; repeat (default {DEFAULT_VOCABS})")
    parser.add_argument("--seed", type=int, action="append", help="train.seed; repeat (default 1337 and 1338)")
    parser.add_argument("--minutes", type=float, help="train.max_minutes for every run (default: the config's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="applied to every run")
    parser.add_argument("--keep", type=Path, help="keep the data and runs here (default: a temporary directory)")
    parser.add_argument("--plot", type=Path, help="draw bits per character per tokenizer into this image")
    parser.add_argument("--json", type=Path, help="write every run's row to this file")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    vocabs, seeds, rows = args.vocab or DEFAULT_VOCABS, args.seed or [1337, 1338], []
    print(f"machine: {cpu_name()}; config {args.config.name} {' '.join(args.overrides)}"
          f"{f', {args.minutes} minutes' if args.minutes else ''}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        where = args.keep or Path(tmp)
        for vocab in vocabs:
            data = where / f"data-{vocab}"
            seconds = prepare(args.corpus, data, vocab) if not (data / "meta.json").is_file() else 0.0
            print(f"prepared {vocab} in {seconds:.1f} s", file=sys.stderr)
            for seed in seeds:
                rows.append(one_run(args, vocab, seed, data, where / "runs"))
                print(json.dumps(rows[-1]), flush=True)
    print("\n".join(summary(rows)), file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
