"""Crash-safe file writes: a temporary file beside the target, fsync, rename, fsync the directory.

The temporary file lives in the target's own directory because a rename across
filesystems (say, from /tmp) is not atomic and can fail outright.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gptiny_cli.errors import GptinyError


def fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories; the rename still happened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_with(path: Path, writer: Callable[[Path], None]) -> None:
    """Have ``writer`` fill a temporary path, then move it onto ``path`` atomically."""
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer(tmp)
        tmp.chmod(0o666 & ~current_umask())  # mkstemp makes it private; give it a normal file's mode
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_bytes(path: Path, data: bytes) -> None:
    write_with(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def cannot_write(target: Path, option: str, err: OSError) -> GptinyError:
    """The one-line error for an output path that cannot be written; it names a file in the way."""
    in_the_way = next((p for p in Path(target).parents if p.exists()), None)
    if in_the_way is not None and not in_the_way.is_dir():
        return GptinyError(f"{option} {target}: {in_the_way} is a file, not a directory")
    return GptinyError(f"{option} {target}: cannot write there ({err.strerror or err})")


def staging_dir(target: Path, option: str = "--out") -> Path:
    """A fresh, empty directory beside ``target`` (its parents created) to fill and then swap in
    with ``replace_dir``; a target that cannot be written there is an error naming ``option``."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.new-", dir=target.parent))
    except OSError as err:
        raise cannot_write(target, option, err) from None
    staging.chmod(0o777 & ~current_umask())  # mkdtemp makes it private; give it a normal directory's mode
    return staging


def replace_dir(staging: Path, target: Path) -> None:
    """Swap a finished staging directory into place; a crash leaves the old or the new, never half.

    The staging directory must sit beside ``target`` (the same filesystem), so each step is a rename.
    """
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(target)
    fsync_dir(target.parent)
