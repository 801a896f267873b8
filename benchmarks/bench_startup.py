"""Start-up time: how long `gptiny --help`, each command's --help and `gptiny runs` take, end to end.

    python benchmarks/bench_startup.py [--repeats 15] [--limit 0.5]

Each command line runs in a fresh process (the installed `gptiny` script beside this Python)
`--repeats` times; the table gives the fastest and the median wall time. Other processes can
only make a run slower, so the fastest is the closest to the tool's own cost. Exits 1 when a
median is over `--limit` seconds (the target of issue #7 is 0.5 s).
"""

from __future__ import annotations

import argparse
import platform
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


def wall_times(argv: list[str], repeats: int, cwd: str) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--limit", type=float, default=0.5)
    args = parser.parse_args()
    gptiny = str(Path(sys.executable).parent / "gptiny")
    print(f"machine: {cpu_name()}, {platform.system()}, Python {platform.python_version()}")
    print(f"{'command':<24} {'fastest':>8} {'median':>8}")
    slow = []
    with tempfile.TemporaryDirectory() as empty:  # `gptiny runs` there lists nothing: start-up alone
        for extra in COMMANDS:
            times = wall_times([gptiny, *extra], args.repeats, empty)
            median = statistics.median(times)
            print(f"{'gptiny ' + ' '.join(extra):<24} {min(times):>7.3f}s {median:>7.3f}s")
            if median > args.limit:
                slow.append(" ".join(extra))
    baseline = wall_times([sys.executable, "-c", "import torch"], 5, ".")
    print(f"{'(python -c import torch)':<24} {min(baseline):>7.3f}s {statistics.median(baseline):>7.3f}s")
    if slow:
        sys.exit(f"over {args.limit} s: {', '.join(slow)}")


if __name__ == "__main__":
    main()
