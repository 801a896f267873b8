"""One training process per run: a second ``train --resume`` of a run in progress is refused.

The lock is an advisory ``flock`` on ``<run>/.lock``, which the kernel releases when the
process ends, however it ends, so a killed run never stays locked. Where ``fcntl`` does not
exist (Windows) runs are not locked.
"""

from __future__ import annotations

import os
from pathlib import Path

from gptiny_cli.errors import GptinyError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_FILE = ".lock"


class RunLock:
    """Held from setup or resume until the training loop ends."""

    def __init__(self, run_dir: Path) -> None:
        self._fd: int | None = None
        path = Path(run_dir) / LOCK_FILE
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise GptinyError(f"cannot write to {run_dir}: {err.strerror}") from None
        if fcntl is None:
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.release()
            raise GptinyError(
                f"{run_dir} is being trained by another process; wait for it to finish or stop it first"
            ) from None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # A session dropped without training (in a notebook, say) must not keep its run locked.
    __del__ = release
