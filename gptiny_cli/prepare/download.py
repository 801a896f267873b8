"""Fetching a corpus over http(s) for ``gptiny prepare``: size-capped, checked to be text, written atomically.

Only the standard library (urllib): a download is one GET, not worth a dependency.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from gptiny_cli.errors import GptinyError
from gptiny_cli.store import atomic

TINY_SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
DEFAULT_MAX_BYTES = 100 * 2**20
CHUNK = 64 * 1024
TIMEOUT_S = 30

Progress = Callable[[int, int | None], None]  # (bytes so far, total bytes if the server said)


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def corpus_source(spec: str | None) -> tuple[str | None, Path]:
    """What ``gptiny prepare INPUT`` reads: (a URL to download first, or None; the local text file).

    No INPUT means Tiny Shakespeare in ./input.txt, downloaded unless a previous call already did.
    """
    if spec is None:
        path = Path("input.txt")
        return (None if path.exists() else TINY_SHAKESPEARE_URL), path
    if is_url(spec):
        return spec, Path(file_name_of(spec))
    return None, Path(spec)


def file_name_of(url: str) -> str:
    """The last path segment of a URL, as a safe local file name (``download.txt`` when it has none)."""
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    return name if name and name not in (".", "..") and not name.startswith(".") else "download.txt"


def check_text(data: bytes, url: str) -> None:
    """Refuse what is not a UTF-8 text corpus: empty, binary (NUL bytes) or not UTF-8."""
    if not data:
        raise GptinyError(f"{url} returned no data")
    if b"\x00" in data:
        raise GptinyError(f"{url} is binary, not text (it contains NUL bytes)")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise GptinyError(f"{url} is not UTF-8 text: invalid byte 0x{data[err.start]:02x} at offset {err.start}") \
            from None


def _open(url: str, max_bytes: int):
    request = urllib.request.Request(url, headers={"User-Agent": "gptiny"})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as err:
        raise GptinyError(f"download failed: {url} answered HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise GptinyError(f"download failed: cannot reach {url} ({reason})") from None
    kind = response.headers.get_content_type()
    if kind == "text/html":
        response.close()
        raise GptinyError(f"{url} is a web page (text/html), not a plain text corpus; link the raw file instead")
    length = response.headers.get("Content-Length")
    total = int(length) if length and length.isdigit() else None
    if total is not None and total > max_bytes:
        response.close()
        raise GptinyError(f"{url} is {total / 2**20:.1f} MiB, over the {max_bytes / 2**20:.1f} MiB cap; "
                          "raise it with --max-mb")
    return response, total


def fetch(url: str, max_bytes: int = DEFAULT_MAX_BYTES, progress: Progress | None = None) -> bytes:
    """The body of ``url``, at most ``max_bytes`` of it, checked to be UTF-8 text."""
    response, total = _open(url, max_bytes)
    chunks, size = [], 0
    with response:
        while True:
            try:
                chunk = response.read(CHUNK)
            except OSError as err:
                raise GptinyError(f"download of {url} broke off after {size:,} bytes: {err}") from None
            if not chunk:
                break
            size += len(chunk)
            if size > max_bytes:
                raise GptinyError(f"{url} is over the {max_bytes / 2**20:.1f} MiB cap; raise it with --max-mb")
            chunks.append(chunk)
            if progress:
                progress(size, total)
    if total is not None and size != total:
        raise GptinyError(f"download of {url} ended early: {size:,} of {total:,} bytes")
    data = b"".join(chunks)
    check_text(data, url)
    return data


def download(url: str, dest: Path, max_bytes: int = DEFAULT_MAX_BYTES, progress: Progress | None = None) -> Path:
    """Save a text corpus at ``dest`` (written atomically; refuses to overwrite a file)."""
    dest = Path(dest)
    if dest.exists():
        raise GptinyError(f"{dest} already exists; prepare it directly (gptiny prepare {dest}) or remove it")
    data = fetch(url, max_bytes, progress)
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(dest, data)
    return dest
