"""gptiny's ten-minute CPU recipe against nanoGPT's own CPU recipe, side by side on this machine.

    python benchmarks/bench_nanogpt.py NANOGPT_DIR [--minutes 10] [--quick]

NANOGPT_DIR is a checkout of karpathy/nanoGPT (its ``train.py``, ``model.py``, ``configurator.py``
and ``config/train_shakespeare_char.py``), kept outside this repository. In a temporary
directory the script

1. writes Tiny Shakespeare in nanoGPT's format (``data/shakespeare_char``: uint16 ``train.bin`` and
   ``val.bin``, the first 90% and the last 10% of the characters, and the ``meta.pkl`` its
   ``train.py`` reads the vocabulary size from), and checks that its validation ids are exactly
   the ones ``gptiny prepare`` writes: both score the same text with the same ids;
2. runs nanoGPT's ``train.py`` with the CPU settings of its README (``README_CPU``), then again
   with as many steps as fill ``--minutes`` (scaled from the first run's time per step);
3. runs ``gptiny train configs/shakespeare-cpu.toml`` through the CLI;
4. scores every result on the whole validation split in windows of its own block size, every
   token once (``gptiny_cli.data.sequential_batches``, as ``gptiny eval`` does); for nanoGPT that
   is the checkpoint its ``train.py`` saved (its best estimate), loaded with its own ``GPT`` class.

It prints a table: implementation, steps, wall time, whole-split val loss, and how busy other
processes kept the cores meanwhile (near 0% for a figure to count). ``--quick`` runs a few steps
of each, a check of the script itself.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench_cpu_recipe import prepare, train_to_end  # noqa: E402
from otherload import OtherLoad  # noqa: E402

from gptiny_cli.data import sequential_batches  # noqa: E402
from gptiny_cli.hardware.device import cpu_class  # noqa: E402

CORPUS = HERE.parent.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
# nanoGPT's README: "python train.py config/train_shakespeare_char.py --device=cpu ..." for a CPU.
README_CPU = ["--device=cpu", "--compile=False", "--eval_iters=20", "--log_interval=1", "--block_size=64",
              "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128", "--max_iters=2000",
              "--lr_decay_iters=2000", "--dropout=0.0"]


def nanogpt_data(text: str, out: Path) -> np.ndarray:
    """Tiny Shakespeare as nanoGPT's data/shakespeare_char/prepare.py lays it out; returns the val ids."""
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    ids = np.array([stoi[c] for c in text], dtype=np.uint16)
    cut = int(len(text) * 0.9)
    out.mkdir(parents=True, exist_ok=True)
    ids[:cut].tofile(out / "train.bin")
    ids[cut:].tofile(out / "val.bin")
    # nanoGPT's train.py reads the vocabulary size from this pickle: its format, not ours.
    with open(out / "meta.pkl", "wb") as handle:
        pickle.dump({"vocab_size": len(chars), "stoi": stoi, "itos": dict(enumerate(chars))}, handle)
    return ids[cut:]


def run_nanogpt(work: Path, flags: list[str], out_dir: str) -> dict:
    """nanoGPT's train.py in ``work`` (it execs configurator.py from the working directory)."""
    command = [sys.executable, "train.py", "config/train_shakespeare_char.py", *flags, f"--out_dir={out_dir}"]
    with OtherLoad() as load:
        start = time.perf_counter()
        done = subprocess.run(command, cwd=work, capture_output=True, text=True)
        wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"nanoGPT's train.py failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    steps = [int(m) for m in re.findall(r"^iter (\d+):", done.stdout, re.MULTILINE)]
    return {"wall_s": wall, "steps": max(steps) if steps else 0, "other_load": load.share,
            "checkpoint": work / out_dir / "ckpt.pt"}


def nanogpt_loss(nanogpt_dir: Path, checkpoint: Path, val: torch.Tensor) -> float:
    """The whole-split val loss of a checkpoint nanoGPT's train.py saved, with its own GPT class."""
    spec = importlib.util.spec_from_file_location("nanogpt_model", nanogpt_dir / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)  # nanoGPT's own file
    model = module.GPT(module.GPTConfig(**saved["model_args"]))
    model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in saved["model"].items()})
    block_size = saved["model_args"]["block_size"]
    return whole_split(lambda x, y: model(x.contiguous(), y.contiguous())[1], val, block_size, model)


def whole_split(loss_of, val: torch.Tensor, block_size: int, model: torch.nn.Module) -> float:
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in sequential_batches(val, 32, block_size):
            total += loss_of(x, y).double().item() * y.numel()
            count += y.numel()
    return total / count


def ours(config: Path, data: Path, runs: Path, overrides: list[str]) -> dict:
    with OtherLoad() as load:
        wall, run_dir = train_to_end(config, data, runs, overrides, quiet=True)
    info = json.loads((run_dir / "run.json").read_text())
    return {"wall_s": wall, "steps": info["iters"], "other_load": load.share, "loss": info["final_val_loss"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("nanogpt_dir", type=Path)
    parser.add_argument("--minutes", type=float, default=10.0, help="the budget both sides get")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--quick", action="store_true", help="a few steps each: a check of the script")
    parser.add_argument("--skip-ours", action="store_true",
                        help="nanoGPT only (gptiny's figure from bench_cpu_recipe.py on the same class)")
    args = parser.parse_args()
    text = args.corpus.read_text(encoding="utf-8")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "nanogpt"
        shutil.copytree(args.nanogpt_dir, work, ignore=shutil.ignore_patterns(".git", "assets", "*.ipynb"))
        val_ids = nanogpt_data(text, work / "data" / "shakespeare_char")
        prepare(args.corpus, Path(tmp) / "data")
        ours_val = np.fromfile(Path(tmp) / "data" / "val.bin", dtype="<u2")
        if not np.array_equal(val_ids, ours_val):
            raise SystemExit("nanoGPT's validation ids differ from gptiny's: the two would score different text")
        val = torch.from_numpy(val_ids.astype(np.int64))
        readme = README_CPU + (["--max_iters=20", "--lr_decay_iters=20", "--eval_interval=10", "--eval_iters=2"]
                               if args.quick else [])
        first = run_nanogpt(work, readme, "out-readme")
        rows.append(("nanoGPT, its README's CPU settings", first, nanogpt_loss(work, first["checkpoint"], val)))
        steps = max(1, math.floor(first["steps"] * args.minutes * 60 / first["wall_s"]))
        if args.quick:
            steps = 30
        filled = run_nanogpt(work, [*readme, f"--max_iters={steps}", f"--lr_decay_iters={steps}"], "out-filled")
        rows.append((f"nanoGPT, the same for {steps:,} steps", filled, nanogpt_loss(work, filled["checkpoint"], val)))
        if not args.skip_ours:
            overrides = [f"train.max_minutes={0.5 if args.quick else args.minutes}"]
            mine = ours(HERE.parent / "configs" / "shakespeare-cpu.toml", Path(tmp) / "data", Path(tmp) / "runs",
                        overrides)
            rows.append(("gptiny, configs/shakespeare-cpu.toml", mine, mine["loss"]))
    print(f"CPU class {cpu_class()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print("| implementation | steps | wall | whole-split val loss | other load |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, row, loss in rows:
        print(f"| {label} | {row['steps']:,} | {row['wall_s']:.0f} s | {loss:.4f} | {row['other_load']:.0%} |")


if __name__ == "__main__":
    main()
