"""How busy other processes kept the machine's cores while a benchmark ran.

A figure measured while something else ran is not a figure of this code: benchmarks print the
share beside their results, and only figures taken near 0% go into benchmarks/README.md.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path


class OtherLoad:
    """``with OtherLoad() as load: ...`` then ``load.share``: the cores' busy time that was not ours
    (this process and its children), as a share of all the cores' time meanwhile."""

    def __enter__(self) -> OtherLoad:
        self.start = self._busy_and_own()
        return self

    def __exit__(self, *exc: object) -> None:
        (busy0, own0, t0), (busy1, own1, t1) = self.start, self._busy_and_own()
        self.share = max(0.0, (busy1 - busy0) - (own1 - own0)) / ((t1 - t0) * (os.cpu_count() or 1))

    @staticmethod
    def _busy_and_own() -> tuple[float, float, float]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        busy = (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
        me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        own = me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime
        return busy, own, time.monotonic()
