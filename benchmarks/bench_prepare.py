"""Preparation speed and memory: streaming ``gptiny prepare`` against the one-shot version it replaced.

    python benchmarks/bench_prepare.py [--mb 10 100 1000] [--alphabet ascii unicode] [--old-max-mb 100]

For each size it builds a synthetic corpus on disk: ``ascii`` is Tiny Shakespeare's lines,
shuffled (seeded) and repeated up to the size; ``unicode`` is words drawn from an alphabet of
about 3,000 characters (Latin, Greek, Cyrillic, CJK), mostly 2 to 3 bytes each in UTF-8. Each
preparation runs in a fresh process, and its peak resident memory is that process's own
(``os.wait4``), so one measurement never inflates the next. ``old`` is the algorithm before
streaming (commit 7e63811: the whole text in memory, encoded to a Python list), copied below as
the baseline; it is skipped above ``--old-max-mb``, where it needs many GB. Both must write the
same bytes, which the table checks. Targets: at least 50 MB/s for ASCII on one core, and a 1 GB
corpus within 4 GB of peak memory.
"""

from __future__ import annotations

import argparse
import array
import filecmp
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
MB = 10**6


# ---- the baseline: the preparation of commit 7e63811 (gptiny_cli/prepare/corpus.py), essentials only ----
def old_prepare(source: Path, out: Path, val_fraction: float = 0.1) -> None:
    """Read the whole file, sorted(set(text)) as vocabulary, a Python list of ids, array.array to bytes."""
    text = source.read_bytes().decode("utf-8")
    n_train = int(len(text) * (1.0 - val_fraction))
    chars = sorted(set(text))
    index = {ch: i for i, ch in enumerate(chars)}
    tokens = [index[ch] for ch in text]
    code = "H" if len(chars) <= 2**16 else "i"
    out.mkdir(parents=True)
    (out / "train.bin").write_bytes(array.array(code, tokens[:n_train]).tobytes())
    (out / "val.bin").write_bytes(array.array(code, tokens[n_train:]).tobytes())
    (out / "vocab.json").write_text(json.dumps({"chars": chars}))
# ---- end of the baseline ----


def _child(which: str, source: Path, out: Path) -> None:
    """One preparation in this (fresh) process; prints its wall time, imports excluded."""
    sys.path.insert(0, str(ROOT))
    # Both import the package, which brings torch (the old version did too): the same memory floor.
    from gptiny_cli.prepare.corpus import prepare_corpus

    start = time.perf_counter()
    if which == "old":
        old_prepare(source, out)
    else:
        prepare_corpus(source, out)
    print(time.perf_counter() - start)


def _write_ascii(path: Path, size: int, seed: int, corpus: Path) -> None:
    lines = corpus.read_text(encoding="utf-8").splitlines(keepends=True)
    rng = random.Random(seed)
    written = 0
    with open(path, "w", encoding="utf-8") as file:
        while written < size:
            rng.shuffle(lines)
            block = "".join(lines)[: size - written]
            file.write(block)
            written += len(block)


def _alphabet() -> np.ndarray:
    ranges = [(0x41, 0x5B), (0x61, 0x7B), (0xC0, 0x180), (0x391, 0x3CA), (0x410, 0x450), (0x4E00, 0x5600)]
    return np.concatenate([np.arange(a, b) for a, b in ranges]).astype(np.uint32)


def _write_unicode(path: Path, size: int, seed: int, corpus: Path) -> None:
    rng = np.random.default_rng(seed)
    alphabet, written = _alphabet(), 0
    with open(path, "wb") as file:
        while written < size:
            # Zipf-like choice, so some characters are common and many rare, as in real text.
            points = alphabet[np.minimum(rng.zipf(1.3, 2**20), len(alphabet)) - 1]
            breaks = rng.random(len(points))
            points[breaks < 0.15] = ord(" ")
            points[breaks > 0.985] = ord("\n")
            data = points.astype("<u4").tobytes().decode("utf-32-le").encode("utf-8")[: size - written]
            data = data.decode("utf-8", errors="ignore").encode("utf-8")  # never cut a character in two
            file.write(data)
            written += len(data)


def _measure(which: str, source: Path, out: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one preparation in a fresh process."""
    proc = subprocess.Popen([sys.executable, __file__, "--child", which, str(source), str(out)],
                            stdout=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = proc.stdout.read()
    proc.stdout.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{which} preparation of {source} failed with status {proc.returncode}")
    return float(seconds), usage.ru_maxrss * 1024 / MB  # Linux reports kilobytes


def _same(a: Path, b: Path) -> bool:
    return all(filecmp.cmp(a / name, b / name, shallow=False) for name in ("train.bin", "val.bin"))


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        _child(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, nargs="+", default=[10.0], help="corpus sizes in MB (10^6 bytes)")
    parser.add_argument("--alphabet", nargs="+", choices=("ascii", "unicode"), default=["ascii", "unicode"])
    parser.add_argument("--old-max-mb", type=float, default=100.0, help="run the old algorithm up to this size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="Tiny Shakespeare, for the ascii corpus")
    args = parser.parse_args()
    print(f"{'corpus':>8} {'MB':>7} {'impl':>4} {'seconds':>8} {'MB/s':>7} {'peak RSS MB':>11}  same bytes")
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:  # on a real disk, as data/ would be
        for alphabet in args.alphabet:
            for mb in args.mb:
                source = Path(tmp) / f"{alphabet}-{mb:g}.txt"
                (_write_ascii if alphabet == "ascii" else _write_unicode)(source, int(mb * MB), args.seed, args.corpus)
                size = source.stat().st_size / MB
                impls = ["new"] + (["old"] if mb <= args.old_max_mb else [])
                for which in impls:
                    seconds, rss = _measure(which, source, Path(tmp) / f"{which}-{alphabet}-{mb:g}")
                    same = _same(Path(tmp) / f"new-{alphabet}-{mb:g}", Path(tmp) / f"old-{alphabet}-{mb:g}") \
                        if which == "old" else ""
                    print(f"{alphabet:>8} {size:7.1f} {which:>4} {seconds:8.2f} {size / seconds:7.1f} {rss:11.0f}  "
                          f"{same}", flush=True)
                source.unlink()
                for which in impls:
                    shutil.rmtree(Path(tmp) / f"{which}-{alphabet}-{mb:g}")


if __name__ == "__main__":
    main()
