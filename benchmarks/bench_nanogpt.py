"""gptiny's ten-minute CPU recipe against nanoGPT's own CPU recipe, side by side on this machine.

    python benchmarks/bench_nanogpt.py NANOGPT_DIR [--minutes 10] [--seed N] [--quick] [--skip-ours]

NANOGPT_DIR is a checkout of karpathy/nanoGPT (its ``train.py``, ``model.py``, ``configurator.py``,
``config/train_shakespeare_char.py`` and ``data/shakespeare_char/prepare.py``), kept outside this
repository; none of it is copied into gptiny. In a temporary copy of that folder (``train.py``
execs ``configurator.py`` and reads ``data/`` from its working directory) the script

1. runs nanoGPT's own ``prepare.py`` on the same Tiny Shakespeare file, offline (the file is put
   beside it, so it never downloads), and checks that the ids it wrote are exactly the ones
   ``gptiny prepare`` writes, train and validation: both score the same text with the same ids;
2. runs nanoGPT's ``train.py`` with the CPU command line of its README, flags read from the README
   itself, and reports its wall time;
3. runs it again with as many steps as fill ``--minutes`` (``max_iters`` and ``lr_decay_iters``
   from the first run's time per step and start-up, rounded down to a multiple of the config's
   ``eval_interval`` so its last steps are evaluated and can be saved), killed at ``--minutes``
   should it run slower than that (then scored on what it had saved; the table says "capped");
4. runs ``gptiny train configs/shakespeare-cpu.toml`` through the CLI (``bench_cpu_recipe.one_run``);
5. scores every result on the whole validation split, every token once, in consecutive windows of
   the model's own block size (``gptiny_cli.data.sequential_windows``, as ``full_split_loss``
   does): for nanoGPT the checkpoint its ``train.py`` saved (its best val estimate, as gptiny's
   figure is of its best weights), loaded with its own ``GPT`` class.

``--seed`` seeds both sides: gptiny's ``train.seed``, and the ``torch.manual_seed`` call of nanoGPT's
``train.py`` (which has no seed setting; its 1337 is shifted to N, nothing else changes). The table
gives each run's steps, wall time, whole-split val loss and how busy other processes kept the cores
meanwhile (near 0% for a figure to count). ``--quick`` runs a few steps of each: a check of the
script, not a result.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shlex
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

from bench_cpu_recipe import CORPUS, one_run, prepare  # noqa: E402
from otherload import OtherLoad  # noqa: E402

from gptiny_cli.data import load_corpus, sequential_windows  # noqa: E402
from gptiny_cli.hardware.device import cpu_class  # noqa: E402

CONFIG = "config/train_shakespeare_char.py"
README_COMMAND = f"python train.py {CONFIG} --device=cpu"
QUICK = ["--max_iters=20", "--lr_decay_iters=20", "--eval_interval=10", "--eval_iters=2"]
QUICK_MINUTES = 0.25
QUICK_OURS = ["train.max_minutes=0", "train.max_iters=20", "train.eval_interval=10", "train.eval_iters=2"]
# nanoGPT's train.py has no seed setting (torch.manual_seed(1337)): run unchanged, its seed moved to argv[1].
SEEDED_TRAIN = ("import runpy, sys, torch\n"
                "seed = int(sys.argv[1])\n"
                "sys.argv = ['train.py', *sys.argv[2:]]\n"
                "real = torch.manual_seed\n"
                "torch.manual_seed = lambda s: real(s - 1337 + seed)\n"
                "runpy.run_path('train.py', run_name='__main__')\n")
# prepare.py imports requests for its download; the corpus is already beside it, so it never calls it.
OFFLINE_PREPARE = ("import runpy, sys, types\n"
                   "sys.modules['requests'] = types.ModuleType('requests')\n"
                   "runpy.run_path('data/shakespeare_char/prepare.py', run_name='__main__')\n")


def readme_flags(nanogpt_dir: Path) -> list[str]:
    """The flags of the README's CPU command for Shakespeare-char, as that checkout's README gives them."""
    for line in (nanogpt_dir / "README.md").read_text(encoding="utf-8").splitlines():
        if line.strip().startswith(README_COMMAND):
            return shlex.split(line)[3:]
    raise SystemExit(f"{nanogpt_dir}/README.md has no line '{README_COMMAND} ...': is it a nanoGPT checkout?")


def config_value(work: Path, key: str, flags: list[str]) -> int:
    """An integer setting as train.py ends up with it: the last --key= flag, else the config file's."""
    for flag in reversed(flags):
        if flag.startswith(f"--{key}="):
            return int(flag.split("=", 1)[1])
    found = re.search(rf"^{key}\s*=\s*(\d+)", (work / CONFIG).read_text(), re.MULTILINE)
    if not found:
        raise SystemExit(f"{CONFIG} does not set {key}")
    return int(found.group(1))


def nanogpt_data(work: Path, corpus: Path, ours: Path) -> torch.Tensor:
    """nanoGPT's own prepare.py on the corpus; its validation ids, checked against gptiny's."""
    folder = work / "data" / "shakespeare_char"
    shutil.copyfile(corpus, folder / "input.txt")
    subprocess.run([sys.executable, "-c", OFFLINE_PREPARE], cwd=work, check=True, stdout=subprocess.DEVNULL)
    gptiny = load_corpus(ours)
    for split, mine in (("train", gptiny.train), ("val", gptiny.val)):
        theirs = np.fromfile(folder / f"{split}.bin", dtype="<u2")
        if not np.array_equal(theirs, mine.numpy()):
            raise SystemExit(f"nanoGPT's {split} ids differ from gptiny's: the two would not score the same text")
    return torch.from_numpy(np.fromfile(folder / "val.bin", dtype="<u2").astype(np.int64))


def run_nanogpt(work: Path, flags: list[str], out_dir: str, seed: int, cap_s: float | None) -> dict:
    """nanoGPT's train.py in ``work``, killed after ``cap_s`` seconds if it is still running then."""
    command = [sys.executable, "-c", SEEDED_TRAIN, str(seed), CONFIG, *flags, f"--out_dir={out_dir}"]
    log = work / f"{out_dir}.log"
    capped = False
    with open(log, "w") as out, OtherLoad() as load:
        start = time.perf_counter()
        try:
            done = subprocess.run(command, cwd=work, stdout=out, stderr=subprocess.STDOUT, timeout=cap_s)
        except subprocess.TimeoutExpired:
            capped, done = True, None
        wall = time.perf_counter() - start
    text = log.read_text()
    if done is not None and done.returncode:
        raise SystemExit(f"nanoGPT's train.py failed ({log}):\n{text[-3000:]}")
    iters = [(int(n), float(ms)) for n, ms in re.findall(r"^iter (\d+): .*?time ([\d.]+)ms", text, re.MULTILINE)]
    checkpoint = work / out_dir / "ckpt.pt"
    if not checkpoint.is_file():
        raise SystemExit(f"nanoGPT saved no checkpoint in {wall:.0f} s ({log}):\n{text[-3000:]}")
    loop_s = sum(ms for _, ms in iters) / 1000
    return {"wall_s": wall, "steps": iters[-1][0] if iters else 0, "capped": capped, "other_load": load.share,
            "loop_s": loop_s, "checkpoint": checkpoint}


def filled_steps(first: dict, budget_s: float, eval_interval: int) -> int:
    """The steps that fill ``budget_s`` at the first run's pace: its start-up, then its time per step."""
    start_up = first["wall_s"] - first["loop_s"]
    per_step = first["loop_s"] / max(1, first["steps"])
    steps = (budget_s - start_up) / per_step
    return max(eval_interval, int(steps // eval_interval) * eval_interval)


def nanogpt_loss(work: Path, checkpoint: Path, val: torch.Tensor) -> float:
    """The whole-split val loss of a checkpoint nanoGPT's train.py saved, with its own GPT class."""
    spec = importlib.util.spec_from_file_location("nanogpt_model", work / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)  # nanoGPT's own file, tensors only
    model = module.GPT(module.GPTConfig(**saved["model_args"]))
    model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in saved["model"].items()})
    model.eval()
    total, count = torch.zeros((), dtype=torch.float64), 0
    with torch.no_grad():
        for window in sequential_windows(val, 32, saved["model_args"]["block_size"]):
            x, y = window[:, :-1].contiguous(), window[:, 1:].contiguous()
            total += model(x, y)[1].double() * y.numel()
            count += y.numel()
    return total.item() / count


def nanogpt_rows(args: argparse.Namespace, work: Path, val: torch.Tensor, budget_s: float) -> list[dict]:
    readme = readme_flags(args.nanogpt_dir) + (QUICK if args.quick else [])
    first = run_nanogpt(work, readme, "out-readme", args.seed, None)
    first.update(name="nanoGPT", flags=readme, loss=nanogpt_loss(work, first["checkpoint"], val),
                 settings=f"its README's CPU line, max_iters {config_value(work, 'max_iters', readme):,}")
    steps = filled_steps(first, budget_s, config_value(work, "eval_interval", readme))
    filled = [*readme, f"--max_iters={steps}", f"--lr_decay_iters={steps}"]
    second = run_nanogpt(work, filled, "out-filled", args.seed, budget_s)
    capped = f", capped at {budget_s / 60:g} min" if second["capped"] else ""
    second.update(name="nanoGPT", flags=filled, loss=nanogpt_loss(work, second["checkpoint"], val),
                  settings=f"the same, max_iters {steps:,} to fill {budget_s / 60:g} min{capped}")
    return [first, second]


def ours_row(args: argparse.Namespace, data: Path, runs: Path, minutes: float) -> dict:
    config = HERE.parent / "configs" / "shakespeare-cpu.toml"
    overrides = QUICK_OURS if args.quick else [f"train.max_minutes={minutes:g}"]
    row = one_run(argparse.Namespace(config=config, overrides=overrides), "base", args.seed, data, runs)
    row.update(name="gptiny", steps=row["iters"], loss=row["final_val_loss"], flags=row["overrides"],
               settings=f"configs/shakespeare-cpu.toml, {row['dtype']}")
    return row


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("nanogpt_dir", type=Path, help="a checkout of karpathy/nanoGPT, outside this repository")
    parser.add_argument("--minutes", type=float, default=10.0, help="the budget both sides get")
    parser.add_argument("--seed", type=int, default=1337, help="both sides' seed (1337: each one's default)")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--quick", action="store_true", help="a few steps each: a check of the script")
    parser.add_argument("--skip-ours", action="store_true", help="nanoGPT's two runs only")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    args.nanogpt_dir = args.nanogpt_dir.resolve()
    minutes = QUICK_MINUTES if args.quick else args.minutes
    with tempfile.TemporaryDirectory() as tmp:
        work, data = Path(tmp) / "nanogpt", Path(tmp) / "data"
        shutil.copytree(args.nanogpt_dir, work, ignore=shutil.ignore_patterns(".git", "assets", "*.ipynb"))
        prepare(args.corpus, data)
        val = nanogpt_data(work, args.corpus, data)
        rows = nanogpt_rows(args, work, val, minutes * 60)
        if not args.skip_ours:
            rows.append(ours_row(args, data, Path(tmp) / "runs", minutes))
    print(f"CPU class {cpu_class()}, {torch.get_num_threads()} threads, torch {torch.__version__}, seed {args.seed}"
          + (" (--quick: a check of the script, not a result)" if args.quick else ""))
    print("| implementation | settings | steps | wall | whole-split val loss | other load |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['name']} | {row['settings']} | {row['steps']:,} | {row['wall_s']:.0f} s | {row['loss']:.4f} | "
              f"{row['other_load']:.0%} |")
    for row in rows:
        print(f"{row['name']}, {row['settings']}: {' '.join(row['flags'])}")


if __name__ == "__main__":
    main()
