"""Keep or drop: each architecture option against the classic model, at the same number of steps.

    python benchmarks/bench_options.py [--config configs/shakespeare-cpu.toml] [--iters 500]
                                       [--only NAME ...] [--set KEY=VALUE ...]

Every variant changes one key of the config and trains to the end of a shortened schedule
(cosine decay over --iters steps, one evaluation at the end) with the real CLI in a subprocess,
one after another, never side by side: two trainings sharing two cores would time each other.
The table gives the whole-split validation loss of the best weights and the median of the
logged training throughput. "classic, seed 2" repeats the classic model with another
seed, so that the gap between the two classic rows shows how much a difference has to exceed
to mean anything.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from bench_cpu_recipe import CORPUS, ROOT, cpu_name, prepare, train_to_end

# The classic choices are the config's own (the seed's model); each variant moves one key.
# RMSNorm, GELU, squared ReLU, SwiGLU and bias-free layers were measured here too and dropped
# (benchmarks/README.md); commit d62afc7 still has them.
VARIANTS: dict[str, list[str]] = {
    "classic": [],
    "classic, seed 2": ["train.seed=2"],
    "rope": ["model.position=rope"],
    "tied embedding and head": ["model.tie_weights=true"],
}


def median_tokens_per_sec(metrics: Path) -> float:
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    return statistics.median(r["tokens_per_sec"] for r in records if "tokens_per_sec" in r)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "shakespeare-cpu.toml")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--iters", type=int, default=500)
    parser.add_argument("--only", action="append", choices=list(VARIANTS), help="variants to run (default: all)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="applied to every variant")
    args = parser.parse_args()
    schedule = [f"train.max_iters={args.iters}", f"train.eval_interval={args.iters}", "train.eval_iters=20",
                "train.max_minutes=0"]  # counted in steps, as measured
    print(f"machine: {cpu_name()}; config {args.config.name}, {args.iters} steps {' '.join(args.overrides)}")
    print(f"{'variant':<26} {'parameters':>10} {'val loss':>9} {'tokens/s':>9} {'wall':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        prepare(args.corpus, data)
        for name in args.only or list(VARIANTS):
            overrides = [*schedule, *args.overrides, *VARIANTS[name]]
            wall, run_dir = train_to_end(args.config, data, Path(tmp) / "runs", overrides, quiet=True)
            info = json.loads((run_dir / "run.json").read_text())
            tokens = median_tokens_per_sec(run_dir / "metrics.jsonl")
            print(f"{name:<26} {info['parameters']:>10,} {info['final_val_loss']:>9.4f} "
                  f"{tokens:>9,.0f} {wall:>5.0f}s", flush=True)


if __name__ == "__main__":
    main()
