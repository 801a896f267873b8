"""Ctrl-C and SIGTERM as a request to stop at the next step boundary, not a crash mid-write."""

from __future__ import annotations

import signal
import threading
from types import FrameType


class GracefulStop:
    """While active, the first SIGINT/SIGTERM sets a flag; a second one interrupts at once.

    The training loop polls ``requested`` between steps, saves and returns. A checkpoint only
    replaces the previous one once it is complete, so even the immediate second interrupt,
    which may land in the middle of a save, cannot damage the last one.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        again = self.signum is not None
        self.signum = signum
        if again:
            raise KeyboardInterrupt

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
