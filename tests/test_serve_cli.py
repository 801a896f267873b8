"""``gptiny serve`` on the command line: what it prints at start, its warnings, the missing extra."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
from typer.testing import CliRunner

from gptiny_cli.cli import app
from gptiny_cli.cli.serve import open_host_warning
from tests.conftest import cli_env
from tests.training import train_tiny, train_tiny_bpe


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def health(server: subprocess.Popen, port: int) -> dict:
    """/health's answer, once the server listens (it prints its URLs just before)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health").json()
        except httpx.ConnectError:
            assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()
            time.sleep(0.05)


def test_serve_prints_its_urls_and_answers_there_with_the_key_from_the_environment(data_dir):
    run_dir, port = train_tiny(data_dir), free_port()
    server = subprocess.Popen([sys.executable, "-m", "gptiny_cli", "serve", str(run_dir), "--port", str(port),
                               "--device", "cpu", "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**cli_env(), "GPTINY_API_KEY": "from-env"})
    try:
        lines = [server.stdout.readline() for _ in range(3)]
        assert lines[0].strip().endswith("on cpu, int8, 1 threads")
        assert lines[1].strip() == f"playground: http://127.0.0.1:{port}/"
        assert lines[2].strip() == f"API docs:   http://127.0.0.1:{port}/docs"
        state = health(server, port)
        assert state["model"] == run_dir.name
        assert (state["device"], state["precision"], state["threads"]) == ("cpu", "int8", 1)
        models = f"http://127.0.0.1:{port}/v1/models"
        assert httpx.get(models).status_code == 401
        assert httpx.get(models, headers={"Authorization": "Bearer from-env"}).status_code == 200
        assert "access-control-allow-origin" not in httpx.get(f"http://127.0.0.1:{port}/health",
                                                              headers={"Origin": "http://elsewhere"}).headers
    finally:
        server.terminate()
        server.wait(10)


def test_serve_on_a_bpe_run_completes_a_cjk_and_emoji_prompt_in_tokens(tmp_path):
    run_dir, port = train_tiny_bpe(root=tmp_path), free_port()
    server = subprocess.Popen([sys.executable, "-m", "gptiny_cli", "serve", str(run_dir), "--port", str(port),
                               "--device", "cpu", "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=cli_env())
    try:
        assert health(server, port)["tokenizer"] == "bpe"
        body = {"prompt": "BOB: 你好 🙂", "max_tokens": 12, "seed": 1}
        result = httpx.post(f"http://127.0.0.1:{port}/v1/completions", json=body, timeout=30).json()
        assert result["usage"]["completion_tokens"] == 12 and result["choices"][0]["finish_reason"] == "length"
    finally:
        server.terminate()
        server.wait(10)


def test_a_port_in_use_is_one_line_error_before_the_run_is_loaded():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["serve", "no-such-run", "--port", str(port)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr


def test_a_port_out_of_range_is_refused():
    result = CliRunner().invoke(app, ["serve", "latest", "--port", "99999"])
    assert result.exit_code == 1 and "--port 99999 is invalid" in result.stderr


def test_listening_beyond_this_machine_without_a_key_is_warned_of():
    assert "without an API key" in open_host_warning("0.0.0.0", None)
    assert open_host_warning("0.0.0.0", "s3cret") is None and open_host_warning("127.0.0.1", None) is None


def test_without_fastapi_serve_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    result = CliRunner().invoke(app, ["serve", "latest"])
    assert result.exit_code == 1 and "pip install 'gptiny[serve]'" in result.stderr
