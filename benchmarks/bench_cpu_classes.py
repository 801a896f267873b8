"""Every CPU class this machine can pass for, measured one after another, in one table.

    python benchmarks/bench_cpu_classes.py [--class native --class avx512 --class avx2] [--recipe-seed N ...]
                                           [--quick]

torch can be held to an older class of CPU than the chip's: ``ATEN_CPU_CAPABILITY`` limits its
vectorised kernels and ``ONEDNN_MAX_CPU_ISA`` its matmuls (oneDNN), and gptiny's automatic
choices follow (docs/devices.md). Under each class this runs, in fresh processes:

- ``bench_train.py`` on the reference config: gptiny's step against the plain seed model;
- ``bench_train.py --skip-seed`` on ``shakespeare-cpu.toml``: tokens/s and MFU of the recipe's step;
- ``bench_sample.py``: int8 decoding at batch 1 and the whole ``gptiny sample --tokens 500`` command;
- with ``--recipe-seed``, ``bench_cpu_recipe.py``: the ten-minute recipe's whole-split val loss.

A class the chip lacks cannot be emulated and is skipped. Run it on an idle machine: each line
of the table also says how busy other processes kept the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.otherload import OtherLoad  # noqa: E402
from gptiny_cli.hardware.device import cpu_class  # noqa: E402

# The variables that make torch compute as each class (an empty dict: the chip as it is).
CLASSES: dict[str, dict[str, str]] = {
    "native": {},
    "avx512": {"ATEN_CPU_CAPABILITY": "avx512", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
}
RANK = {"default": 0, "avx2": 1, "avx512": 2, "avx512-bf16": 3}


def run(script: str, args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, str(HERE / script), *args], capture_output=True, text=True,
                          env={**_base_env(), **env}, cwd=HERE)
    if done.returncode:
        raise SystemExit(f"{script} {' '.join(args)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done.stdout + done.stderr


def _base_env() -> dict[str, str]:
    held = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
    return {k: v for k, v in os.environ.items() if k not in held}


def find(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    return match.group(1) if match else "?"


def measure(env: dict[str, str], quick: bool, seeds: list[int]) -> dict[str, str]:
    """Every figure of the table for one class."""
    reference = run("bench_train.py", ["--steps", "2", "--rounds", "1"] if quick else ["--steps", "3", "--rounds", "3"],
                    env)
    recipe_step = run("bench_train.py", ["--config", str(HERE.parent / "configs" / "shakespeare-cpu.toml"),
                                         "--skip-seed", "--steps", "3" if quick else "10"], env)
    sample = run("bench_sample.py", ["--rounds", "1" if quick else "3", "--repeats", "2" if quick else "5"], env)
    row = {
        "reference vs seed": find(r"median ([\d.]+x)", reference),
        "cpu config tok/s (MFU)": find(r"gptiny\s+\S+\s+[\d.]+ s/step \(best round\)\s+([\d,]+ tok/s\s+MFU\s+[\d.]+%)",
                                       recipe_step).replace(" tok/s  MFU ", " ("),
        "int8 chars/s": find(r"batch 1: KV cache, int8\s+([\d,]+)", sample),
        "sample --tokens 500": find(r"--tokens 500 : fastest ([\d.]+ s)", sample),
    }
    row["cpu config tok/s (MFU)"] += ")" if row["cpu config tok/s (MFU)"] != "?" else ""
    losses = []
    for seed in seeds:
        out = run("bench_cpu_recipe.py", ["--seed", str(seed)], env)
        losses.append(json.loads(next(line for line in out.splitlines() if line.startswith("{")))["final_val_loss"])
    if losses:
        row["recipe val"] = ", ".join(f"{x:.4f}" for x in losses)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--class", dest="classes", action="append", choices=list(CLASSES))
    parser.add_argument("--recipe-seed", type=int, action="append", default=[],
                        help="also train the ten-minute recipe with this seed (10 minutes each)")
    parser.add_argument("--quick", action="store_true", help="fewer steps and rounds: a check of the script")
    args = parser.parse_args()
    native = cpu_class()
    rows = []
    for name in args.classes or list(CLASSES):
        if name != "native" and RANK[name] >= RANK[native]:
            print(f"{name}: skipped, this chip computes as {native}", file=sys.stderr)
            continue
        env = CLASSES[name]
        with OtherLoad() as load:
            row = measure(env, args.quick, args.recipe_seed)
        label = native if name == "native" else f"{name} (emulated)"
        rows.append({"class": label, **row, "other load": f"{load.share:.0%}"})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    columns = list(rows[0]) if rows else []
    print("| " + " | ".join(columns) + " |")
    print("| " + " | ".join("---" if c == "class" else "---:" for c in columns) + " |")
    for row in rows:
        print("| " + " | ".join(row.get(c, "") for c in columns) + " |")


if __name__ == "__main__":
    main()
