"""Start-up time: how long `gptiny --help`, each command's --help and `gptiny runs` take, end to end.

    python benchmarks/bench_startup.py [--repeats 15] [--limit 0.5]

Each command line runs in a fresh process (the installed `gptiny` script beside this Python)
`--repeats` times; the table gives the fastest and the median wall time and the median CPU
time (user + system). Other processes can only make a run slower, so the fastest wall time is
the closest to the tool's own cost, and CPU time barely depends on them. Exits 1 when a median
wall time is over `--limit` seconds (the target of issue #7 is 0.5 s).
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = [["--help"], *([name, "--help"] for name in ("prepare", "train", "sample", "inspect", "runs", "plot",
                                                         "eval")), ["runs"]]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timings(argv: list[str], repeats: int, cwd: str) -> tuple[list[float], list[float]]:
    """Wall seconds and CPU seconds (user + system) of each of ``repeats`` runs."""
    walls, cpus = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return walls, cpus


def row(label: str, walls: list[float], cpus: list[float]) -> str:
    return (f"{label:<24} {min(walls):>7.3f}s {statistics.median(walls):>7.3f}s "
            f"{statistics.median(cpus):>7.3f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--limit", type=float, default=0.5)
    args = parser.parse_args()
    gptiny = str(Path(sys.executable).parent / "gptiny")
    print(f"machine: {cpu_name()}, {platform.system()}, Python {platform.python_version()}")
    print(f"{'command':<24} {'fastest':>8} {'median':>8} {'CPU':>8}   (wall: fastest, median; CPU: median)")
    slow = []
    with tempfile.TemporaryDirectory() as empty:  # `gptiny runs` there lists nothing: start-up alone
        for extra in COMMANDS:
            walls, cpus = timings([gptiny, *extra], args.repeats, empty)
            print(row("gptiny " + " ".join(extra), walls, cpus))
            if statistics.median(walls) > args.limit:
                slow.append(" ".join(extra))
    print(row("(python -c import torch)", *timings([sys.executable, "-c", "import torch"], 5, ".")))
    if slow:
        sys.exit(f"over {args.limit} s: {', '.join(slow)}")


if __name__ == "__main__":
    main()
