"""How the C library hands memory to a CPU training run.

A training step allocates and frees the same large tensors every time. glibc's malloc gives
blocks above 128 KiB their own fresh pages from the kernel (mmap) and hands them back when they
are freed, so each step faults in and zero-fills every activation again: on the reference config
about 180,000 page faults and a tenth of the step's CPU time (benchmarks/README.md). Keeping
freed memory in the process instead lets the next step reuse it. The process then holds on to
its peak memory until it ends, which a training process needs again at every step anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

# mallopt's parameter numbers, from glibc's malloc.h: never trim the heap, never mmap a block.
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


@functools.cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt  # noqa: B018 - musl and others have no mallopt
    except (OSError, AttributeError):
        return None
    return libc


def keep_freed_memory() -> bool:
    """Let glibc keep freed memory for reuse, for the rest of the process.

    Returns whether the setting took effect: False where the C library is not glibc.
    """
    libc = _libc()
    if libc is None:
        return False
    return all(libc.mallopt(param, value) == 1 for param, value in ((_M_TRIM_THRESHOLD, 2**31 - 1), (_M_MMAP_MAX, 0)))
