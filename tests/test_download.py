"""``gptiny prepare`` from an http(s) URL, against a real HTTP server on 127.0.0.1 that the test starts."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gptiny_cli.cli import app
from gptiny_cli.errors import GptinyError
from gptiny_cli.prepare import download
from tests.conftest import TINY_TEXT

runner = CliRunner()
TEXT = TINY_TEXT.encode("utf-8")

# path -> (status, content type, body, whether to send Content-Length)
PAGES = {
    "/data/tiny.txt": (200, "text/plain; charset=utf-8", TEXT, True),
    "/streamed.txt": (200, "text/plain", TEXT, False),
    "/page.html": (200, "text/html; charset=utf-8", b"<html><body>hello</body></html>", True),
    "/blob.bin": (200, "application/octet-stream", bytes(range(256)) * 4, True),
    "/latin1.txt": (200, "text/plain", "caf\xe9 au lait\n".encode("latin-1"), True),
}


class Handler(BaseHTTPRequestHandler):
    timeout = 5  # a stuck client cannot hold the test's server

    def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
        status, kind, body, with_length = PAGES.get(self.path, (404, "text/plain", b"not found", True))
        self.send_response(status)
        self.send_header("Content-Type", kind)
        if with_length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    """A real HTTP server on a free local port, shut down when the test ends."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def closed_port_url() -> str:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = httpd.server_address[1]
    httpd.server_close()  # nothing listens there any more
    return f"http://127.0.0.1:{port}/input.txt"


def test_prepare_downloads_a_url_then_prepares_it(server):
    result = runner.invoke(app, ["prepare", f"{server}/data/tiny.txt"])
    assert result.exit_code == 0, result.output
    assert Path("tiny.txt").read_bytes() == TEXT
    assert (Path("data") / "tiny" / "meta.json").is_file()
    assert "saved tiny.txt" in result.stderr


def test_prepare_without_input_downloads_tiny_shakespeare_into_input_txt(server, monkeypatch):
    monkeypatch.setattr(download, "TINY_SHAKESPEARE_URL", f"{server}/data/tiny.txt")
    result = runner.invoke(app, ["prepare"])
    assert result.exit_code == 0, result.output
    assert Path("input.txt").read_bytes() == TEXT
    assert (Path("data") / "input" / "meta.json").is_file()  # data.path's default


def test_prepare_without_input_reuses_an_input_txt_already_there(monkeypatch):
    monkeypatch.setattr(download, "TINY_SHAKESPEARE_URL", closed_port_url())
    Path("input.txt").write_text(TINY_TEXT, encoding="utf-8")
    result = runner.invoke(app, ["prepare"])
    assert result.exit_code == 0, result.output
    assert "preparing the existing input.txt" in result.stderr


def test_progress_is_reported_up_to_the_full_size(server):
    seen: list[tuple[int, int | None]] = []
    download.download(f"{server}/data/tiny.txt", Path("t.txt"), progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (len(TEXT), len(TEXT))
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


def test_a_file_over_the_cap_is_refused_from_its_length_and_nothing_is_written(server):
    result = runner.invoke(app, ["prepare", f"{server}/data/tiny.txt", "--max-mb", "0.001"])
    assert result.exit_code == 1 and "over the 0.0 MiB cap; raise it with --max-mb" in result.stderr
    assert not Path("tiny.txt").exists() and not Path("data").exists()


def test_a_stream_without_length_is_cut_off_at_the_cap(server):
    with pytest.raises(GptinyError, match="over the .* cap"):
        download.download(f"{server}/streamed.txt", Path("s.txt"), max_bytes=1000)
    assert not Path("s.txt").exists()


def test_a_stream_without_length_under_the_cap_downloads_whole(server):
    download.download(f"{server}/streamed.txt", Path("s.txt"))
    assert Path("s.txt").read_bytes() == TEXT


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/page.html", "is a web page (text/html), not a plain text corpus"),
        ("/blob.bin", "is binary, not text"),
        ("/latin1.txt", "is not UTF-8 text: invalid byte 0xe9 at offset 3"),
        ("/missing.txt", "answered HTTP 404"),
    ],
)
def test_what_is_not_a_text_corpus_is_refused_in_one_line(server, path, message):
    result = runner.invoke(app, ["prepare", f"{server}{path}"])
    assert result.exit_code == 1
    downloading, error = result.stderr.strip().splitlines()
    assert downloading.startswith("downloading") and error.startswith("error:") and message in error
    assert not Path(Path(path).name).exists()


def test_an_unreachable_server_is_reported():
    result = runner.invoke(app, ["prepare", closed_port_url()])
    assert result.exit_code == 1 and "cannot reach" in result.stderr


def test_a_download_never_overwrites_a_local_file(server):
    Path("tiny.txt").write_text("mine\n", encoding="utf-8")
    result = runner.invoke(app, ["prepare", f"{server}/data/tiny.txt"])
    assert result.exit_code == 1 and "tiny.txt already exists" in result.stderr
    assert Path("tiny.txt").read_text(encoding="utf-8") == "mine\n"


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://example.org/a/b/input.txt", "input.txt"),
        ("https://example.org/corpus%20one.txt?raw=1", "corpus one.txt"),
        ("https://example.org/", "download.txt"),
        ("https://example.org/..", "download.txt"),
    ],
)
def test_the_local_file_is_named_after_the_url(url, name):
    assert download.file_name_of(url) == name
